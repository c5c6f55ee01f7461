"""Faults an adversarial run found, each held here: files that vanished from the accounting, an
ingest of nothing readable that made a workspace, folders named like recordings passed over,
workspaces that could not be moved, SQL without limits, segment files deleted under a workspace,
and training that ran out of memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from quick_ingest import ingest_quick
from signals import noise, write

from flows.cli.commands import main
from schemas.tables import frame_vectors_view
from tasks.catalog.queries import run_query, size_bytes
from tasks.ingest.discovery import discover
from tasks.workspace import Workspace, database


def query(workspace: Workspace, sql: str, params=None) -> list[tuple]:
    with database.reading(workspace) as conn:
        return conn.execute(sql, params or []).fetchall()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ceta2vec: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def test_every_copy_of_a_failed_file_gets_its_own_row(tmp_path, prefect_server):
    """Byte-identical copies of a file that fails: each copy is an error row, not a silent skip."""
    folder = tmp_path / "rec"
    good = write(folder / "good.wav", noise(1.0, 16000), 16000, "PCM_16")
    (folder / "good copy.wav").write_bytes(good.read_bytes())
    for name in ("notes.wav", "notes copy.wav", "notes copy 2.wav"):
        (folder / name).write_text("field notes, not audio\n" * 20)
    for name in ("empty a.wav", "empty b.wav"):
        (folder / name).write_bytes(b"")
    ws = Workspace.at(tmp_path / "ws")
    assert main(["ingest", str(folder), "--workspace", str(ws.root)]) == 0

    stored = query(ws, "SELECT path, status FROM source_files")
    errors = query(ws, "SELECT path, reason FROM ingest_errors WHERE severity = 'error'")
    names = sorted(Path(p).name for p, _ in stored + errors)
    assert names == sorted(p.name for p in folder.iterdir())  # each file exactly once
    reasons = {Path(p).name: r for p, r in errors}
    notes = [r for n, r in reasons.items() if n.startswith("notes")]
    assert len(notes) == 3 and all("not a readable audio file" in r for r in notes), reasons
    assert sum("(same bytes as notes copy 2.wav)" in r for r in notes) == 2, reasons  # the first in path order
    assert "empty (0 bytes)" in reasons["empty a.wav"] and "empty (0 bytes)" in reasons["empty b.wav"]
    (seen, ingested, skipped, duplicates, failed), = query(
        ws, "SELECT files_seen, ingested, skipped, duplicates, failed FROM ingest_runs")
    assert (seen, ingested, skipped, duplicates, failed) == (7, 1, 0, 1, 5)


@pytest.mark.parametrize("content", [b"", b"field notes, not audio\n" * 20], ids=["empty", "text"])
def test_an_ingest_of_nothing_readable_exits_2_and_creates_no_workspace(tmp_path, prefect_server, capsys, content):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "zero.wav").write_bytes(content)
    ws = tmp_path / "new-ws"
    assert main(["ingest", str(tmp_path / "bad" / "zero.wav"), "--workspace", str(ws)]) == 2
    line = one_error_line(capsys)
    assert "nothing to ingest" in line and "zero.wav" in line, line
    assert not ws.exists()
    existing = tmp_path / "empty-folder"  # a folder the user made for it stays, empty as it was
    existing.mkdir()
    assert main(["ingest", str(tmp_path / "bad"), "--workspace", str(existing)]) == 2
    capsys.readouterr()
    assert list(existing.iterdir()) == []


def test_a_bad_file_in_an_existing_workspace_is_an_error_row_and_exit_0(tmp_path, prefect_server):
    ws = Workspace.at(tmp_path / "ws")
    write(tmp_path / "good" / "a.wav", noise(1.0, 16000), 16000, "PCM_16")
    assert main(["ingest", str(tmp_path / "good"), "--workspace", str(ws.root)]) == 0
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "zero.wav").write_bytes(b"")
    assert main(["ingest", str(tmp_path / "bad"), "--workspace", str(ws.root)]) == 0
    assert query(ws, "SELECT count(*) FROM ingest_errors WHERE path LIKE '%zero.wav'") == [(1,)]
    assert query(ws, "SELECT count(*) FROM recordings") == [(1,)]


def test_folders_named_like_recordings_are_error_rows_unless_they_hold_recordings(tmp_path):
    folder = tmp_path / "rec"
    (folder / "dir.wav").mkdir(parents=True)
    (folder / "notes only.flac").mkdir()
    (folder / "notes only.flac" / "readme.txt").write_text("no audio")
    write(folder / "holds.wav" / "inside.wav", noise(1.0, 16000), 16000, "PCM_16")
    (tmp_path / "elsewhere").mkdir()
    (folder / "link.wav").symlink_to(tmp_path / "elsewhere")
    (folder / "2025-07").mkdir()  # a folder with no audio name is just a folder

    found = discover([str(folder)])
    assert [f.path.name for f in found.files] == ["inside.wav"]
    problems = {Path(p.path).name: p.reason for p in found.problems}
    assert set(problems) == {"dir.wav", "notes only.flac", "link.wav"}, problems
    assert problems["dir.wav"].startswith("a folder, not an audio file")
    assert problems["link.wav"].startswith("a link to a folder")
    by_glob = {Path(p.path).name: p.reason for p in discover([str(folder / "*.wav")]).problems}
    assert set(by_glob) == {"dir.wav", "holds.wav", "link.wav"} and "glob pattern" in by_glob["holds.wav"]
    assert [p.reason for p in discover([str(folder / "dir.wav")]).problems] == [problems["dir.wav"]]


def _frames_file(workspace: Workspace) -> None:
    """One real frame-vector file, as an embed writes them (the view binds once one exists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = workspace.embeddings_dir / "tiny-1" / "frames"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"segment_id": ["s"], "layer": pa.array([0], pa.int16()), "frame": [0],
                             "time_s": [0.0], "vector": pa.array([[0.5, 0.5]], pa.list_(pa.float32(), 2))}),
                   folder / "part-0.parquet")


@pytest.mark.parametrize("move", ["cp -a", "mv"])
def test_a_copied_or_moved_workspace_reads_its_own_audio(tmp_path, move):
    import shutil

    write(tmp_path / "rec" / "a.wav", noise(3.0, 16000), 16000, "PCM_16")
    original = Workspace.at(tmp_path / "original")
    ingest_quick(original, tmp_path / "rec", segment_seconds=1.0)
    _frames_file(original)
    with database.writing(original) as conn:
        conn.execute(frame_vectors_view(original.frames_glob()))
    expected = query(original, "SELECT count(*) FROM segment_audio")
    assert expected == [(3,)]

    moved = Workspace.at(tmp_path / "moved")
    if move == "mv":
        original.root.rename(moved.root)
    else:
        shutil.copytree(original.root, moved.root, symlinks=True)
        original.root.rename(tmp_path / "renamed")  # the copy must not read the original's files
    assert query(moved, "SELECT count(*) FROM segment_audio") == expected
    assert query(moved, "SELECT count(*) FROM frame_vectors") == [(0,)]  # bound: no embedded segment yet
    assert run_query(moved, "SELECT count(*) FROM segment_audio").rows == expected  # the locked sandbox too
    with database.writing(moved) as conn:  # a writing connection fixes the stored views for good
        stored = conn.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'segment_audio'").fetchone()[0]
    assert str(moved.segments_dir) in stored


@pytest.fixture(scope="module")
def small_workspace(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("limits")
    write(root / "rec" / "a.wav", noise(2.0, 16000), 16000, "PCM_16")
    ws = Workspace.at(root / "ws")
    ingest_quick(ws, root / "rec")
    return ws


@pytest.mark.parametrize("sql, options, words", [
    ("SELECT count(*) FROM range(1000000000000)", ["--timeout", "0.5"], "time limit of 0.5 s"),
    ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r",
     ["--timeout", "0.5"], "time limit"),
    ("SELECT length(string_agg(repeat('x', 1000), ',')) FROM range(1000000)", ["--memory-limit", "100MB"],
     "memory than its limit of 100MB"),
    # one value DuckDB's own limit does not govern: the process's ceiling stops it
    ("SELECT length(repeat('x', 1000000000))", ["--memory-limit", "10MB"], "memory than its limit of 10MB"),
    ("SELECT 1", ["--memory-limit", "lots"], "--memory-limit takes a size"),
], ids=["range", "recursive", "string_agg", "repeat", "bad-size"])
def test_sql_stops_at_its_time_and_memory_limits_in_one_line(small_workspace, capsys, sql, options, words):
    assert main(["sql", sql, "--workspace", str(small_workspace.root), *options]) == 2
    line = one_error_line(capsys)
    assert words in line, line
    assert main(["sql", "SELECT count(*) AS n FROM segment_audio", "--workspace", str(small_workspace.root),
                 "--format", "csv"]) == 0  # the next query runs as before
    assert capsys.readouterr().out.split() == ["n", "1"]


def test_sql_has_limits_by_default(small_workspace, capsys, monkeypatch):
    import os

    ((limit,),) = run_query(small_workspace, "SELECT current_setting('memory_limit')").rows
    half = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2
    assert abs(size_bytes(limit) - half) < 0.02 * half, limit
    monkeypatch.setattr(database, "QUERY_TIMEOUT_S", 0.5)  # the default, shortened: no --timeout given
    assert main(["sql", "SELECT count(*) FROM range(1000000000000)", "--workspace", str(small_workspace.root)]) == 2
    assert "time limit of 0.5 s" in one_error_line(capsys)


def test_a_deleted_segment_file_is_named_by_pretrain_and_status(tmp_path, capsys):
    from tasks.training.data import build_index

    for i in range(3):
        write(tmp_path / "rec" / f"r{i}.wav", noise(2.0, 16000, seed=i), 16000, "PCM_16")
    ws = Workspace.at(tmp_path / "ws")
    ingest_quick(ws, tmp_path / "rec")
    with database.reading(ws) as conn:
        assert len(build_index(conn, ws, [], 1.0, 0.0)) == 3
    gone = sorted(ws.segments_dir.rglob("*.parquet"))[1]
    gone.unlink()
    with database.reading(ws) as conn, pytest.raises(database.WorkspaceError) as refused:
        build_index(conn, ws, [], 1.0, 0.0)  # what pretrain trains on: not the 2 files left, silently
    assert "1 segment file(s)" in str(refused.value) and gone.name in str(refused.value)
    assert main(["status", "--workspace", str(ws.root)]) == 0
    err = capsys.readouterr().err
    assert "ceta2vec: warning: 1 segment file(s)" in err and gone.name in err, err


def test_training_out_of_memory_is_one_line_with_the_fix(tmp_path, capsys):
    """A real failed allocation, made cheap: this process may grow by 256 MB only, and the batch's
    activations need more (torch's CPU allocator refuses them at once; nothing is touched)."""
    import resource

    from schemas.settings import PretrainSettings
    from tasks.training.run import TrainingOutOfMemory, resolve_run, train_chunk, training_index

    for i in range(2):
        write(tmp_path / "rec" / f"r{i}.wav", noise(4.0, 16000, seed=i), 16000, "PCM_16")
    ws = Workspace.at(tmp_path / "ws")
    ingest_quick(ws, tmp_path / "rec")
    settings = PretrainSettings(workspace=str(ws.root), run="oom", steps_per_chunk=1, chunks=1, batch_size=256,
                                crop_seconds=2.0, device="cpu", model_overrides={"num_hidden_layers": 2})
    with database.writing(ws) as conn:
        spec = resolve_run(conn, ws, settings)
        index = training_index(conn, ws, spec)
    with open("/proc/self/status") as status:
        held = next(int(line.split()[1]) << 10 for line in status if line.startswith("VmData:"))
    before = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (held + (256 << 20), before[1]))
    try:
        with pytest.raises(TrainingOutOfMemory) as raised:
            train_chunk(spec, index)
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, before)
    message = str(raised.value)
    assert "\n" not in message and "--batch-size 64 --grad-accum 4" in message, message
    assert not list(spec.run_dir.glob("chunk-*[0-9]")), "no checkpoint from a chunk that failed"


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.995])
def test_a_cut_short_database_is_refused_in_one_line_and_never_written(tmp_path, capsys, keep):
    """Cut in its catalog (opening fails), in its data blocks (opening works: some counts would
    answer) or inside its last block: each is named damaged, with the way out, and left as it was."""
    import hashlib
    import shutil

    for i in range(4):
        write(tmp_path / "rec" / f"r{i}.wav", noise(20.0, 16000, seed=i), 16000, "PCM_16")
    whole = Workspace.at(tmp_path / "whole")
    ingest_quick(whole, tmp_path / "rec", segment_seconds=1.0)
    ws = Workspace.at(tmp_path / "cut")
    shutil.copytree(whole.root, ws.root)
    data = whole.db_path.read_bytes()
    ws.db_path.write_bytes(data[: int(len(data) * keep)])
    before = hashlib.sha256(ws.db_path.read_bytes()).hexdigest()

    assert main(["status", "--workspace", str(ws.root)]) == 2
    line = one_error_line(capsys)
    assert "is damaged" in line and "restore it from a backup" in line, line
    # one line: the file, what is wrong with it, then after "; " how to recover
    what, fix = line.removeprefix("ceta2vec: error: ").split("; ")
    assert what.startswith(f"{ws.db_path}: the database is damaged") and "nothing was written to it" in what, line
    assert fix.startswith("restore it from a backup, or move it aside") and "ingest the recordings again" in fix
    with pytest.raises(database.WorkspaceError, match="is damaged"):
        with database.writing(ws):
            pass
    write(tmp_path / "more" / "new.wav", noise(2.0, 16000, seed=9), 16000, "PCM_16")
    with pytest.raises(database.WorkspaceError, match="is damaged"):
        ingest_quick(ws, tmp_path / "more", segment_seconds=1.0)
    assert hashlib.sha256(ws.db_path.read_bytes()).hexdigest() == before
    assert query(whole, "SELECT count(*) FROM segments") == [(80,)]  # the whole file still opens


def test_random_bytes_get_a_real_reason_and_a_header_that_undercounts_a_warning(tmp_path):
    import numpy as np
    from bad_inputs import _wav_header

    from tasks.audio.decode import probe
    from tasks.audio.failures import IngestFailure

    for seed, name in [(0, "random.mp3"), (1, "random.flac"), (1, "random.wav")]:  # each once said "possibly a pipe?"
        path = tmp_path / name
        path.write_bytes(np.random.default_rng(seed).bytes(4000))
        with pytest.raises(IngestFailure) as refused:
            probe(path)
        assert "pipe" not in refused.value.reason and "Format not recognised" in refused.value.reason, refused.value

    folder = tmp_path / "rec"
    folder.mkdir()
    (folder / "declares less.wav").write_bytes(_wav_header(1, 16000, 16, 100) + b"\x01\x00" * 32000)
    ws = Workspace.at(tmp_path / "ws")
    ingest_quick(ws, folder)
    ((reason,),) = query(ws, "SELECT reason FROM ingest_errors WHERE severity = 'warning'")
    assert reason.startswith("header declares less than the file holds: 63900 bytes") and "0.003 s" in reason


@pytest.mark.parametrize("locked", ["database file", "workspace folder"])
def test_a_read_only_workspace_is_refused_in_one_line_with_the_fix(tmp_path, locked):
    """chmod -w on the database file, or on the workspace's folder: a writing command says which path
    it cannot write and how to fix it, before its Prefect server starts, and inside a flow alike;
    reading commands go on reading."""
    import os
    import subprocess
    import sys

    from conftest import CLI
    from hardening_cli import as_plain_user, error_line

    write(tmp_path / "rec" / "a.wav", noise(1.0, 16000), 16000, "PCM_16")
    ws = Workspace.at(tmp_path / "ws")
    ingest_quick(ws, tmp_path / "rec")
    denied = ws.db_path if locked == "database file" else ws.root
    subprocess.run(["chmod", "a-w", str(denied)], check=True)
    try:
        run = lambda *args: subprocess.run([*as_plain_user(), *map(str, args)], capture_output=True,  # noqa: E731
                                           text=True, timeout=120)
        refused = run(CLI, "ingest", tmp_path / "rec", "--workspace", ws.root)
        assert refused.returncode == 2 and "Prefect server" not in refused.stderr, refused.stderr[-2000:]
        what, fix = error_line(refused.stderr).removeprefix("ceta2vec: error: ").split("; ")
        assert what.startswith(f"{denied}: not writable by this user (permission denied)"), what
        assert fix.startswith(f"make it writable (chmod -R u+w {ws.root})"), fix
        # where a flow opens it to write (past the CLI's checks): the same line, not DuckDB's IO error
        inside = run(sys.executable, "-c", "import sys; from tasks.workspace import Workspace, database\n"
                     "try:\n    database.writing(Workspace.at(sys.argv[1])).__enter__()\n"
                     "except database.WorkspaceError as e:\n    print(e)", ws.root)
        assert inside.stdout.strip() == f"{what}; {fix}", inside.stdout + inside.stderr
        shown = run(CLI, "status", "--workspace", ws.root, "--format", "json")
        assert shown.returncode == 0 and '"recordings": 1' in shown.stdout, shown.stderr[-2000:]
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(ws.root)], check=True)
    assert os.access(ws.db_path, os.W_OK)


def test_a_query_waits_for_a_writer_that_holds_the_lock_past_the_old_wait(tmp_path, monkeypatch, capsys, caplog):
    """C1: `ceta2vec sql` during an embed gave up after a fixed minute while embed held the lock
    through a longer phase. A holder that is a live process is now waited for, and the wait says
    whom it waits for; CETA2VEC_LOCK_WAIT_S bounds it, in one line naming the holder. Shortened:
    the fixed wait to 0.5 s, the holder's phase to 2 s."""
    import subprocess
    import sys
    import threading

    write(tmp_path / "rec" / "a.wav", noise(2.0, 16000), 16000, "PCM_16")
    ws = Workspace.at(tmp_path / "ws")
    ingest_quick(ws, tmp_path / "rec")
    monkeypatch.setattr(database, "LOCK_WAIT_S", 0.5)
    holder = subprocess.Popen(  # another process's writer, holding the file until told to let go
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
         "sys.stdin.readline(); c.close(); print('released', flush=True)", str(ws.db_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        asked = ["sql", "SELECT count(*) AS n FROM segments", "--workspace", str(ws.root), "--format", "csv"]
        monkeypatch.setenv("CETA2VEC_LOCK_WAIT_S", "0.3")
        assert main(asked) == 2
        what, fix = one_error_line(capsys).removeprefix("ceta2vec: error: ").rsplit("; ", 1)  # its command may hold "; "
        assert what.startswith(f"{ws.db_path}: its lock is held by PID {holder.pid} ("), what
        assert "CETA2VEC_LOCK_WAIT_S=SECONDS" in fix, fix

        monkeypatch.delenv("CETA2VEC_LOCK_WAIT_S")
        let_go = threading.Timer(2.0, lambda: (holder.stdin.write("\n"), holder.stdin.flush()))
        let_go.start()
        with caplog.at_level("WARNING", logger=database.__name__):
            assert main(asked) == 0  # waited past LOCK_WAIT_S, for as long as the holder held the file
        assert holder.stdout.readline().strip() == "released"
        assert capsys.readouterr().out.split() == ["n", "1"]
        assert f"waiting for PID {holder.pid}" in caplog.text, caplog.text
    finally:
        holder.kill()
        holder.wait()
