"""Annotations: labelled spans from `ceta2vec label` (CSV, Raven selection tables, the explorer's
selection export, review decisions), positive or negative, in the `annotations` table.

A row names its recording by a file name (matched like the labels CSV's `file`) or by a segment id
(the explorer's export). Re-importing a source replaces all of that source's rows in one transaction,
so importing the same file twice leaves the table as one import did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath

import duckdb

from tasks.catalog.label_files import matches
from tasks.workspace.database import insert, transaction


@dataclass(frozen=True)
class AnnotationRow:
    """One usable row of an annotation file, before it is tied to a recording."""

    row: int  # line of the file it came from (the header is line 1)
    label: str
    positive: bool
    start_s: float | None  # seconds from the recording's start; None: the whole segment `segment_id`
    end_s: float | None
    file: str | None = None  # a file name or trailing path of an ingested recording
    segment_id: str | None = None  # or a segment of the workspace


@dataclass(frozen=True)
class StoredAnnotation:
    recording_id: str
    label: str
    positive: bool
    start_s: float
    end_s: float


def _sources(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """{path: recording_id} of every path ingested (duplicates too: a user may name either copy)."""
    return dict(conn.execute("SELECT path, recording_id FROM source_files").fetchall())


def _by_file(sources: dict[str, str], wanted: str) -> set[str]:
    """Recordings a file name names: its path's trailing parts, or, for a bare stem such as a Raven
    table's `<stem>.Table.1.selections.txt`, the file name without its extension."""
    hits = {rec for path, rec in sources.items() if matches(wanted, path)}
    if not hits and not PurePosixPath(wanted).suffix:
        hits = {rec for path, rec in sources.items() if PurePosixPath(path.replace("\\", "/")).stem == wanted}
    return hits


def resolve(conn: duckdb.DuckDBPyConnection, source: str, rows: list[AnnotationRow]
            ) -> tuple[list[tuple[AnnotationRow, str, float, float]], list[str]]:
    """Tie rows to recordings: ([(row, recording_id, start_s, end_s)], one problem line per row that
    names no recording or segment of the workspace, or ends past its recording)."""
    sources = _sources(conn)
    durations = dict(conn.execute("SELECT recording_id, duration_s FROM recordings").fetchall())
    segment_ids = sorted({r.segment_id for r in rows if r.segment_id})
    segments = {sid: (rec, start, valid) for sid, rec, start, valid in conn.execute(
        "SELECT segment_id, recording_id, start_s, valid_s FROM segments WHERE segment_id IN (SELECT unnest(?))",
        [segment_ids]).fetchall()} if segment_ids else {}
    resolved, problems = [], []
    for row in rows:
        if row.segment_id:
            if row.segment_id not in segments:
                problems.append(f"{source}: row {row.row}: no segment {row.segment_id!r} in this workspace; row skipped")
                continue
            recording, seg_start, valid = segments[row.segment_id]
            start, end = (seg_start, seg_start + valid) if row.start_s is None else (row.start_s, row.end_s)
            resolved.append((row, recording, max(0.0, start), end))
            continue
        hits = _by_file(sources, row.file or "")
        if not hits:
            problems.append(f"{source}: row {row.row}: no ingested recording named {row.file!r}; row skipped")
            continue
        if len(hits) > 1:
            problems.append(f"{source}: row {row.row}: {row.file!r} names {len(hits)} recordings; give more of "
                            "its path (e.g. site/file.wav); row skipped")
            continue
        recording = hits.pop()
        if row.start_s >= durations[recording]:
            problems.append(f"{source}: row {row.row}: starts at {row.start_s:g} s, after the end of {row.file!r} "
                            f"({durations[recording]:g} s); row skipped")
            continue
        resolved.append((row, recording, row.start_s, min(row.end_s, durations[recording])))
    return resolved, problems


def replace_source(conn: duckdb.DuckDBPyConnection, source: str, kind: str,
                   resolved: list[tuple[AnnotationRow, str, float, float]]) -> int:
    """Make `source`'s annotations exactly `resolved`, in one transaction; returns rows stored."""
    now = datetime.now(timezone.utc)
    rows = {(row.row, row.label): {"source": source, "source_row": row.row, "source_kind": kind,
                                   "recording_id": recording, "label": row.label, "positive": row.positive,
                                   "start_s": float(start), "end_s": float(end), "imported_at": now}
            for row, recording, start, end in resolved}
    with transaction(conn):
        conn.execute("DELETE FROM annotations WHERE source = ?", [source])
        insert(conn, "annotations", list(rows.values()))
    return len(rows)


def annotations_of(conn: duckdb.DuckDBPyConnection, labels: list[str]) -> list[StoredAnnotation]:
    """Every annotation of these labels, in a stable order."""
    return [StoredAnnotation(*r) for r in conn.execute(
        """SELECT recording_id, label, positive, start_s, end_s FROM annotations
           WHERE label IN (SELECT unnest(?)) ORDER BY label, recording_id, start_s, end_s, positive""",
        [list(labels)]).fetchall()]


def annotation_labels(conn: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT label FROM annotations ORDER BY 1").fetchall()]


def counts_by_source(conn: duckdb.DuckDBPyConnection, source: str) -> dict[tuple[str, bool], int]:
    """{(label, positive): rows} of one source."""
    return {(label, positive): n for label, positive, n in conn.execute(
        "SELECT label, positive, count(*) FROM annotations WHERE source = ? GROUP BY ALL", [source]).fetchall()}
