"""The ingest flow on the real Prefect engine: synthetic signals for exact checks, bad inputs,
idempotency, and every real recording in the shared data set."""

import csv
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from signals import dominant_frequency, noise, sweep, tone, write

from flows.ingest import IngestRunFailed, ingest
from schemas.settings import IngestSettings
from tasks.catalog import recordings
from tasks.workspace import database
from tasks.workspace.database import WorkspaceError

pytestmark = pytest.mark.usefixtures("prefect_server")


def run(workspace, *sources, **options):
    return ingest(IngestSettings(sources=[str(s) for s in sources], workspace=str(workspace.root), **options))


def query(workspace, sql, params=None):
    with database.reading(workspace) as conn:
        return conn.execute(sql, params or []).fetchall()


def dataset_segment_ids(workspace) -> list[str]:
    ids = []
    for file in sorted(workspace.segments_dir.rglob("*.parquet")):
        ids.extend(pq.read_table(file, columns=["segment_id"]).column(0).to_pylist())
    return ids


def test_segments_offsets_levels_and_samples_are_exact(tmp_path, workspace):
    rate = 44100
    left, right = tone(1000, 25.0, rate, 0.5), tone(1000, 25.0, rate, 0.5)
    src = write(tmp_path / "rec" / "5783.210315120000.wav", np.stack([left, right], 1), rate, "PCM_24")
    result = run(workspace, src, site="LK")
    assert (result.ingested, result.failed, result.segments_added) == (1, 0, 3)
    rows = query(workspace, "SELECT segment_index, start_s, end_s, valid_s, start_time, rms_dbfs, channel, date "
                            "FROM segments ORDER BY segment_index")
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [(0, 0.0, 10.0, 10.0), (1, 10.0, 20.0, 10.0), (2, 20.0, 30.0, 5.0)]
    assert str(rows[1][4]).startswith("2021-03-15 12:00:10")  # SoundTrap name + offset
    assert all(r[6] == -1 and r[7] == "2021-03-15" for r in rows)
    assert rows[0][5] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.05)
    rec = query(workspace, "SELECT sample_rate, channels, subtype, start_time_source, site, duration_s FROM recordings")[0]
    assert rec[:5] == (44100, 2, "PCM_24", "soundtrap", "LK") and rec[5] == pytest.approx(25.0)
    audio = query(workspace, "SELECT audio FROM segment_audio ORDER BY segment_index")
    assert len(audio) == 3 and all(len(a[0]) == 160000 for a in audio)
    third = np.array(audio[2][0], np.float32)
    assert np.all(third[80000:] == 0)  # padding after the 5 s of real audio
    assert dominant_frequency(third[:80000], 16000) == pytest.approx(1000, abs=1)
    files = list(workspace.segments_dir.rglob("*.parquet"))
    assert [f.relative_to(workspace.segments_dir).parts[:2] for f in files] == [("site=LK", "date=2021-03-15")]


def test_rerun_adds_nothing_and_new_files_are_ingested_alone(tmp_path, workspace):
    folder = tmp_path / "rec"
    for i in range(3):
        write(folder / f"n{i}.flac", noise(3.0, 8000, seed=i), 8000, "PCM_16")
    first = run(workspace, folder)
    assert first.ingested == 3
    before = query(workspace, "SELECT count(*) FROM segments")[0][0]
    again = run(workspace, folder)
    assert (again.ingested, again.skipped, again.segments_added) == (0, 3, 0)
    write(folder / "sub" / "new.wav", sweep(100, 3000, 12.0, 8000), 8000, "PCM_16")
    third = run(workspace, folder)
    assert (third.ingested, third.skipped) == (1, 3)
    assert query(workspace, "SELECT count(*) FROM segments")[0][0] == before + 2
    ids = dataset_segment_ids(workspace)
    assert len(ids) == len(set(ids)) == query(workspace, "SELECT count(*) FROM segments")[0][0]


def test_same_audio_under_another_name_is_a_duplicate(tmp_path, workspace):
    src = write(tmp_path / "a" / "orig.wav", noise(2.0, 16000), 16000, "PCM_16")
    run(workspace, src)
    copy = tmp_path / "b" / "renamed copy (1).wav"
    copy.parent.mkdir()
    shutil.copy(src, copy)
    twin = tmp_path / "b" / "twin.wav"
    shutil.copy(src, twin)
    result = run(workspace, tmp_path / "b")
    assert (result.ingested, result.duplicates) == (0, 2)
    assert query(workspace, "SELECT count(*) FROM recordings")[0][0] == 1
    assert query(workspace, "SELECT count(*) FROM source_files WHERE status = 'duplicate'")[0][0] == 2


def make_bad_inputs(folder: Path) -> dict[str, str]:
    """Bad files of every kind, with the words their error must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("these are field notes, not audio\n" * 20)
    good = write(folder / "tmp.wav", noise(1.0, 16000), 16000, "PCM_16").read_bytes()
    (folder / "tmp.wav").unlink()
    (folder / "cut header.wav").write_bytes(good[:30])
    corrupt = bytearray(good)
    corrupt[8:16] = b"XXXXXXXX"  # RIFF type and fmt chunk id destroyed
    (folder / "corrupt.wav").write_bytes(bytes(corrupt))
    (folder / "phone memo.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 100)
    return {
        "empty.wav": "empty (0 bytes)",
        "notes.wav": "not a readable audio file",
        "cut header.wav": "not a readable audio file",
        "corrupt.wav": "not a readable audio file",
        "phone memo.m4a": "unsupported format '.m4a'",
    }


def test_bad_files_are_reported_and_the_run_goes_on(tmp_path, workspace):
    folder = tmp_path / "mixed"
    expected = make_bad_inputs(folder)
    write(folder / "good.wav", tone(440, 3.0, 16000), 16000, "PCM_16")
    nan = noise(12.0, 16000)
    nan[20000:20100] = np.nan
    nan[170000] = np.inf
    write(folder / "nan.wav", nan, 16000, "FLOAT")
    result = run(workspace, folder)
    assert (result.ingested, result.failed) == (2, len(expected))
    errors = {Path(p).name: (stage, reason) for p, stage, reason in
              query(workspace, "SELECT path, stage, reason FROM ingest_errors WHERE severity = 'error'")}
    assert set(errors) == set(expected)
    for name, words in expected.items():
        assert words in errors[name][1], (name, errors[name])
    flagged = query(workspace, "SELECT segment_index, nonfinite_count FROM segments_with_recordings "
                               "WHERE file_name = 'nan.wav' ORDER BY segment_index")
    assert flagged == [(0, 100), (1, 1)]
    warning = query(workspace, "SELECT reason FROM ingest_errors WHERE severity = 'warning'")[0][0]
    assert "101 non-finite samples" in warning
    # the same bad files again: still one row each, nothing duplicated
    run(workspace, folder)
    assert query(workspace, "SELECT count(*) FROM ingest_errors WHERE severity = 'error'")[0][0] == len(expected)
    # a file that is fixed is ingested and its error row goes away
    write(folder / "empty.wav", tone(440, 2.0, 16000, 0.3), 16000, "PCM_16")
    run(workspace, folder)
    assert query(workspace, "SELECT count(*) FROM ingest_errors WHERE path LIKE '%empty.wav'")[0][0] == 0


def test_strict_fails_the_run_and_keeps_what_was_committed(tmp_path, workspace):
    folder = tmp_path / "strict"
    write(folder / "a_good.wav", tone(440, 2.0, 16000), 16000, "PCM_16")
    (folder / "b_empty.wav").write_bytes(b"")
    with pytest.raises(IngestRunFailed, match="b_empty.wav"):
        run(workspace, folder, strict=True, workers=1)
    assert query(workspace, "SELECT file_name FROM recordings") == [("a_good.wav",)]


def test_missing_sources_and_empty_globs_are_reported(tmp_path, workspace):
    result = run(workspace, tmp_path / "nowhere.wav", str(tmp_path / "*.flac"))
    reasons = sorted(r for _, _, r in result.failures)
    assert reasons == ["glob pattern matches no files", "no such file or folder"]


def test_every_channel_as_its_own_stream(tmp_path, workspace):
    rate = 16000
    stereo = np.stack([tone(300, 4.0, rate, 0.5), tone(2000, 4.0, rate, 0.05)], 1)
    run(workspace, write(tmp_path / "st.wav", stereo, rate, "FLOAT"), channels="all")
    rows = query(workspace, "SELECT channel, round(rms_dbfs) FROM segments ORDER BY channel")
    assert rows == [(0, round(20 * np.log10(0.5 / np.sqrt(2)))), (1, round(20 * np.log10(0.05 / np.sqrt(2))))]


def test_dataset_settings_are_fixed_per_workspace(tmp_path, workspace):
    src = write(tmp_path / "x.wav", noise(1.0, 16000), 16000, "PCM_16")
    run(workspace, src)
    other = write(tmp_path / "y.wav", noise(1.0, 16000, seed=3), 16000, "PCM_16")
    with pytest.raises(WorkspaceError, match="sample_rate: workspace has 16000, asked for 8000"):
        run(workspace, other, sample_rate=8000)


def test_dataset_settings_are_recorded_whole_and_a_partial_record_is_completed(workspace):
    """A run killed while recording the dataset settings once left some keys (the kill-in-every-stage
    test met it: KeyError on the next run). They are now written in one transaction, and a partial
    record from before is completed rather than refused."""
    wanted = {"sample_rate": "16000", "segment_seconds": "2.0", "hop_seconds": "2.0", "final_segment": "pad"}
    workspace.create()
    with database.writing(workspace) as conn:
        database.apply_schema(conn, workspace)
        with pytest.raises(duckdb.ConstraintException):  # the last row fails: none of them stays
            recordings.ensure_dataset_config(conn, {**wanted, "final_segment": None})
        assert recordings.dataset_config(conn) == {}
        with pytest.raises(RuntimeError), database.transaction(conn):  # inside a caller's transaction: its fate
            database.insert(conn, "workspace_config", [{"key": k, "value": v} for k, v in wanted.items()])
            raise RuntimeError("the caller's block fails after the insert")
        assert recordings.dataset_config(conn) == {}
        database.insert(conn, "workspace_config", [{"key": "sample_rate", "value": "16000"}])  # as a kill left it
        recordings.ensure_dataset_config(conn, wanted)
        assert recordings.dataset_config(conn) == wanted
        with pytest.raises(WorkspaceError, match="segment_seconds: workspace has 2.0, asked for 5.0"):
            recordings.ensure_dataset_config(conn, {**wanted, "segment_seconds": "5.0"})


def test_labels_for_recordings_and_events(tmp_path, workspace):
    folder = tmp_path / "lab"
    write(folder / "calls" / "a.wav", tone(500, 30.0, 8000), 8000, "PCM_16")
    write(folder / "quiet" / "b.wav", noise(5.0, 8000), 8000, "PCM_16")
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["file", "start_s", "end_s", "species", "call_type"])
        w.writerow(["calls/a.wav", "", "", "orca", ""])
        w.writerow(["calls/a.wav", "12", "18", "", "S01"])  # inside segment 1 only
        w.writerow(["b.wav", "", "", "none", "ambient"])
        w.writerow(["missing.wav", "", "", "orca", ""])
    run(workspace, folder, labels=str(labels))
    rows = query(workspace, """SELECT r.file_name, s.segment_index, sl.label_column, sl.label_value
                               FROM segment_labels sl JOIN segments s USING (segment_id)
                               JOIN recordings r ON r.recording_id = s.recording_id
                               ORDER BY 1, 2, 3, 4""")
    assert rows == [("a.wav", 0, "species", "orca"), ("a.wav", 1, "call_type", "S01"), ("a.wav", 1, "species", "orca"),
                    ("a.wav", 2, "species", "orca"), ("b.wav", 0, "call_type", "ambient"), ("b.wav", 0, "species", "none")]
    run(workspace, folder, labels=str(labels))  # again: labels replaced, not duplicated
    assert query(workspace, "SELECT count(*) FROM labels")[0][0] == 4


def test_a_file_left_between_rename_and_commit_is_invisible_and_replaced(tmp_path, workspace, monkeypatch):
    src = write(tmp_path / "r" / "one.wav", noise(12.0, 16000), 16000, "PCM_16")
    monkeypatch.setattr(recordings, "commit_recording", _commit_that_dies_after_publish(recordings.commit_recording))
    with pytest.raises(BaseException):
        run(workspace, src)
    orphans = list(workspace.segments_dir.rglob("*.parquet"))
    assert len(orphans) == 1  # published, never committed
    assert query(workspace, "SELECT count(*) FROM recordings")[0][0] == 0
    monkeypatch.undo()
    result = run(workspace, src)
    assert result.ingested == 1
    ids = dataset_segment_ids(workspace)
    assert len(ids) == len(set(ids)) == 2 == query(workspace, "SELECT count(*) FROM segments")[0][0]


def _commit_that_dies_after_publish(real_commit):
    from tasks.workspace.segment_files import publish

    def commit(conn, ws, staged, run_id):
        publish(Path(staged.staged_file), ws.root / staged.dataset_file)
        raise SystemExit("simulated power cut between rename and commit")

    return commit


def test_every_shared_recording_ingests(shared_data, workspace):
    result = run(workspace, shared_data, site="shared")
    manifest = list(csv.DictReader(open(shared_data / "MANIFEST.csv")))
    assert result.failed == 0, result.failures
    assert result.ingested + result.duplicates == len(manifest)
    rows = {r[0]: r[1:] for r in query(workspace, "SELECT file_name, sample_rate, channels, format FROM recordings")}
    odd = [Path(m["path"]).name for m in manifest if m["sample_rate"] == "44150"]
    assert odd and all(rows[name][0] == 44150 for name in odd)
    stereo_mp3 = [Path(m["path"]).name for m in manifest if m["path"].endswith(".mp3") and m["channels"] == "2"]
    assert stereo_mp3 and all(rows[n][1:] == (2, "MP3") for n in stereo_mp3 if n in rows)
    assert "UPSWEEP(1).wav" in rows and any(" " in name for name in rows)
    total = query(workspace, "SELECT sum(duration_s) FROM recordings")[0][0]
    expected = sum(float(m["duration_s"]) for m in manifest)
    assert total == pytest.approx(expected, rel=0.01)


def test_the_run_publishes_progress_and_summary_artifacts(tmp_path, workspace):
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    folder = tmp_path / "art"
    write(folder / "ok.wav", noise(2.0, 16000), 16000, "PCM_16")
    (folder / "bad.wav").write_bytes(b"")
    run(workspace, folder, site="art")
    flow_run_id = query(workspace, "SELECT flow_run_id FROM ingest_runs")[0][0]
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(flow_run_id))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])))
    assert flow_run.name.startswith("ingest-art-")
    by_type = {}
    for artifact in artifacts:
        by_type.setdefault(artifact.type, []).append(artifact)
    assert by_type["progress"][0].data == 100.0
    keys = {a.key for a in by_type["table"]}
    assert keys == {"ingest-summary", "ingest-failures"}
    failures = next(a for a in by_type["table"] if a.key == "ingest-failures")
    assert "bad.wav" in str(failures.data) and "empty" in str(failures.data)
