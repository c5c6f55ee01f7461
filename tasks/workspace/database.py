"""The workspace's DuckDB file: connections (writing, reading, the locked query sandbox), the
schema and its migrations, and `insert` by column name. What the tables hold is `tasks/catalog`'s.

DuckDB lets one process write a database file, or several read it, at a time. Writers here hold
their connection only for the length of one commit, and every connection retries while another
process holds the lock, so a query run during an ingest waits briefly and then succeeds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa

from schemas.tables import MIGRATIONS, SCHEMA_VERSION, TABLES, VIEWS, segment_audio_view
from tasks.workspace import Workspace

LOCK_WAIT_S = 60.0

# Settings that define the dataset: every recording of a workspace shares them.
DATASET_KEYS = ("sample_rate", "segment_seconds", "hop_seconds", "final_segment")


class WorkspaceError(RuntimeError):
    """A workspace that cannot be used as asked; the message says why and what to do."""


def _is_lock_conflict(exc: Exception) -> bool:
    text = str(exc)
    # the second: another thread of this process (a concurrent flow run) holds a writing
    # connection while this one asks for a read-only one, or the other way round
    return ("lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)) or (
        "different configuration" in text)


def lock_wait_s() -> float:
    """How long a connection waits for another process's lock (CETA2VEC_LOCK_WAIT_S overrides it)."""
    return float(os.environ.get("CETA2VEC_LOCK_WAIT_S", LOCK_WAIT_S))


def connect(workspace: Workspace, read_only: bool = False, wait_s: float | None = None,
            config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """Open the workspace database, waiting up to `wait_s` while another process (or another
    thread of this one, with the other kind of connection) has it open."""
    wait_s = lock_wait_s() if wait_s is None else wait_s
    if read_only and not workspace.db_path.exists():
        raise WorkspaceError(f"no ceta2vec workspace at {workspace.root} (run `ceta2vec ingest` first)")
    if not read_only:
        workspace.create()
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            conn = duckdb.connect(str(workspace.db_path), read_only=read_only, config=config or {})
            if workspace.storage.remote:  # read_parquet over a segment dataset kept at an fsspec URL
                conn.register_filesystem(workspace.storage.filesystem)
            return conn
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not _is_lock_conflict(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


@contextmanager
def writing(workspace: Workspace) -> Iterator[duckdb.DuckDBPyConnection]:
    """The one way to write: inside a Prefect flow run, flow runs take turns through the
    `ceta2vec-duckdb-writer` global concurrency limit; everywhere, `connect` waits for the file lock."""
    with _writer_turn():
        conn = connect(workspace)
        try:
            yield conn
        finally:
            conn.close()


# Who else may be writing is the orchestrator's business: flows install a gate that makes their
# runs take turns (`flows.runtime.limits`); plain functions, tests and read-only commands need none.
_writer_gate: Callable[[], AbstractContextManager] = nullcontext


def set_writer_gate(gate: Callable[[], AbstractContextManager]) -> None:
    """Every `writing` block from now on first enters `gate()`."""
    global _writer_gate
    _writer_gate = gate


def _writer_turn() -> AbstractContextManager:
    return _writer_gate()


# Connections inside a `transaction` block, by id: DuckDB cannot be asked, and a BEGIN sent to find
# out aborts the transaction already open.
_in_transaction: set[int] = set()


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection, join: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """All of the block's writes, or none of them. With `join`, a `transaction` block already open on
    this connection is the block's (it commits or rolls back with it)."""
    if join and id(conn) in _in_transaction:
        yield conn
        return
    conn.execute("BEGIN TRANSACTION")
    _in_transaction.add(id(conn))
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except duckdb.Error:
            pass  # a failed COMMIT (a full disk) has rolled back already; the first error is the one to tell
        raise
    finally:
        _in_transaction.discard(id(conn))


# Databases this process has seen at the current schema: a read opens the file once, not twice.
_current: set[Path] = set()


def _upgraded(workspace: Workspace) -> None:
    """A workspace written by an older ceta2vec is migrated before it is read: the queries here
    speak the current schema. Checked once per database and process."""
    if workspace.db_path in _current:
        return
    conn = connect(workspace, read_only=True)
    try:
        version = schema_version(conn)
    finally:
        conn.close()
    if version is not None and version < SCHEMA_VERSION:
        with writing(workspace) as conn:
            apply_schema(conn, workspace)
    if version is not None:
        _current.add(workspace.db_path)


@contextmanager
def reading(workspace: Workspace) -> Iterator[duckdb.DuckDBPyConnection]:
    _upgraded(workspace)
    conn = connect(workspace, read_only=True)
    try:
        yield conn
    finally:
        conn.close()


# Extensions neither installed (a download) nor loaded on demand by a query someone typed.
SANDBOX_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


@contextmanager
def querying(workspace: Workspace) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection for SQL someone typed: files outside the workspace's data folders
    cannot be read or written (no URLs, no /etc), and the query cannot switch that back on."""
    _upgraded(workspace)
    conn = connect(workspace, read_only=True, config=SANDBOX_CONFIG)
    try:
        # Data folders, not the workspace root: an allowed folder is writable at the engine level,
        # and the database file's own folder must not be.
        folders = [f"{str(workspace.storage.root).rstrip('/')}/", f"{workspace.embeddings_dir}/"]
        conn.execute("SET allowed_directories = ?", [folders])
        conn.execute("SET enable_external_access = false")
        conn.execute("SET lock_configuration = true")
        yield conn
    finally:
        conn.close()


def schema_version(conn: duckdb.DuckDBPyConnection) -> int | None:
    """The version a workspace's tables were last written with; None for a new database."""
    if not conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'workspace_config'"
    ).fetchone()[0]:
        return None
    row = conn.execute("SELECT value FROM workspace_config WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else None


def apply_schema(conn: duckdb.DuckDBPyConnection, workspace: Workspace) -> None:
    """Create what is missing and upgrade an older workspace in place (schemas/tables.py MIGRATIONS)."""
    version = schema_version(conn)
    if version is not None and version > SCHEMA_VERSION:
        raise WorkspaceError(
            f"{workspace.db_path} was written by a newer ceta2vec (schema {version} > {SCHEMA_VERSION}); upgrade ceta2vec"
        )
    with transaction(conn):
        for to_version, migrate in MIGRATIONS:
            if version is not None and version < to_version:
                migrate(conn)
        for ddl in TABLES + VIEWS:
            conn.execute(ddl)
        insert(conn, "workspace_config", [{"key": "schema_version", "value": str(SCHEMA_VERSION)}],
               on_conflict="replace")
    refresh_segment_audio_view(conn, workspace)


def insert(conn: duckdb.DuckDBPyConnection, table: str, rows: Iterable[Mapping[str, object]],
           on_conflict: Literal["fail", "replace", "ignore"] = "fail") -> int:
    """Insert rows by column name, so that no caller depends on the order of a table's columns in
    schemas/tables.py; returns the rows written. Every row names the same columns. All rows or none."""
    rows = list(rows)
    if not rows:
        return 0
    columns = list(rows[0])
    verb = {"fail": "INSERT", "replace": "INSERT OR REPLACE", "ignore": "INSERT OR IGNORE"}[on_conflict]
    # executemany alone commits row by row: a kill -9 between rows once left part of the dataset settings
    with transaction(conn, join=True):
        conn.executemany(f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                         [[row[c] for c in columns] for row in rows])
    return len(rows)


def refresh_segment_audio_view(conn: duckdb.DuckDBPyConnection, workspace: Workspace) -> None:
    # read_parquet binds its glob when the view is created, so the view only exists once a file does.
    if workspace.storage.files():
        conn.execute(segment_audio_view(workspace.segments_glob))


def register_ids(conn: duckdb.DuckDBPyConnection, ids: list[str], name: str = "report_ids") -> str:
    """`ids` as a temporary table (segment_id, position) to join on, keeping their order."""
    conn.register(name, pa.table({"segment_id": pa.array(ids, pa.string()),
                                  "position": pa.array(np.arange(len(ids), dtype=np.int64))}))
    return name
