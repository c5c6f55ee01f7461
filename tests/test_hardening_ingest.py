"""The ingest against hostile input, as a user meets it: a generated corpus of 50 kinds of bad and
good files through the real CLI (no crash, no hang, one row per file, exact counts), --strict,
nothing-to-ingest, concurrent commits, a full disk, and the one-line errors of every command."""

from __future__ import annotations

import logging
import os
import resource
from pathlib import Path

import pytest
from bad_inputs import make_corpus
from hardening_cli import api_env, cli, error_line  # noqa: F401 - api_env is a fixture
from signals import noise, tone, write

from flows.ingest import IngestRunFailed, ingest
from schemas.results import IngestResult
from schemas.settings import IngestSettings
from tasks.ingest.commit import FileOutcome, commit_outcomes
from tasks.ingest.discovery import content_hash, discover
from tasks.ingest.plan import IngestCounts
from tasks.ingest.recording import prepare_recording
from tasks.workspace import Workspace, database

pytestmark = pytest.mark.usefixtures("prefect_server")


def query(workspace: Workspace, sql: str, params=None) -> list[tuple]:
    with database.reading(workspace) as conn:
        return conn.execute(sql, params or []).fetchall()


def empty_workspace(workspace: Workspace) -> Workspace:
    """A workspace with its tables and nothing in them (an ingest of only bad files makes none)."""
    with database.writing(workspace) as conn:
        database.apply_schema(conn, workspace)
    return workspace


def run(workspace: Workspace, *sources, **options) -> IngestResult:
    return ingest(IngestSettings(sources=[str(s) for s in sources], workspace=str(workspace.root), **options))


def test_a_corpus_of_50_bad_and_good_kinds_never_stops_or_hangs_the_run(tmp_path, api_env):
    folder = tmp_path / "corpus"
    expected = make_corpus(folder)
    assert len(expected) >= 40
    ws = Workspace.at(tmp_path / "ws")
    done = cli(api_env, "ingest", folder, "--workspace", ws.root, "--segment-seconds", "2")  # a hang fails by timeout
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "ceta2vec: error" not in done.stderr

    stored = {Path(p).name: status for p, status in query(ws, "SELECT path, status FROM source_files")}
    errors = {Path(p).name: r for p, r in query(ws, "SELECT path, reason FROM ingest_errors WHERE severity = 'error'")}
    warnings = {}
    for path, reason in query(ws, "SELECT path, reason FROM ingest_errors WHERE severity = 'warning'"):
        warnings.setdefault(Path(path).name, []).append(reason)
    wrong = []
    for name, expectation in expected.items():
        kind, _, words = expectation.partition(":")
        if kind == "any":
            ok = (name in stored) != (name in errors)
        elif kind == "error":
            ok = name in errors and words in errors[name] and name not in stored
        elif kind == "duplicate":
            ok = stored.get(name) == "duplicate"
        else:
            ok = stored.get(name) == "ingested" and name not in errors and (
                (kind == "ok" and name not in warnings) or any(words in w for w in warnings.get(name, [])))
        if not ok:
            wrong.append((name, expectation, stored.get(name), errors.get(name), warnings.get(name)))
    assert wrong == []
    assert set(stored) | set(errors) == set(expected)  # every file accounted for, once

    (run_row,) = query(ws, "SELECT files_seen, ingested, skipped, duplicates, failed FROM ingest_runs")
    seen, ingested, skipped, duplicates, failed = run_row
    assert seen == ingested + skipped + duplicates + failed == len(expected)
    assert ingested == sum(1 for e in expected.values() if e.startswith(("ok", "warning"))) + sum(
        1 for n, e in expected.items() if e == "any" and n in stored)
    assert not list(ws.staging_dir.iterdir())
    # the names that are not UTF-8 are stored escaped, and found again as unchanged
    from tasks.ingest.discovery import printable

    bad_name = printable(Path(os.fsdecode(os.fsencode(folder) + b"/latin1-\xe9t\xe9.wav")))
    assert query(ws, "SELECT file_name FROM recordings WHERE path = ?", [bad_name]) == [("latin1-\\xe9t\\xe9.wav",)]

    again = cli(api_env, "ingest", folder, "--workspace", ws.root, "--segment-seconds", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert query(ws, "SELECT ingested, skipped FROM ingest_runs ORDER BY started_at DESC LIMIT 1") == [
        (0, ingested + duplicates)]
    assert query(ws, "SELECT count(*) FROM ingest_errors WHERE severity = 'error'") == [(len(errors),)]


def test_strict_commits_nothing_after_the_first_bad_file(tmp_path, workspace):
    folder = tmp_path / "strict"
    write(folder / "a_good.wav", tone(440, 1.0, 16000), 16000, "PCM_16")
    (folder / "b_empty.wav").write_bytes(b"")
    write(folder / "c_good.wav", tone(660, 1.0, 16000), 16000, "PCM_16")
    write(folder / "d_good.wav", tone(880, 1.0, 16000), 16000, "PCM_16")
    with pytest.raises(IngestRunFailed, match="b_empty.wav"):
        run(workspace, folder, strict=True, workers=2)
    assert query(workspace, "SELECT file_name FROM recordings") == [("a_good.wav",)]
    assert not list(workspace.staging_dir.iterdir())


def test_nothing_to_ingest_exits_2_and_creates_no_workspace(tmp_path, api_env):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no audio here")
    for source in [tmp_path / "no-such-folder", tmp_path / "notes"]:
        ws = tmp_path / f"ws-{source.name}"
        done = cli(api_env, "ingest", source, "--workspace", ws)
        assert done.returncode == 2, (source, done.stderr[-2000:])
        assert error_line(done.stderr).startswith("ceta2vec: error: nothing to ingest") and not ws.exists()
    result = run(Workspace.at(tmp_path / "ws-glob"), tmp_path / "*.flac")  # the flow itself, as a schedule runs it
    assert result.recordings_found == 0 and result.failures[0][2] == "glob pattern matches no files"
    assert not (tmp_path / "ws-glob").exists()


def test_a_run_that_stores_nothing_leaves_the_settings_open(tmp_path, workspace):
    empty_workspace(workspace)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "empty.wav").write_bytes(b"")
    assert run(workspace, tmp_path / "bad", sample_rate=8000).failed == 1
    good = write(tmp_path / "good" / "x.wav", noise(1.0, 16000), 16000, "PCM_16")
    assert run(workspace, good, sample_rate=16000).ingested == 1
    assert ("sample_rate", "16000") in query(workspace, "SELECT key, value FROM workspace_config")


def test_a_recording_committed_by_a_concurrent_run_is_not_counted_twice(tmp_path, workspace):
    """Two runs that both found the same new files: the one that commits second counts them as
    skipped (same path) or duplicates (another path), never as ingested."""
    folder = tmp_path / "shared"
    for i in range(3):
        write(folder / f"r{i}.wav", noise(1.0, 16000, seed=i), 16000, "PCM_16")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "r0 copy.wav").write_bytes((folder / "r0.wav").read_bytes())
    settings = IngestSettings(sources=[str(folder)], workspace=str(workspace.root))
    wanted = {"sample_rate": "16000", "segment_seconds": "10.0", "hop_seconds": "10.0", "final_segment": "pad"}
    workspace.create()
    with database.writing(workspace) as conn:
        database.apply_schema(conn, workspace)

    def staged(files):
        return [FileOutcome(f, staged=prepare_recording(f, content_hash(f.path), settings, workspace)) for f in files]

    mine = discover([str(folder)]).files
    first, second = staged(mine), staged(mine + discover([str(tmp_path / "other")]).files)
    counts = [IngestCounts(), IngestCounts()]
    log = logging.getLogger("test")
    commit_outcomes(workspace, first, "run-1", counts[0], log, wanted)
    commit_outcomes(workspace, second, "run-2", counts[1], log, wanted)
    assert (counts[0].ingested, counts[1].ingested, counts[1].skipped, counts[1].duplicates) == (3, 0, 3, 1)
    assert query(workspace, "SELECT count(*) FROM recordings") == [(3,)]
    assert query(workspace, "SELECT status, count(*) FROM source_files GROUP BY 1 ORDER BY 1") == [
        ("duplicate", 1), ("ingested", 3)]
    assert not list(workspace.staging_dir.iterdir())  # the second run's staged copies are dropped


def test_a_full_disk_is_one_line_exit_2_and_leaves_no_staged_files(tmp_path, api_env):
    folder = tmp_path / "rec"
    for i in range(6):
        write(folder / f"small{i}.wav", noise(2.0, 16000, seed=i), 16000, "PCM_16")
    write(folder / "zz-long.wav", noise(300.0, 16000, seed=9), 16000, "PCM_16")  # ~19 MB of float32 segments
    ws = Workspace.at(tmp_path / "ws")
    done = cli(api_env, "ingest", folder, "--workspace", ws.root, "--workers", "1", limit_bytes=8 << 20)
    assert done.returncode == 2, done.stderr[-3000:]
    line = error_line(done.stderr)
    assert line.startswith("ceta2vec: error: file too large") and "free some space" in line, line
    assert "TransactionContext" not in done.stderr
    assert not [p for p in ws.staging_dir.iterdir()]
    # nothing half-written: what was committed is whole, and the error is no file's fault
    assert query(ws, "SELECT count(*) FROM ingest_errors WHERE path LIKE '%zz-long.wav'") == [(0,)]
    assert query(ws, "SELECT count(*) FROM recordings WHERE file_name = 'zz-long.wav'") == [(0,)]


def test_commands_before_an_ingest_say_so_in_one_line_and_create_nothing(tmp_path, api_env, capsys):
    from flows.cli.commands import main

    missing = tmp_path / "typo-ws"
    for args in (["pretrain"], ["embed"], ["report"], ["evaluate", "--label-column", "species"], ["status"],
                 ["sql", "SELECT 1"], ["index"], ["export", "--output", str(tmp_path / "x.parquet")]):
        assert main([*args, "--workspace", str(missing)]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no ceta2vec workspace" in err and "ceta2vec ingest" in err, (args, err)
        assert not missing.exists(), args
    done = cli(api_env, "pretrain", "--workspace", missing)  # and as a user runs it
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-3000:]
    assert "no ceta2vec workspace" in error_line(done.stderr) and not missing.exists()


def test_pretrain_on_a_workspace_without_segments_names_the_cause(tmp_path, api_env):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "empty.wav").write_bytes(b"")
    ws = empty_workspace(Workspace.at(tmp_path / "ws"))
    assert run(ws, tmp_path / "rec").failed == 1  # a workspace, and not one segment in it
    done = cli(api_env, "pretrain", "--workspace", ws.root, "--chunks", "1", "--steps-per-chunk", "1")
    assert done.returncode == 2, done.stderr[-3000:]
    line = error_line(done.stderr)
    assert "no segments" in line and "ceta2vec ingest" in line and "No files found" not in done.stderr, line


def test_a_commit_refused_for_space_raises_the_real_cause_not_a_rollback_error(tmp_path):
    """DuckDB's own COMMIT hitting a real EFBIG (this process's file size limit, for a moment)."""
    import duckdb

    from tasks.audio.failures import disk_full

    conn = duckdb.connect(str(tmp_path / "x.duckdb"))
    conn.execute("CREATE TABLE t (a VARCHAR)")
    conn.execute("CHECKPOINT")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, hard))
    try:
        with pytest.raises(duckdb.Error) as raised:
            with database.transaction(conn):
                conn.execute("INSERT INTO t SELECT repeat('x', 1000) || i FROM range(20000) r(i)")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert "File too large" in str(raised.value) and disk_full(raised.value), raised.value
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_file_swapped_for_a_fifo_after_discovery_is_refused_not_waited_on(tmp_path):
    from tasks.audio.decode import probe
    from tasks.audio.failures import IngestFailure

    path = write(tmp_path / "a.wav", noise(1.0, 16000), 16000, "PCM_16")
    (source,) = discover([str(path)]).files
    path.unlink()
    os.mkfifo(path)  # nobody ever writes to it: opening or reading it the plain way blocks forever
    with pytest.raises(IngestFailure, match="FIFO"):
        content_hash(source.path)
    with pytest.raises(IngestFailure, match="not a regular file"):
        probe(source.path)
