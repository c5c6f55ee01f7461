"""The workspace's DuckDB file: connections, schema, and the ingest commits.

DuckDB lets one process write a database file, or several read it, at a time. Writers here hold
their connection only for the length of one commit, and every connection retries while another
process holds the lock, so a query run during an ingest waits briefly and then succeeds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from schemas.arrow import SEGMENT_METADATA_COLUMNS
from schemas.tables import SCHEMA_VERSION, TABLES, VIEWS, segment_audio_view
from tasks.ingest.labels import LabelRow, assign_labels
from tasks.ingest.recording import StagedRecording
from tasks.workspace import Workspace
from tasks.workspace.staging import remove_leftovers

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


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All of the block's writes, or none of them."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except duckdb.Error:
            pass  # a failed COMMIT (a full disk) has rolled back already; the first error is the one to tell
        raise


@contextmanager
def reading(workspace: Workspace) -> Iterator[duckdb.DuckDBPyConnection]:
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
    conn = connect(workspace, read_only=True, config=SANDBOX_CONFIG)
    try:
        # Data folders, not the workspace root: an allowed folder is writable at the engine level,
        # and the database file's own folder must not be.
        folders = [f"{str(workspace.storage.root).rstrip('/')}/", f"{workspace.root / 'embeddings'}/"]
        conn.execute("SET allowed_directories = ?", [folders])
        conn.execute("SET enable_external_access = false")
        conn.execute("SET lock_configuration = true")
        yield conn
    finally:
        conn.close()


def apply_schema(conn: duckdb.DuckDBPyConnection, workspace: Workspace) -> None:
    version = None
    if conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'workspace_config'"
    ).fetchone()[0]:
        row = conn.execute("SELECT value FROM workspace_config WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else None
    if version is not None and version > SCHEMA_VERSION:
        raise WorkspaceError(
            f"{workspace.db_path} was written by a newer ceta2vec (schema {version} > {SCHEMA_VERSION}); upgrade ceta2vec"
        )
    for ddl in TABLES + VIEWS:
        conn.execute(ddl)
    conn.execute(
        "INSERT OR REPLACE INTO workspace_config VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
    )
    refresh_segment_audio_view(conn, workspace)


def refresh_segment_audio_view(conn: duckdb.DuckDBPyConnection, workspace: Workspace) -> None:
    # read_parquet binds its glob when the view is created, so the view only exists once a file does.
    if workspace.storage.files():
        conn.execute(segment_audio_view(workspace.segments_glob))


def dataset_config(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    rows = conn.execute("SELECT key, value FROM workspace_config").fetchall()
    return {k: v for k, v in rows if k in DATASET_KEYS}


def ensure_dataset_config(conn: duckdb.DuckDBPyConnection, wanted: dict[str, str], fix: bool = True) -> None:
    """Refuse settings that would mix into a workspace made with others; with `fix`, record them
    when the workspace has none yet (the ingest does so with its first recording, so a run that
    stores nothing leaves the workspace free to take other settings)."""
    current = dataset_config(conn)
    if not current:
        if fix:
            conn.executemany("INSERT INTO workspace_config VALUES (?, ?)", list(wanted.items()))
        return
    clashes = [f"{k}: workspace has {current[k]}, asked for {wanted[k]}" for k in wanted if current.get(k) != wanted[k]]
    if clashes:
        raise WorkspaceError(
            "this workspace's segments were made with other settings ("
            + "; ".join(clashes)
            + "). Use the workspace's settings or a new --workspace."
        )


def known_sources(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int, str]]:
    """{path: (size_bytes, mtime_ns, recording_id)} of every path seen before."""
    rows = conn.execute("SELECT path, size_bytes, mtime_ns, recording_id FROM source_files").fetchall()
    return {path: (size, mtime, rec) for path, size, mtime, rec in rows}


def recordings_by_hash(conn: duckdb.DuckDBPyConnection, hashes: Iterable[str]) -> dict[str, str]:
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    rows = conn.execute(
        "SELECT content_hash, recording_id FROM recordings WHERE content_hash IN (SELECT unnest(?))", [wanted]
    ).fetchall()
    return dict(rows)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def start_run(conn: duckdb.DuckDBPyConnection, run_id: str, flow_run_id: str | None, settings: dict) -> None:
    conn.execute(
        "INSERT INTO ingest_runs (run_id, flow_run_id, started_at, settings) VALUES (?, ?, ?, ?)",
        [run_id, flow_run_id, _now(), json.dumps(settings, default=str)],
    )


def finish_run(conn: duckdb.DuckDBPyConnection, run_id: str, counts: dict[str, float]) -> None:
    conn.execute(
        """UPDATE ingest_runs SET finished_at = ?, files_seen = ?, ingested = ?, skipped = ?, duplicates = ?,
               failed = ?, segments_added = ?, audio_seconds_added = ?, bytes_added = ?
           WHERE run_id = ?""",
        [
            _now(), counts["files_seen"], counts["ingested"], counts["skipped"], counts["duplicates"],
            counts["failed"], counts["segments_added"], counts["audio_seconds_added"], counts["bytes_added"], run_id,
        ],
    )


def record_problem(
    conn: duckdb.DuckDBPyConnection, path: str, stage: str, reason: str, run_id: str,
    severity: str = "error", size_bytes: int | None = None,
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO ingest_errors VALUES (?, ?, ?, ?, ?, ?, ?)",
        [path, stage, severity, reason, size_bytes, run_id, _now()],
    )


def record_duplicate(
    conn: duckdb.DuckDBPyConnection, path: str, size_bytes: int, mtime_ns: int, content_hash: str, recording_id: str
) -> bool:
    """Record `path` as repeating `recording_id`; False when it is that recording's own path
    (a concurrent run committed it after this one looked), which is no duplicate."""
    if conn.execute("SELECT 1 FROM source_files WHERE path = ? AND recording_id = ? AND status = 'ingested'",
                    [path, recording_id]).fetchone():
        return False
    conn.execute(
        "INSERT OR REPLACE INTO source_files VALUES (?, ?, ?, ?, ?, 'duplicate', ?)",
        [path, size_bytes, mtime_ns, content_hash, recording_id, _now()],
    )
    conn.execute("DELETE FROM ingest_errors WHERE path = ? AND severity = 'error'", [path])
    return True


def commit_recording(conn: duckdb.DuckDBPyConnection, workspace: Workspace, staged: StagedRecording,
                     run_id: str) -> int | None:
    """Publish a staged file and record it, in that order; returns the bytes stored, or None when
    the recording was committed already (by a concurrent run, or under another path in this one):
    the staged file is dropped then, and the caller counts it as what it is, not as ingested.

    A crash after the rename but before COMMIT leaves a file no recording points at: the
    `segment_audio` view ignores it, `remove_orphans` deletes it, and the re-run rewrites it.
    """
    # The writer's connection holds the database file, so nobody commits between this and ours.
    if conn.execute("SELECT 1 FROM recordings WHERE recording_id = ?", [staged.recording_id]).fetchone():
        if staged.staged_file:
            Path(staged.staged_file).unlink(missing_ok=True)
        return None
    final = workspace.segment_file(staged.dataset_file)
    stored_bytes = 0
    if staged.staged_file:
        stored_bytes = workspace.storage.publish(Path(staged.staged_file), staged.dataset_file)
    columns = ", ".join(SEGMENT_METADATA_COLUMNS)
    with transaction(conn):
        conn.execute(
            "INSERT INTO recordings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                staged.recording_id, staged.content_hash, staged.path, Path(staged.path).name, staged.size_bytes,
                staged.format, staged.subtype, staged.sample_rate, staged.channels, staged.frames,
                staged.duration_s, staged.start_time, staged.start_time_source, staged.site,
                staged.partition_date, staged.stored_sample_rate, staged.channel_policy, staged.segment_count,
                stored_bytes, staged.dataset_file, staged.warnings, run_id, _now(),
            ],
        )
        if staged.staged_file:
            conn.execute(
                f"""INSERT INTO segments
                    SELECT {columns}, ? AS site, ? AS date, ? AS parquet_path
                    FROM read_parquet(?)""",
                [staged.site, staged.partition_date, staged.dataset_file, str(final)],
            )
        conn.execute(
            "INSERT OR REPLACE INTO source_files VALUES (?, ?, ?, ?, ?, 'ingested', ?)",
            [staged.path, staged.size_bytes, staged.mtime_ns, staged.content_hash, staged.recording_id, _now()],
        )
        conn.execute("DELETE FROM ingest_errors WHERE path = ?", [staged.path])
        for warning in staged.warnings:
            # One row per kind of warning, so the (path, stage) key keeps them apart.
            conn.execute(
                "INSERT OR REPLACE INTO ingest_errors VALUES (?, ?, 'warning', ?, ?, ?, ?)",
                [staged.path, f"validate:{_warning_kind(warning)}", warning, staged.size_bytes, run_id, _now()],
            )
    return stored_bytes


def _warning_kind(warning: str) -> str:
    for kind in ("truncated", "non-finite", "clipped", "shorter"):
        if kind in warning:
            return kind
    return "other"


def replace_labels(
    conn: duckdb.DuckDBPyConnection, labels_file: str, recording_ids: Iterable[str], paired: list[tuple[str, LabelRow]]
) -> int:
    """Make the labels from `labels_file` for these recordings exactly `paired` (re-runs never duplicate)."""
    ids = sorted(set(recording_ids))
    with transaction(conn):
        conn.execute(
            "DELETE FROM labels WHERE labels_file = ? AND recording_id IN (SELECT unnest(?))", [labels_file, ids]
        )
        rows = sorted({(rec, r.label_column, r.label_value, r.start_s, r.end_s, labels_file) for rec, r in paired},
                      key=lambda t: tuple("" if v is None else str(v) for v in t))
        if rows:
            conn.executemany("INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


def apply_labels_file(conn: duckdb.DuckDBPyConnection, labels_file: str, rows: list[LabelRow],
                      paths: list[str] | None = None) -> tuple[int, int, list[str]]:
    """Store a labels CSV's rows for the recordings its `file`s name (among `paths`, default: every
    path ever ingested); returns (label rows stored, recordings labelled, unmatched file names)."""
    known = known_sources(conn)
    sources = {p: known[p][2] for p in (paths if paths is not None else known) if p in known}
    paired, unmatched = assign_labels(rows, sources)
    stored = replace_labels(conn, str(Path(labels_file).resolve()), sources.values(), paired)
    return stored, len({r for r, _ in paired}), unmatched


def remove_orphans(conn: duckdb.DuckDBPyConnection, workspace: Workspace) -> list[Path | str]:
    """Delete files a crash left behind: staged files of processes that are gone (a concurrent
    run's are left alone), and dataset files no recording claims."""
    removed: list[Path | str] = list(remove_leftovers(workspace.staging_dir))
    claimed = {row[0] for row in conn.execute("SELECT parquet_path FROM recordings").fetchall()}
    for relative in workspace.storage.files():
        if relative not in claimed:
            workspace.storage.remove(relative)
            removed.append(workspace.segment_file(relative))
    return removed


def summary_of(workspace: Workspace) -> dict:
    """`workspace_summary` of a workspace, all zeros where there is none yet (nothing created)."""
    if workspace.exists():
        with reading(workspace) as conn:
            return workspace_summary(conn)
    with duckdb.connect() as conn:
        for ddl in TABLES + VIEWS:
            conn.execute(ddl)
        return workspace_summary(conn)


def workspace_summary(conn: duckdb.DuckDBPyConnection) -> dict:
    """What the workspace holds, for `ceta2vec status` and the flow's summary artifact."""
    recordings, hours, stored, sites = conn.execute(
        "SELECT count(*), coalesce(sum(duration_s), 0) / 3600, coalesce(sum(stored_bytes), 0), count(DISTINCT site) FROM recordings"
    ).fetchone()
    segments, flagged_silent, flagged_nonfinite, stored_hours = conn.execute(
        """SELECT count(*), count(*) FILTER (is_silent), count(*) FILTER (nonfinite_count > 0),
                  coalesce(sum(valid_s), 0) / 3600 FROM segments"""
    ).fetchone()
    errors, warnings = conn.execute(
        "SELECT count(*) FILTER (severity = 'error'), count(*) FILTER (severity = 'warning') FROM ingest_errors"
    ).fetchone()
    duplicates = conn.execute("SELECT count(*) FROM source_files WHERE status = 'duplicate'").fetchone()[0]
    labelled = conn.execute("SELECT count(DISTINCT recording_id) FROM labels").fetchone()[0]
    config = {k: v for k, v in conn.execute("SELECT key, value FROM workspace_config").fetchall()}
    return {
        "recordings": recordings,
        "recording_hours": float(hours),
        "sites": sites,
        "segments": segments,
        "segment_audio_hours": float(stored_hours),
        "silent_segments": flagged_silent,
        "nonfinite_segments": flagged_nonfinite,
        "stored_bytes": int(stored),
        "bytes_per_audio_hour": float(stored / stored_hours) if stored_hours else 0.0,
        "duplicates": duplicates,
        "labelled_recordings": labelled,
        "errors": errors,
        "warnings": warnings,
        "config": config,
    }
