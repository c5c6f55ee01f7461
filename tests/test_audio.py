from pathlib import Path

import numpy as np
import pytest
from signals import dominant_frequency, noise, sweep, tone, write

from tasks.audio.decode import MIX, ChannelPolicy, ReadReport, StreamResampler, probe, stream_audio
from tasks.audio.failures import IngestFailure


def read_all(path: Path, policy="mix", out_rate=16000, block_seconds=0.37):
    info = probe(path)
    report = ReadReport()
    streams: dict[int, list[np.ndarray]] = {}
    for blocks in stream_audio(path, info, ChannelPolicy(policy), out_rate, report, block_seconds=block_seconds):
        for b in blocks:
            streams.setdefault(b.stream_id, []).append(b.samples)
    return {k: np.concatenate(v) for k, v in streams.items()}, report


@pytest.mark.parametrize("in_rate", [2000, 44100, 44150, 96000, 384000])
def test_resampled_tone_keeps_frequency_level_and_length(tmp_path, in_rate):
    freq = min(440.0, in_rate / 4)
    path = write(tmp_path / "tone.wav", tone(freq, 3.0, in_rate, amplitude=0.5), in_rate, "FLOAT")
    streams, _ = read_all(path, out_rate=16000)
    y = streams[MIX]
    assert abs(len(y) - 3.0 * 16000) <= 1  # no drift: exactly the duration at the new rate
    assert abs(dominant_frequency(y, 16000) - freq) < 1.0
    core = y[2000:-2000]
    assert np.sqrt(np.mean(core**2)) == pytest.approx(0.5 / np.sqrt(2), rel=2e-3)


def test_streamed_resampling_has_no_seams_at_block_boundaries(tmp_path):
    rate = 48000
    x = sweep(100, 7000, 4.0, rate, amplitude=0.6)
    path = write(tmp_path / "sweep.wav", x, rate, "FLOAT")
    streamed = np.concatenate([read_all(path, block_seconds=bs)[0][MIX] for bs in [0.0913]])
    one_shot = StreamResampler(rate, 16000).push(x, last=True)
    assert len(streamed) == len(one_shot)
    np.testing.assert_allclose(streamed, one_shot, atol=1e-5)


def test_channel_policies(tmp_path):
    rate = 16000
    left, right = tone(300, 2.0, rate, 0.4), tone(1200, 2.0, rate, 0.2)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), rate, "FLOAT")
    mixed, _ = read_all(path, "mix")
    np.testing.assert_allclose(mixed[MIX], (left + right) / 2, atol=1e-6)
    every, _ = read_all(path, "all")
    assert sorted(every) == [0, 1]
    np.testing.assert_allclose(every[0], left, atol=1e-6)
    np.testing.assert_allclose(every[1], right, atol=1e-6)
    second, _ = read_all(path, "1")
    np.testing.assert_allclose(second[1], right, atol=1e-6)
    with pytest.raises(IngestFailure, match="channel 2 requested but the file has 2"):
        read_all(path, "2")


def test_quiet_24bit_and_loud_float_keep_their_dynamic_range(tmp_path):
    rate = 16000
    quiet = tone(500, 1.0, rate, amplitude=10 ** (-110 / 20))  # -110 dBFS peak: below a 16-bit floor
    path = write(tmp_path / "quiet.wav", quiet, rate, "PCM_24")
    y = read_all(path)[0][MIX]
    assert np.max(np.abs(y)) == pytest.approx(10 ** (-110 / 20), rel=0.02)
    loud = tone(500, 1.0, rate, amplitude=4.0)  # float files may exceed full scale
    path = write(tmp_path / "loud.wav", loud, rate, "FLOAT")
    y = read_all(path)[0][MIX]
    assert np.max(np.abs(y)) == pytest.approx(4.0, rel=1e-4)


def test_float_beyond_full_scale_is_not_called_clipped_but_float_at_full_scale_is(tmp_path):
    rate = 16000
    loud = tone(500, 1.0, rate, amplitude=1e6)  # an unnormalised float file: nothing was clipped
    _, report = read_all(write(tmp_path / "loud.wav", loud, rate, "FLOAT"))
    assert report.clipped == 0 and report.over_full_scale > 0.9 * rate and report.peak == pytest.approx(1e6, rel=1e-4)
    flat = np.clip(tone(500, 1.0, rate, amplitude=2.0), -1.0, 1.0)  # float converted from clipped PCM
    _, report = read_all(write(tmp_path / "flat.wav", flat, rate, "FLOAT"))
    assert report.clipped > 0.5 * rate and report.over_full_scale == 0
    _, report = read_all(write(tmp_path / "pcm.wav", flat, rate, "PCM_16"))  # integer PCM: clipped as before
    assert report.clipped > 0.5 * rate


def test_nonfinite_samples_are_zeroed_and_counted(tmp_path):
    rate = 16000
    x = noise(2.0, rate)
    x[100:110] = np.nan
    x[20000] = np.inf
    path = write(tmp_path / "nan.wav", x, rate, "FLOAT")
    y, report = read_all(path)
    assert np.isfinite(y[MIX]).all()
    assert report.nonfinite == 11


def test_probe_reports_format_facts(tmp_path):
    path = write(tmp_path / "a.flac", noise(1.5, 22050), 22050, "PCM_24")
    info = probe(path)
    assert (info.format, info.subtype, info.sample_rate, info.channels, info.frames) == ("FLAC", "PCM_24", 22050, 1, 33075)


def test_truncated_data_is_read_as_far_as_it_goes(tmp_path):
    path = write(tmp_path / "t.wav", noise(2.0, 16000), 16000, "PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    y, report = read_all(path)
    assert 15000 < len(y[MIX]) < 17000
    assert report.warnings and "truncated" in report.warnings[0]


def test_flac_cut_short_keeps_what_decodes(tmp_path):
    path = write(tmp_path / "cut.flac", noise(4.0, 16000), 16000, "PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    y, report = read_all(path)
    assert 0 < len(y[MIX]) < 4 * 16000
    assert any(w.startswith("truncated") for w in report.warnings)
