"""The plain ingest functions, without Prefect: formats, rates, memory."""

import tracemalloc

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from signals import dominant_frequency, tone, write

from schemas.settings import IngestSettings
from tasks.ingest.discovery import SourceFile, content_hash, discover
from tasks.ingest.recording import prepare_recording


def prepare(path, workspace, **options):
    stat = path.stat()
    settings = IngestSettings(sources=[str(path)], workspace=str(workspace.root), **options)
    return prepare_recording(SourceFile(path, stat.st_size, stat.st_mtime_ns), content_hash(path), settings,
                             workspace.create())


@pytest.mark.parametrize("name, subtype, fmt, rate", [
    ("a.wav", "PCM_16", None, 48000), ("b.wav", "PCM_24", None, 96000), ("c.wav", "PCM_32", None, 8000),
    ("d.wav", "FLOAT", None, 22050), ("e.flac", "PCM_24", None, 44100), ("f.ogg", "VORBIS", None, 32000),
    ("g.aiff", "PCM_16", None, 11025), ("h.mp3", "MPEG_LAYER_III", "MP3", 44100), ("i.wav", "PCM_16", None, 200),
])
def test_formats_and_rates(tmp_path, workspace, name, subtype, fmt, rate):
    freq = min(1000.0, rate / 8)
    path = write(tmp_path / name, tone(freq, 4.0, rate, 0.4), rate, subtype, fmt)
    staged = prepare(path, workspace, segment_seconds=2.0)
    assert staged.sample_rate == rate and staged.subtype == subtype
    assert staged.duration_s == pytest.approx(4.0, abs=0.06)  # MP3 frames pad the end slightly
    table = pq.read_table(staged.staged_file)
    assert table.num_rows == 2 + (staged.duration_s > 4.0)
    audio = np.asarray(table.column("audio")[0].as_py(), np.float32)
    assert dominant_frequency(audio, 16000) == pytest.approx(freq, abs=1.0)


def test_a_long_96k_file_is_streamed_in_bounded_memory(tmp_path, workspace):
    rate, minutes = 96000, 8
    path = tmp_path / "long.wav"
    with sf.SoundFile(str(path), "w", rate, 1, "PCM_16") as out:
        for second in range(minutes * 60):
            out.write(tone(3000, 1.0, rate, 0.2, phase=second))
    whole_file_as_float = minutes * 60 * rate * 4  # 184 MB
    tracemalloc.start()
    staged = prepare(path, workspace)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert staged.segment_count == minutes * 6
    assert peak < whole_file_as_float / 4, f"peak {peak / 1e6:.0f} MB"


def test_discovery_expands_folders_globs_and_reports_missing(tmp_path):
    write(tmp_path / "a" / "x.wav", tone(100, 0.1, 8000), 8000, "PCM_16")
    write(tmp_path / "a" / "deep" / "y (2).FLAC", tone(100, 0.1, 8000), 8000, "PCM_16")
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    found = discover([str(tmp_path / "a"), str(tmp_path / "a" / "**" / "*.FLAC"), str(tmp_path / "gone.wav")])
    assert [f.path.name for f in found.files] == ["y (2).FLAC", "x.wav"]
    assert [(p.stage, p.reason) for p in found.problems] == [("discover", "no such file or folder")]


def test_the_first_failure_is_the_first_in_discovery_order_not_the_first_recorded():
    from tasks.ingest.plan import IngestCounts

    counts = IngestCounts(failures=[("/d/z_unreadable.wav", "fingerprint", "permission denied"),
                                    ("/d/b_empty.wav", "probe", "empty file (0 bytes)")])
    assert counts.first_failure() == ("/d/b_empty.wav", "probe", "empty file (0 bytes)")
    assert IngestCounts().first_failure() is None
