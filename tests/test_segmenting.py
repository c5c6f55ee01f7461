import numpy as np
import pytest

from tasks.audio.segmenting import FlagLedger, Segmenter


def run(segmenter: Segmenter, x: np.ndarray, block: int):
    out = []
    for i in range(0, len(x), block):
        out.extend(segmenter.push(x[i : i + block]))
    out.extend(segmenter.finish())
    return out


@pytest.mark.parametrize("block", [1, 7, 100, 1000, 10_000])
def test_segments_are_exact_slices_whatever_the_block_size(block):
    x = np.arange(2_550, dtype=np.float32)
    segments = run(Segmenter(1000, 1000, "pad"), x, block)
    assert [s.start for s in segments] == [0, 1000, 2000]
    assert [s.valid for s in segments] == [1000, 1000, 550]
    for s in segments:
        np.testing.assert_array_equal(s.audio[: s.valid], x[s.start : s.start + s.valid])
    assert np.all(segments[-1].audio[550:] == 0)


def test_overlapping_hop_and_final_partial():
    x = np.arange(2_300, dtype=np.float32)
    segments = run(Segmenter(1000, 500, "pad"), x, 333)
    assert [s.start for s in segments] == [0, 500, 1000, 1500]
    assert [s.valid for s in segments] == [1000, 1000, 1000, 800]
    assert [s.index for s in segments] == [0, 1, 2, 3]


def test_no_partial_when_the_last_full_segment_reaches_the_end():
    segments = run(Segmenter(1000, 500, "pad"), np.ones(2000, np.float32), 128)
    assert [(s.start, s.valid) for s in segments] == [(0, 1000), (500, 1000), (1000, 1000)]


def test_drop_final_and_short_stream():
    assert [s.valid for s in run(Segmenter(1000, 1000, "drop"), np.ones(2500, np.float32), 64)] == [1000, 1000]
    assert run(Segmenter(1000, 1000, "drop"), np.ones(10, np.float32), 64) == []
    short = run(Segmenter(1000, 1000, "pad"), np.ones(10, np.float32), 64)
    assert [(s.start, s.valid) for s in short] == [(0, 10)]


def test_hop_longer_than_segment_skips_samples():
    x = np.arange(5000, dtype=np.float32)
    segments = run(Segmenter(1000, 1500, "pad"), x, 211)
    assert [s.start for s in segments] == [0, 1500, 3000, 4500]
    for s in segments:
        np.testing.assert_array_equal(s.audio[: s.valid], x[s.start : s.start + s.valid])


def test_flags_are_counted_in_the_segment_that_holds_them():
    seg = Segmenter(100, 100, "pad")
    counts = np.zeros(250, np.int32)
    counts[[5, 150, 151, 240]] = [1, 2, 1, 3]
    out = list(seg.push(np.zeros(250, np.float32), nonfinite=(0, counts))) + list(seg.finish())
    assert [s.nonfinite for s in out] == [1, 3, 3]


def test_ledger_sums_spans_and_forgets():
    ledger = FlagLedger()
    ledger.add((10, np.array([1, 1, 1], np.int32)))
    ledger.add((100, np.array([5], np.int32)))
    assert ledger.count(0, 11) == 1
    assert ledger.count(0, 1000) == 8
    ledger.forget_before(50)
    assert ledger.count(0, 1000) == 5
