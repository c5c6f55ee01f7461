"""`ceta2vec sql` cannot change the workspace or reach outside it: escape attempts through the
real CLI entry point (in-process for speed, one real subprocess), each answered with exit 2 and a
workspace whose every file hashes as before; and the engine's own locks, without the parser."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import duckdb
import pytest
from conftest import CLI
from quick_ingest import ingest_quick
from signals import noise, write

from tasks.workspace import Workspace, database


def snapshot(root: Path) -> dict[str, str]:
    """Every file under the workspace (and beside it) with the hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("sqlws")
    workspace = Workspace.at(root / "ws")
    write(root / "rec" / "a.wav", noise(3.0, 16000), 16000, "PCM_16")
    ingest_quick(workspace, root / "rec", segment_seconds=1.0)
    (root / "outside.txt").write_text("not for you\n")
    return workspace


def escapes(ws: Workspace) -> list[str]:
    db = ws.db_path
    seg = next(ws.segments_dir.rglob("*.parquet"))
    outside = ws.root.parent / "outside.txt"
    writes = [
        f"COPY (SELECT 'x' AS x) TO '{db}' (FORMAT csv)",
        f"COPY (SELECT 'x' AS x) TO '{seg}' (FORMAT parquet)",
        f"COPY recordings TO '{ws.root}/out.csv'",
        "COPY FROM DATABASE ceta2vec TO memory",
        f"EXPORT DATABASE '{ws.root}/export'",
        "INSTALL httpfs", "FORCE INSTALL httpfs", "LOAD httpfs", f"LOAD '{ws.root}/evil.duckdb_extension'",
        f"ATTACH '{ws.root}/other.duckdb' AS o", f"ATTACH '{db}' AS again", "DETACH ceta2vec",
        "SET enable_external_access = true", "SET allowed_directories = ['/']", "RESET lock_configuration",
        "SET autoinstall_known_extensions = true", "USE memory",
        "PRAGMA enable_profiling", f"PRAGMA profiling_output = '{db}'", "CALL pragma_version()", "CHECKPOINT",
        "VACUUM", "ANALYZE", "BEGIN TRANSACTION", "CREATE TABLE x (a INT)", "CREATE MACRO m(a) AS a",
        "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')", "INSERT INTO workspace_config VALUES ('k', 'v')",
        "UPDATE segments SET site = 'x'", "DELETE FROM recordings", "DROP VIEW segment_audio",
        "ALTER TABLE recordings ADD COLUMN z INT", f"PREPARE p AS COPY recordings TO '{ws.root}/p.csv'",
    ]
    return [
        *writes,
        *[f"EXPLAIN ANALYZE {w}" for w in writes],
        *[f"EXPLAIN {w}" for w in writes[:6]],
        f"/* hidden */ EXPLAIN ANALYZE COPY (SELECT 1) TO '{db}'",
        f"EXPLAIN/**/ANALYZE/**/COPY (SELECT 1) TO '{db}'",
        f"explain analyse (format json) COPY (SELECT 1) TO '{db}'",
        f"-- a comment\nEXPLAIN\nANALYZE\nEXPORT DATABASE '{ws.root}/e2'",
        f"SELECT 1; COPY (SELECT 'x' AS x) TO '{db}' (FORMAT csv)",
        "SELECT 1; SELECT 2",
        f"SELECT * FROM query('COPY (SELECT 1) TO ''{db}''')",
        f"SELECT * FROM query('SELECT * FROM read_text(''{outside}'')')",
        f"SELECT * FROM query_table('read_csv(''{outside}'')')",
        "SELECT * FROM read_csv('https://example.com/data.csv')",
        "SELECT * FROM read_parquet('s3://bucket/x.parquet')",
        "SELECT * FROM read_json('http://169.254.169.254/latest/meta-data')",
        f"SELECT * FROM read_text('{outside}')",
        "SELECT * FROM read_text('/etc/passwd')",
        f"SELECT * FROM read_blob('{ws.root}/../outside.txt')",
        "SELECT * FROM glob('/etc/*')",
        f"SELECT * FROM glob('{ws.root}/*')",
    ]


def test_escape_attempts_exit_2_and_leave_every_file_as_it_was(ws, capsys):
    from flows.cli.commands import main

    before = snapshot(ws.root.parent)
    attempts = escapes(ws)
    assert len(attempts) >= 60
    admitted = []
    for statement in attempts:
        code = main(["sql", statement, "--workspace", str(ws.root)])
        err = capsys.readouterr().err
        if code != 2 or not err.startswith("ceta2vec: error: ") or "Traceback" in err:
            admitted.append((statement, code, err))
        assert snapshot(ws.root.parent) == before, statement
    assert admitted == []
    for statement in ["SELECT * FROM checkpoint()", "SELECT * FROM force_checkpoint()"]:  # no-ops when read-only
        assert main(["sql", statement, "--workspace", str(ws.root)]) in (0, 2), statement
        capsys.readouterr()
        assert snapshot(ws.root.parent) == before, statement


def test_reading_still_works_through_views_and_explain(ws, capsys):
    from flows.cli.commands import main

    for statement in ["SELECT count(*) FROM segment_audio", "EXPLAIN ANALYZE SELECT count(*) FROM segments",
                      "DESCRIBE recordings", "SHOW TABLES", "SUMMARIZE segments", "FROM segments LIMIT 1",
                      "SELECT * FROM query('SELECT 42')", "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
                      f"SELECT count(*) FROM read_parquet('{ws.segments_glob}')"]:
        assert main(["sql", statement, "--workspace", str(ws.root), "--format", "csv"]) == 0, statement
        assert capsys.readouterr().out.strip(), statement


def test_the_engine_refuses_writes_files_and_extensions_without_the_parser(ws):
    """The parser's check bypassed: the sandboxed connection itself holds."""
    before = snapshot(ws.root.parent)
    with database.querying(ws) as conn:
        assert conn.execute("SELECT count(*) FROM segment_audio").fetchone()[0] == 3
        for statement in [f"COPY (SELECT 'x' AS x) TO '{ws.db_path}' (FORMAT csv)",
                          f"EXPLAIN ANALYZE COPY (SELECT 'x' AS x) TO '{ws.db_path}' (FORMAT csv)",
                          f"EXPORT DATABASE '{ws.root}/export'", "INSTALL httpfs", "LOAD httpfs",
                          f"ATTACH '{ws.root}/other.duckdb'", "SET enable_external_access = true",
                          "SELECT * FROM read_csv('https://example.com/data.csv')",
                          "SELECT * FROM read_text('/etc/passwd')", "DELETE FROM recordings"]:
            with pytest.raises(duckdb.Error):
                conn.execute(statement).fetchall()
    assert snapshot(ws.root.parent) == before


def test_explain_analyze_copy_over_the_database_as_a_subprocess(ws):
    """The issue's reproduction, exactly as a user types it."""
    before = snapshot(ws.root.parent)
    done = subprocess.run([CLI, "sql", f"EXPLAIN ANALYZE COPY (SELECT 'x' AS x) TO '{ws.db_path}' (FORMAT csv)",
                           "--workspace", str(ws.root)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "read-only" in done.stderr and "EXPLAIN of COPY" in done.stderr
    assert snapshot(ws.root.parent) == before
