"""The workspace's DuckDB file: connections (writing, reading, the locked query sandbox), the
schema and its migrations, and `insert` by column name. What the tables hold is `tasks/catalog`'s.

DuckDB lets one process write a database file, or several read it, at a time. Writers here hold
their connection only for the length of one commit or phase, and every connection retries while
another process holds the lock, for as long as that process lives (`connect`), so a query run
during an ingest or an embed waits and then succeeds.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa

from schemas.tables import MIGRATIONS, SCHEMA_VERSION, TABLES, VIEWS, frame_vectors_view, segment_audio_view
from tasks.workspace import Workspace

# How long a connection waits for a lock whose holder it cannot see (a process of another machine,
# or another thread of this one); a holder that is a live process here is waited for up to
# LOCK_HOLDER_WAIT_S: a writer may hold the file through a long phase (embed's k-means of a layer).
# CETA2VEC_LOCK_WAIT_S, where set, bounds every wait instead.
LOCK_WAIT_S = 60.0
LOCK_HOLDER_WAIT_S = 3600.0

log = logging.getLogger(__name__)

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


class WorkspaceLocked(WorkspaceError):
    """Another process held the database's lock for longer than this one would wait (a transient
    error: its cause is DuckDB's lock conflict, so a task's retry waits again)."""


def lock_wait_s() -> float | None:
    """The user's bound on any wait for the database's lock (CETA2VEC_LOCK_WAIT_S); None: unset."""
    value = os.environ.get("CETA2VEC_LOCK_WAIT_S")
    return float(value) if value else None


def lock_holder(exc: Exception) -> tuple[int, str] | None:
    """(pid, command line) of the live process on this machine that DuckDB names as the lock's holder;
    None when it names none, or one that is gone."""
    found = re.search(r"\(PID (\d+)\)", str(exc))
    if not found or int(found.group(1)) == os.getpid():
        return None
    pid = int(found.group(1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # another user's process: alive
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    return pid, command


def _locked(workspace: Workspace, holder: tuple[int, str] | None, waited: float, exc: Exception) -> WorkspaceLocked:
    who = f"PID {holder[0]} ({' '.join(holder[1].split()[:6]) or 'a process'})" if holder else "another process"
    return WorkspaceLocked(
        f"{workspace.db_path}: its lock is held by {who}, and this command waited {waited:.0f} s for it; wait "
        "for that command to finish and run this one again, or let commands wait longer "
        "(CETA2VEC_LOCK_WAIT_S=SECONDS)")


# What DuckDB says of a database file that was cut short or overwritten: its catalog, read when the
# file is opened, lies in blocks that are not there (or not what they should be).
_DAMAGED = ("Could not read enough bytes from file", "Corrupt database file", "checksum", "not a valid DuckDB database")


def _damaged(workspace: Workspace, exc: BaseException) -> WorkspaceError:
    return WorkspaceError(
        f"{workspace.db_path}: the database is damaged, cut short or overwritten (a copy that did not finish, a "
        f"full disk?): {' '.join(str(exc).split())[:200]}, and nothing was written to it; restore it from a "
        f"backup, or move it aside (mv {workspace.db_path} {workspace.db_path}.damaged) and ingest the recordings "
        "again with the same command, which makes a new one")


def not_writable(workspace: Workspace) -> WorkspaceError | None:
    """The error to give where this user cannot write the workspace (its database file, or the
    folder DuckDB writes its journal into); None where it can, or where there is no workspace yet."""
    for path in (workspace.db_path, workspace.root):
        if path.exists() and not os.access(path, os.W_OK):
            return WorkspaceError(
                f"{path}: not writable by this user (permission denied), so nothing can be written to the "
                f"workspace; make it writable (chmod -R u+w {workspace.root}) or give --workspace a writable copy "
                "(status and sql read it as it is)")
    return None


# Databases this process has found whole (`_check_whole`): checked once, at the first connection.
_whole: set[Path] = set()


def _check_whole(conn: duckdb.DuckDBPyConnection, workspace: Workspace) -> None:
    """Refuse a file cut short in its data blocks (its catalog, read on opening, survived): every
    block a table's storage names must lie within the file. Without this a read answers some
    counts and fails on others, and a writer grows the damaged file further."""
    if workspace.db_path in _whole:
        return
    try:
        block_size = conn.execute("SELECT block_size FROM pragma_database_size() "
                                  "WHERE database_name = current_database()").fetchone()[0]
        tables = conn.execute("SELECT table_name FROM duckdb_tables() WHERE NOT internal "
                              "AND database_name = current_database()").fetchall()
        top = max([conn.execute("SELECT coalesce(max(block_id), -1) FROM pragma_storage_info(?) WHERE persistent",
                                [name]).fetchone()[0] for (name,) in tables], default=-1)
    except duckdb.Error as exc:
        if any(words in str(exc) for words in _DAMAGED):
            raise _damaged(workspace, exc) from exc
        raise
    size = workspace.db_path.stat().st_size
    # three 4 KiB headers, then whole blocks: DuckDB never writes part of one
    if (size - 3 * 4096) % block_size:
        raise _damaged(workspace, RuntimeError(f"its {size} bytes end inside a block of {block_size}"))
    if (top + 1) * block_size + 3 * 4096 > size:
        raise _damaged(workspace, RuntimeError(f"block {top} of {block_size} bytes lies beyond its {size} bytes"))
    _whole.add(workspace.db_path)


def connect(workspace: Workspace, read_only: bool = False, wait_s: float | None = None,
            config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """Open the workspace database, waiting while another process (or another thread of this one,
    with the other kind of connection) has it open: for as long as a holder on this machine lives
    (up to LOCK_HOLDER_WAIT_S), LOCK_WAIT_S for one it cannot see, and never past `wait_s` (or
    CETA2VEC_LOCK_WAIT_S) where given."""
    wait_s = lock_wait_s() if wait_s is None else wait_s
    if read_only and not workspace.db_path.exists():
        raise WorkspaceError(f"no ceta2vec workspace at {workspace.root} (run `ceta2vec ingest` first)")
    if not read_only:
        if (refused := not_writable(workspace)) is not None:
            raise refused  # before DuckDB: it would open the file and fail only at the first write
        workspace.create()
    started = time.monotonic()
    delay = 0.05
    told = False
    while True:
        try:
            conn = duckdb.connect(str(workspace.db_path), read_only=read_only, config=config or {})
            try:
                _check_whole(conn, workspace)
            except BaseException:
                conn.close()
                raise
            if workspace.storage.remote:  # read_parquet over a segment dataset kept at an fsspec URL
                conn.register_filesystem(workspace.storage.filesystem)
            return conn
        except duckdb.Error as exc:
            if any(words in str(exc) for words in _DAMAGED):
                raise _damaged(workspace, exc) from exc  # refused at the door: no write can follow
            if "Permission denied" in str(exc):
                raise WorkspaceError(
                    f"{workspace.db_path}: cannot be opened by this user (permission denied); give this user "
                    f"access (chmod -R u+rw {workspace.root}) or run the command as the workspace's owner") from None
            if not isinstance(exc, (duckdb.IOException, duckdb.ConnectionException)) or not _is_lock_conflict(exc):
                raise
            holder = lock_holder(exc)
            waited = time.monotonic() - started
            limit = wait_s if wait_s is not None else LOCK_HOLDER_WAIT_S if holder else LOCK_WAIT_S
            if waited >= limit:
                raise _locked(workspace, holder, waited, exc) from exc
            if holder and not told and waited >= min(LOCK_WAIT_S, limit / 2):
                told = True  # a long wait says what it waits for
                log.warning("%s: waiting for PID %d (%s), which holds its lock", workspace.db_path, holder[0],
                            " ".join(holder[1].split()[:6]))
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


@contextmanager
def writing(workspace: Workspace) -> Iterator[duckdb.DuckDBPyConnection]:
    """The one way to write: inside a Prefect flow run, flow runs take turns through the
    `ceta2vec-duckdb-writer` global concurrency limit; everywhere, `connect` waits for the file lock."""
    with _writer_turn():
        conn = connect(workspace)
        try:
            bind_views_here(conn, workspace)
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
        bind_views_here(conn, workspace, temporary=True)
        yield conn
    finally:
        conn.close()


# Extensions neither installed (a download) nor loaded on demand by a query someone typed.
SANDBOX_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


# Limits of SQL someone typed (`ceta2vec sql --timeout/--memory-limit` override them): a query
# such as `SELECT count(*) FROM range(1e12)` otherwise runs until killed.
QUERY_TIMEOUT_S = 300.0


def default_query_memory() -> str:
    """Half of this machine's memory: a runaway query stops long before the machine swaps."""
    return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2 >> 20}MiB"


class QueryLimitExceeded(ValueError):
    """SQL someone typed that ran past its time or memory limit, and was stopped."""


@contextmanager
def querying(workspace: Workspace, timeout_s: float | None = None,
             memory_limit: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection for SQL someone typed: files outside the workspace's data folders
    cannot be read or written (no URLs, no /etc), and the query cannot switch that back on.

    The block is stopped (`QueryLimitExceeded`) once it has run `timeout_s` seconds (default
    QUERY_TIMEOUT_S; 0: never) or needs more than `memory_limit` (a DuckDB size such as "4GB";
    default: half the machine's memory). Nothing spills to disk: the sandbox writes no file, a
    temporary one included."""
    _upgraded(workspace)
    timeout_s = QUERY_TIMEOUT_S if timeout_s is None else timeout_s
    memory_limit = memory_limit or default_query_memory()
    conn = connect(workspace, read_only=True, config=SANDBOX_CONFIG)
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        conn.interrupt()

    timer = threading.Timer(timeout_s, stop) if timeout_s else None
    try:
        bind_views_here(conn, workspace, temporary=True)  # before file access is locked down
        try:
            conn.execute("SET memory_limit = ?", [memory_limit])
        except duckdb.Error:
            raise QueryLimitExceeded(
                f"--memory-limit takes a size such as 4GB or 512MB, not {memory_limit!r}") from None
        conn.execute("SET temp_directory = ''")
        # Data folders, not the workspace root: an allowed folder is writable at the engine level,
        # and the database file's own folder must not be.
        folders = [f"{str(workspace.storage.root).rstrip('/')}/", f"{workspace.embeddings_dir}/"]
        conn.execute("SET allowed_directories = ?", [folders])
        conn.execute("SET enable_external_access = false")
        conn.execute("SET lock_configuration = true")
        if timer:
            timer.daemon = True
            timer.start()
        yield conn
    except duckdb.InterruptException:
        if not fired.is_set():
            raise  # not ours: a Ctrl-C
        raise QueryLimitExceeded(f"the query ran past its time limit of {timeout_s:g} s and was stopped; "
                                 "narrow it, or give a longer --timeout SECONDS (0: no limit)") from None
    except (duckdb.OutOfMemoryException, MemoryError):
        raise QueryLimitExceeded(f"the query needed more memory than its limit of {memory_limit} and was stopped; "
                                 "narrow it, or give a larger --memory-limit (such as 16GB)") from None
    finally:
        if timer:
            timer.cancel()
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


def bind_views_here(conn: duckdb.DuckDBPyConnection, workspace: Workspace, temporary: bool = False) -> list[str]:
    """Point the views over Parquet files (`segment_audio`, `frame_vectors`) at this workspace's
    folder when they name another: they hold absolute paths, so a copied or moved workspace would
    read its old place (or nothing). A writing connection re-creates them in the database; a
    reading one may not write, so it shadows them with temporary views of its own (the next
    writing command fixes them for good). Returns the views re-bound."""
    stored = dict(conn.execute(
        "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal AND database_name <> 'temp' "
        "AND view_name IN ('segment_audio', 'frame_vectors')").fetchall())
    if not stored:
        return []
    wanted = {"segment_audio": (workspace.segments_glob, segment_audio_view, lambda: bool(workspace.storage.files())),
              "frame_vectors": (workspace.frames_glob(), frame_vectors_view,
                                lambda: any(workspace.embeddings_dir.glob("*/frames/*.parquet")))}
    rebound = []
    for name, (glob, ddl, files_here) in wanted.items():
        quoted = "'" + glob.replace("'", "''") + "'"
        # read_parquet binds its glob when the view is made: with no file here the old view stays
        if name in stored and quoted not in stored[name] and files_here():
            statement = ddl(glob)
            if temporary:
                statement = statement.replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW", 1)
            conn.execute(statement)
            rebound.append(name)
    return rebound


def register_ids(conn: duckdb.DuckDBPyConnection, ids: list[str], name: str = "report_ids") -> str:
    """`ids` as a temporary table (segment_id, position) to join on, keeping their order."""
    conn.register(name, pa.table({"segment_id": pa.array(ids, pa.string()),
                                  "position": pa.array(np.arange(len(ids), dtype=np.int64))}))
    return name
