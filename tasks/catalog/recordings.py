"""The ingest's bookkeeping: which files were seen, which recordings and segments are stored,
what went wrong with which file, the labels, and the dataset settings a workspace is fixed to.

Every write here runs on a `database.writing` connection; `commit_recording` publishes a staged
Parquet file and records it in one transaction, so a crash leaves either both or an orphan file
that `remove_orphans` deletes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np

from schemas.arrow import SEGMENT_METADATA_COLUMNS
from schemas.records import LabelRow, StagedRecording
from tasks.catalog.label_files import assign_labels
from tasks.workspace import Workspace
from tasks.workspace.database import DATASET_KEYS, WorkspaceError, insert, register_ids, transaction
from tasks.workspace.staging import remove_leftovers


@dataclass(frozen=True)
class SegmentRef:
    """Where one segment's samples are: its Parquet file (path or URL) and row."""

    segment_id: str
    file: str  # Parquet path or URL (Workspace.segment_file)
    row: int  # row number in the file
    valid_samples: int


def dataset_config(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    rows = conn.execute("SELECT key, value FROM workspace_config").fetchall()
    return {k: v for k, v in rows if k in DATASET_KEYS}


def ensure_dataset_config(conn: duckdb.DuckDBPyConnection, wanted: dict[str, str], fix: bool = True) -> None:
    """Refuse settings that would mix into a workspace made with others; with `fix`, record them
    when the workspace has none yet (the ingest does so with its first recording, so a run that
    stores nothing leaves the workspace free to take other settings).

    A key missing beside recorded ones is not a clash: a run killed while recording them could
    leave some (`insert` now writes all rows or none), and the missing ones are recorded."""
    current = dataset_config(conn)
    clashes = [f"{k}: workspace has {current[k]}, asked for {wanted[k]}" for k in wanted
               if k in current and current[k] != wanted[k]]
    if clashes:
        raise WorkspaceError(
            "this workspace's segments were made with other settings ("
            + "; ".join(clashes)
            + "). Use the workspace's settings or a new --workspace."
        )
    missing = [{"key": k, "value": v} for k, v in wanted.items() if k not in current]
    if fix and missing:
        insert(conn, "workspace_config", missing)


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


def start_run(conn: duckdb.DuckDBPyConnection, run_id: str, flow_run_id: str | None, settings: dict,
              writer_tag: str | None = None) -> None:
    """The run's row, 'running' until `finish_run`; `writer_tag` names the process that runs it."""
    conn.execute(
        "INSERT INTO ingest_runs (run_id, flow_run_id, started_at, settings, writer_tag) VALUES (?, ?, ?, ?, ?)",
        [run_id, flow_run_id, _now(), json.dumps(settings, default=str), writer_tag],
    )


def finish_run(conn: duckdb.DuckDBPyConnection, run_id: str, counts: dict[str, float],
               status: str = "completed") -> None:
    conn.execute(
        """UPDATE ingest_runs SET finished_at = ?, files_seen = ?, ingested = ?, skipped = ?, duplicates = ?,
               failed = ?, segments_added = ?, audio_seconds_added = ?, bytes_added = ?, status = ?
           WHERE run_id = ?""",
        [
            _now(), counts["files_seen"], counts["ingested"], counts["skipped"], counts["duplicates"],
            counts["failed"], counts["segments_added"], counts["audio_seconds_added"], counts["bytes_added"], status,
            run_id,
        ],
    )


def unfinished_runs(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, str | None]]:
    """(run_id, writer_tag) of the runs still marked 'running'."""
    return conn.execute("SELECT run_id, writer_tag FROM ingest_runs WHERE status = 'running' ORDER BY started_at"
                        ).fetchall()


def mark_interrupted(conn: duckdb.DuckDBPyConnection, run_ids: list[str]) -> None:
    """Runs whose process is gone (killed, or stopped by a signal before it could say so)."""
    if run_ids:
        conn.execute("UPDATE ingest_runs SET status = 'interrupted' WHERE status = 'running' AND run_id IN "
                     "(SELECT unnest(?::VARCHAR[]))", [run_ids])


def holds_only_run(conn: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    """Whether the database holds nothing but run `run_id` and its error rows: no recording, no
    source file, no other run (so that removing the workspace loses nobody's work)."""
    return bool(conn.execute(
        """SELECT (SELECT count(*) FROM recordings) = 0 AND (SELECT count(*) FROM source_files) = 0
                  AND (SELECT count(*) FROM ingest_runs WHERE run_id <> ?) = 0
                  AND (SELECT count(*) FROM ingest_errors WHERE run_id <> ?) = 0""", [run_id, run_id]).fetchone()[0])


def record_problem(
    conn: duckdb.DuckDBPyConnection, path: str, stage: str, reason: str, run_id: str,
    severity: str = "error", size_bytes: int | None = None,
) -> None:
    insert(conn, "ingest_errors", [{"path": path, "stage": stage, "severity": severity, "reason": reason,
                                    "size_bytes": size_bytes, "run_id": run_id, "occurred_at": _now()}],
           on_conflict="replace")


def record_duplicate(
    conn: duckdb.DuckDBPyConnection, path: str, size_bytes: int, mtime_ns: int, content_hash: str, recording_id: str
) -> bool:
    """Record `path` as repeating `recording_id`; False when it is that recording's own path
    (a concurrent run committed it after this one looked), which is no duplicate."""
    if conn.execute("SELECT 1 FROM source_files WHERE path = ? AND recording_id = ? AND status = 'ingested'",
                    [path, recording_id]).fetchone():
        return False
    insert(conn, "source_files", [{"path": path, "size_bytes": size_bytes, "mtime_ns": mtime_ns,
                                   "content_hash": content_hash, "recording_id": recording_id,
                                   "status": "duplicate", "seen_at": _now()}], on_conflict="replace")
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
        insert(conn, "recordings", [{
            "recording_id": staged.recording_id, "content_hash": staged.content_hash, "path": staged.path,
            "file_name": Path(staged.path).name, "size_bytes": staged.size_bytes, "format": staged.format,
            "subtype": staged.subtype, "sample_rate": staged.sample_rate, "channels": staged.channels,
            "frames": staged.frames, "duration_s": staged.duration_s, "start_time": staged.start_time,
            "start_time_source": staged.start_time_source, "site": staged.site,
            "partition_date": staged.partition_date, "stored_sample_rate": staged.stored_sample_rate,
            "channel_policy": staged.channel_policy, "segment_count": staged.segment_count,
            "stored_bytes": stored_bytes, "parquet_path": staged.dataset_file, "warnings": staged.warnings,
            "ingest_run_id": run_id, "ingested_at": _now(),
        }])
        if staged.staged_file:
            conn.execute(
                f"""INSERT INTO segments ({columns}, site, date, parquet_path)
                    SELECT {columns}, ? AS site, ? AS date, ? AS parquet_path
                    FROM read_parquet(?)""",
                [staged.site, staged.partition_date, staged.dataset_file, str(final)],
            )
        insert(conn, "source_files", [{"path": staged.path, "size_bytes": staged.size_bytes,
                                       "mtime_ns": staged.mtime_ns, "content_hash": staged.content_hash,
                                       "recording_id": staged.recording_id, "status": "ingested",
                                       "seen_at": _now()}], on_conflict="replace")
        conn.execute("DELETE FROM ingest_errors WHERE path = ?", [staged.path])
        for warning in staged.warnings:
            # One row per kind of warning, so the (path, stage) key keeps them apart.
            insert(conn, "ingest_errors", [{"path": staged.path, "stage": f"validate:{_warning_kind(warning)}",
                                            "severity": "warning", "reason": warning,
                                            "size_bytes": staged.size_bytes, "run_id": run_id,
                                            "occurred_at": _now()}], on_conflict="replace")
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
        columns = ("recording_id", "label_column", "label_value", "start_s", "end_s", "labels_file")
        insert(conn, "labels", [dict(zip(columns, row)) for row in rows])
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


def missing_segment_files(conn: duckdb.DuckDBPyConnection, workspace: Workspace) -> list[str]:
    """Dataset files (relative, `segments/…`) that recordings claim and that are not there."""
    present = set(workspace.storage.files())
    return [path for (path,) in conn.execute(
        "SELECT parquet_path FROM recordings WHERE segment_count > 0 ORDER BY parquet_path").fetchall()
        if path not in present]


def describe_missing(missing: list[str]) -> str:
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return (f"{len(missing)} segment file(s) of this workspace are missing ({shown}); restore them from a "
            "backup, or ingest the recordings again into a new --workspace")


def training_segments(conn: duckdb.DuckDBPyConnection, workspace: Workspace, exclude: list[str],
                      max_clipped_fraction: float, min_valid_seconds: float) -> list[tuple[str, str, int, float, int, float]]:
    """(segment id, Parquet path, row in file, valid seconds, sample rate, activity dB or NaN) of
    every segment fit to train on: not silent, no NaN/Inf, not clipped beyond the limit, long
    enough, and not from an excluded recording (by id or file name). A missing segment file is
    refused, not skipped: the join below would quietly train on the rest."""
    if missing := missing_segment_files(conn, workspace):
        raise WorkspaceError(describe_missing(missing))
    return conn.execute(
        """
        SELECT s.segment_id, s.parquet_path, p.file_row_number, s.valid_s, s.sample_rate,
               coalesce(a.activity_db, 'NaN'::DOUBLE)
        FROM segments s
        JOIN recordings r USING (recording_id)
        LEFT JOIN segment_activity a ON a.segment_id = s.segment_id
        JOIN read_parquet(?, file_row_number = true, filename = true) p
          ON p.segment_id = s.segment_id
        WHERE NOT s.is_silent AND s.nonfinite_count = 0 AND s.clipped_fraction <= ?
          AND s.valid_s >= ?
          AND r.recording_id NOT IN (SELECT unnest(?::VARCHAR[]))
          AND r.file_name NOT IN (SELECT unnest(?::VARCHAR[]))
        ORDER BY s.segment_id
        """,
        [workspace.segments_glob, max_clipped_fraction, min_valid_seconds, exclude, exclude],
    ).fetchall()


def has_segment(conn: duckdb.DuckDBPyConnection, segment_id: str) -> bool:
    return conn.execute("SELECT count(*) FROM segments WHERE segment_id = ?", [segment_id]).fetchone()[0] > 0


def segment_refs(conn: duckdb.DuckDBPyConnection, workspace: Workspace, segment_ids: list[str]) -> list[SegmentRef]:
    rows = conn.execute(
        """SELECT s.segment_id, s.parquet_path, p.file_row_number, round(s.valid_s * s.sample_rate)::BIGINT
           FROM segments s JOIN read_parquet(?, file_row_number = true) p USING (segment_id)
           WHERE s.segment_id IN (SELECT unnest(?))""", [workspace.segments_glob, segment_ids]).fetchall()
    by_id = {sid: SegmentRef(sid, workspace.segment_file(path), int(row), int(valid)) for sid, path, row, valid in rows}
    return [by_id[s] for s in segment_ids]


@dataclass
class SegmentInfo:
    """Metadata of segments, in the order asked for."""

    segment_id: list[str]
    recording_id: list[str]
    recording: list[str]  # file name
    site: list[str]
    start_time: list[str]  # ISO-8601 UTC, "" when unknown
    hour_utc: np.ndarray  # float hour of day of the segment's start (UTC), NaN when unknown
    start_s: np.ndarray
    valid_s: np.ndarray
    rms_dbfs: np.ndarray
    label: list[str]  # "" unlabelled; several values of the column joined with " + "

    def __len__(self) -> int:
        return len(self.segment_id)


def segment_info(conn: duckdb.DuckDBPyConnection, ids: list[str], label_column: str | None) -> SegmentInfo:
    name = register_ids(conn, ids)
    table = conn.execute(
        f"""SELECT s.segment_id, s.recording_id, r.file_name, s.site,
                   coalesce(strftime(s.start_time AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ'), '') AS start_time,
                   CASE WHEN s.start_time IS NULL THEN 'NaN'::DOUBLE
                        ELSE extract('epoch' FROM s.start_time) % 86400 / 3600.0 END AS hour_utc,
                   s.start_s, s.valid_s, s.rms_dbfs,
                   coalesce((SELECT string_agg(DISTINCT l.label_value, ' + ' ORDER BY l.label_value)
                             FROM segment_labels l WHERE l.segment_id = s.segment_id AND l.label_column = ?), '') AS label
            FROM {name} w JOIN segments s USING (segment_id) JOIN recordings r USING (recording_id)
            ORDER BY w.position""", [label_column or ""]).to_arrow_table()
    conn.unregister(name)
    if table.num_rows != len(ids):
        found = set(table.column("segment_id").to_pylist())
        missing = [s for s in ids if s not in found][:3]
        raise WorkspaceError(f"segments {missing} have vectors but no row in `segments`: the workspace is inconsistent")
    col = {n: table.column(n) for n in table.column_names}
    return SegmentInfo(
        segment_id=col["segment_id"].to_pylist(), recording_id=col["recording_id"].to_pylist(),
        recording=col["file_name"].to_pylist(), site=col["site"].to_pylist(), start_time=col["start_time"].to_pylist(),
        hour_utc=col["hour_utc"].to_numpy().astype(np.float64), start_s=col["start_s"].to_numpy().astype(np.float64),
        valid_s=col["valid_s"].to_numpy().astype(np.float64), rms_dbfs=col["rms_dbfs"].to_numpy().astype(np.float32),
        label=col["label"].to_pylist(),
    )


def segment_labels_of(conn: duckdb.DuckDBPyConnection, recording_id: str, label_column: str) -> list[dict]:
    """A recording's labels of one column (event spans with start_s/end_s, or whole-recording ones)."""
    return [dict(label=v, start_s=a, end_s=b) for v, a, b in conn.execute(
        "SELECT label_value, start_s, end_s FROM labels WHERE recording_id = ? AND label_column = ? ORDER BY start_s",
        [recording_id, label_column]).fetchall()]


def data_summary(conn: duckdb.DuckDBPyConnection) -> dict:
    """Counts for the report's summary table."""
    recordings, hours, sites, first, last = conn.execute(
        "SELECT count(*), coalesce(sum(duration_s), 0) / 3600, count(DISTINCT site), min(start_time), max(start_time) "
        "FROM recordings").fetchone()
    segments, audio_hours = conn.execute("SELECT count(*), coalesce(sum(valid_s), 0) / 3600 FROM segments").fetchone()
    return {"recordings": recordings, "recording_hours": float(hours), "sites": sites, "segments": segments,
            "segment_hours": float(audio_hours), "first_start": first, "last_start": last}


def recording_segments(conn: duckdb.DuckDBPyConnection, recording_id: str) -> list[tuple[str, float, float]]:
    """(segment_id, start_s, valid_s) of one channel of a recording (the lowest), in time order."""
    return [(r[0], float(r[1]), float(r[2])) for r in conn.execute(
        """SELECT segment_id, start_s, valid_s FROM segments WHERE recording_id = ?
           AND channel = (SELECT min(channel) FROM segments WHERE recording_id = ?) ORDER BY start_s""",
        [recording_id, recording_id]).fetchall()]


def configured_segment_seconds(conn: duckdb.DuckDBPyConnection) -> float | None:
    """The dataset's nominal segment length (what a padded final segment is padded to), None when not recorded."""
    row = conn.execute("SELECT value FROM workspace_config WHERE key = 'segment_seconds'").fetchone()
    try:
        return float(row[0]) if row else None
    except ValueError:
        return None


def label_values(conn: duckdb.DuckDBPyConnection, ids: list[str], label_column: str) -> list[str]:
    """One label column's value per segment in the order of `ids` ("" unlabelled; several joined with " + ")."""
    name = register_ids(conn, ids)
    rows = conn.execute(
        f"""SELECT coalesce((SELECT string_agg(DISTINCT l.label_value, ' + ' ORDER BY l.label_value)
                             FROM segment_labels l WHERE l.segment_id = w.segment_id AND l.label_column = ?), '')
            FROM {name} w ORDER BY w.position""", [label_column]).fetchall()
    conn.unregister(name)
    return [r[0] for r in rows]


def label_column_names(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Every label column stored, by name (labelled segments or not)."""
    return [r[0] for r in conn.execute("SELECT DISTINCT label_column FROM labels ORDER BY 1").fetchall()]
