"""Classifiers and their detections: the segments a classifier scores, the frame vectors and labels
it learns from, the `classifiers` and `detections` tables, and what the outputs read back.

A classify run writes its classifier row and all of its new detection rows in one transaction,
so a run killed at any point leaves no partial detections, and the next run scores what is left.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb
import numpy as np
import pyarrow as pa

from tasks.catalog.evaluations import LAYER_METRIC
from tasks.workspace import Workspace
from tasks.workspace.database import insert, transaction

DETECTION_COLUMNS = ("classifier_id", "label", "recording_id", "channel", "segment_id", "start_s", "end_s",
                     "utc_start", "score")


@dataclass(frozen=True)
class SegmentRow:
    segment_id: str
    recording_id: str
    channel: int
    start_s: float
    valid_s: float
    recording_start: datetime | None
    site: str


def segments_to_score(conn: duckdb.DuckDBPyConnection, not_scored_by: str | None = None,
                      embedded: tuple[str, int] | None = None, recording_ids: list[str] | None = None
                      ) -> list[SegmentRow]:
    """Segments, in time order per recording: those `not_scored_by` a classifier has no detection of,
    with vectors of `embedded` (model_id, layer) when the features are a model's, of `recording_ids`."""
    where, params = ["s.valid_s > 0"], []
    if not_scored_by is not None:
        where.append("s.segment_id NOT IN (SELECT segment_id FROM detections WHERE classifier_id = ?)")
        params.append(not_scored_by)
    if embedded is not None:
        where.append("s.segment_id IN (SELECT segment_id FROM embedded_segments WHERE model_id = ? AND layer = ?)")
        params += list(embedded)
    if recording_ids is not None:
        where.append("s.recording_id IN (SELECT unnest(?))")
        params.append(list(recording_ids))
    rows = conn.execute(
        f"""SELECT s.segment_id, s.recording_id, s.channel, s.start_s, s.valid_s, r.start_time, s.site
            FROM segments s JOIN recordings r USING (recording_id)
            WHERE {' AND '.join(where)} ORDER BY s.recording_id, s.channel, s.start_s""", params).fetchall()
    return [SegmentRow(r[0], r[1], int(r[2]), float(r[3]), float(r[4]), r[5], r[6]) for r in rows]


def spans_of_column(conn: duckdb.DuckDBPyConnection, label_column: str) -> list[tuple[str, str, float | None, float | None]]:
    """(recording_id, value, start_s, end_s) of a labels-table column; start/end None: the whole recording."""
    return conn.execute(
        "SELECT recording_id, label_value, start_s, end_s FROM labels WHERE label_column = ? "
        "ORDER BY recording_id, start_s NULLS FIRST, label_value", [label_column]).fetchall()


def recording_durations(conn: duckdb.DuckDBPyConnection) -> dict[str, float]:
    return dict(conn.execute("SELECT recording_id, duration_s FROM recordings").fetchall())


def best_layer_of(conn: duckdb.DuckDBPyConnection, model_id: str, label_column: str | None) -> int | None:
    """The layer `ceta2vec evaluate` scored best for the model (for `label_column` when it was evaluated)."""
    row = conn.execute(
        f"""SELECT layer FROM evaluations WHERE model_id = ? AND kind = 'model' AND features LIKE 'layer %'
            AND metric = ? AND value IS NOT NULL {'AND label_column = ?' if label_column else ''}
            ORDER BY value DESC, layer LIMIT 1""",
        [model_id, LAYER_METRIC] + ([label_column] if label_column else [])).fetchone()
    if row is None and label_column:
        return best_layer_of(conn, model_id, None)
    return None if row is None else int(row[0])


def frame_vectors(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model_id: str, layer: int,
                  segment_ids: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{segment_id: (frame times in seconds from the segment's start, (frames, dim) vectors)} of one layer,
    read from the Parquet files the embed ledger names (only those that hold these segments)."""
    files = [r[0] for r in conn.execute(
        """SELECT DISTINCT frame_file FROM embedded_segments WHERE model_id = ? AND layer = ?
           AND frame_file IS NOT NULL AND segment_id IN (SELECT unnest(?)) ORDER BY 1""",
        [model_id, layer, segment_ids]).fetchall()]
    if not files:
        return {}
    table = conn.execute(
        """SELECT segment_id, time_s, vector FROM read_parquet(?) WHERE layer = ? AND segment_id IN (SELECT unnest(?))
           ORDER BY segment_id, frame""",
        [[str(workspace.root / f) for f in files], layer, segment_ids]).to_arrow_table()
    ids = np.array(table.column("segment_id").to_pylist())
    times = table.column("time_s").to_numpy()
    vectors = table.column("vector").combine_chunks()
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    matrix = flat.reshape(len(ids), -1) if len(ids) else flat.reshape(0, 0)
    out = {}
    for sid in np.unique(ids):
        mask = ids == sid
        out[str(sid)] = (times[mask], matrix[mask])
    return out


def classifier_row(conn: duckdb.DuckDBPyConnection, classifier_id: str) -> dict | None:
    cursor = conn.execute("SELECT * FROM classifiers WHERE classifier_id = ?", [classifier_id])
    row = cursor.fetchone()
    return None if row is None else _as_dict(cursor, row)


def current_classifier(conn: duckdb.DuckDBPyConnection, label: str) -> dict | None:
    """The label's most recently trained classifier."""
    cursor = conn.execute("SELECT * FROM current_classifiers WHERE label = ?", [label])
    row = cursor.fetchone()
    return None if row is None else _as_dict(cursor, row)


def classifier_labels(conn: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT label FROM classifiers ORDER BY 1").fetchall()]


def _as_dict(cursor, row) -> dict:
    record = dict(zip([d[0] for d in cursor.description], row))
    for key in ("validation", "settings"):
        if isinstance(record.get(key), str):
            record[key] = json.loads(record[key])
    return record


def store(conn: duckdb.DuckDBPyConnection, classifier: dict, batches: Iterable[pa.Table]) -> int:
    """The classifier's row (when new) and every batch of detection rows, in one transaction: all or none.
    Windows already stored (a segment overlapping one scored before) are kept as they are."""
    written = 0
    with transaction(conn):
        if classifier_row(conn, classifier["classifier_id"]) is None:
            insert(conn, "classifiers", [{**classifier, "created_at": classifier.get("created_at")
                                          or datetime.now(timezone.utc)}])
        columns = ", ".join(DETECTION_COLUMNS)
        for batch in batches:
            conn.register("detection_batch", batch)
            try:
                conn.execute(f"INSERT OR IGNORE INTO detections ({columns}) SELECT {columns} FROM detection_batch")
            finally:
                conn.unregister("detection_batch")
            written += batch.num_rows
    return written


def detection_count(conn: duckdb.DuckDBPyConnection, classifier_id: str) -> int:
    return conn.execute("SELECT count(*) FROM detections WHERE classifier_id = ?", [classifier_id]).fetchone()[0]


def windows_above(conn: duckdb.DuckDBPyConnection, classifier_id: str, threshold: float) -> list[tuple]:
    """(recording_id, file_name, channel, start_s, end_s, score, utc_start, original sample rate) of the
    classifier's windows scoring at least `threshold`, in time order per recording and channel."""
    return conn.execute(
        """SELECT d.recording_id, r.file_name, d.channel, d.start_s, d.end_s, d.score, d.utc_start, r.sample_rate
           FROM detections d JOIN recordings r USING (recording_id)
           WHERE d.classifier_id = ? AND d.score >= ? ORDER BY r.file_name, d.recording_id, d.channel, d.start_s""",
        [classifier_id, threshold]).fetchall()


def recordings_in_order(conn: duckdb.DuckDBPyConnection, recording_ids: list[str]) -> dict[str, float]:
    """{file name: duration} of recordings, by start time then file name (a combined table's file order)."""
    return dict(conn.execute(
        """SELECT file_name, duration_s FROM recordings WHERE recording_id IN (SELECT unnest(?))
           ORDER BY start_time NULLS LAST, file_name""", [recording_ids]).fetchall())


def scored_windows(conn: duckdb.DuckDBPyConnection, classifier_id: str) -> list[tuple]:
    """(segment_id, recording_id, channel, start_s, end_s, score, site) of every window the classifier scored."""
    return conn.execute(
        """SELECT d.segment_id, d.recording_id, d.channel, d.start_s, d.end_s, d.score, r.site
           FROM detections d JOIN recordings r USING (recording_id) WHERE d.classifier_id = ?
           ORDER BY d.recording_id, d.channel, d.start_s""", [classifier_id]).fetchall()


def file_names(conn: duckdb.DuckDBPyConnection, recording_ids: list[str]) -> dict[str, str]:
    return dict(conn.execute("SELECT recording_id, file_name FROM recordings WHERE recording_id IN (SELECT unnest(?))",
                             [recording_ids]).fetchall())


def segment_samples(conn: duckdb.DuckDBPyConnection, workspace: Workspace, segment_ids: list[str]) -> dict[str, np.ndarray]:
    """{segment_id: valid samples} from the segments' Parquet files (without torch, which the embedder's
    reader brings: log-mel detectors need none)."""
    files = [r[0] for r in conn.execute(
        "SELECT DISTINCT parquet_path FROM segments WHERE segment_id IN (SELECT unnest(?)) ORDER BY 1",
        [segment_ids]).fetchall()]
    if not files:
        return {}
    table = conn.execute(
        """SELECT p.segment_id, p.audio, round(s.valid_s * s.sample_rate)::BIGINT AS valid
           FROM read_parquet(?) p JOIN segments s USING (segment_id) WHERE p.segment_id IN (SELECT unnest(?))""",
        [[workspace.segment_file(f) for f in files], segment_ids]).to_arrow_table()
    out = {}
    for sid, audio, valid in zip(table.column("segment_id").to_pylist(), table.column("audio"),
                                 table.column("valid").to_pylist()):
        out[sid] = np.asarray(audio.values.to_numpy(zero_copy_only=False)[:valid], np.float32)
    return out


def segment_spans(conn: duckdb.DuckDBPyConnection, segment_ids: list[str]) -> dict[str, tuple[float, float, int]]:
    """{segment_id: (start_s in its recording, valid_s, sample rate)}."""
    return {sid: (float(start), float(valid), int(rate)) for sid, start, valid, rate in conn.execute(
        "SELECT segment_id, start_s, valid_s, sample_rate FROM segments WHERE segment_id IN (SELECT unnest(?))",
        [list(segment_ids)]).fetchall()}


def hourly_detections(conn: duckdb.DuckDBPyConnection, classifier_id: str, threshold: float) -> list[tuple]:
    """(site, UTC day 'YYYY-MM-DD', UTC hour, windows scored, windows at or above `threshold`) of a classifier,
    by the hour each window starts in; windows of recordings without a start time have no hour and are left out."""
    return conn.execute(
        """SELECT r.site, strftime(d.utc_start AT TIME ZONE 'UTC', '%Y-%m-%d') AS day,
                  hour(d.utc_start AT TIME ZONE 'UTC') AS h, count(*), count(*) FILTER (WHERE d.score >= ?)
           FROM detections d JOIN recordings r USING (recording_id)
           WHERE d.classifier_id = ? AND d.utc_start IS NOT NULL GROUP BY ALL ORDER BY 1, 2, 3""",
        [threshold, classifier_id]).fetchall()


def effort_hours(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(site, UTC day, UTC hour, seconds recorded) of the `effort` view."""
    return conn.execute(
        """SELECT site, strftime(hour AT TIME ZONE 'UTC', '%Y-%m-%d'), hour(hour AT TIME ZONE 'UTC'), seconds
           FROM effort ORDER BY 1, 2, 3""").fetchall()


def scores_by_site(conn: duckdb.DuckDBPyConnection, classifier_id: str) -> dict[str, np.ndarray]:
    """{site: every score of the classifier's windows there}."""
    table = conn.execute(
        """SELECT r.site, d.score FROM detections d JOIN recordings r USING (recording_id)
           WHERE d.classifier_id = ? ORDER BY r.site""", [classifier_id]).to_arrow_table()
    sites, scores = np.array(table.column("site").to_pylist()), table.column("score").to_numpy()
    return {str(s): scores[sites == s] for s in np.unique(sites)}


def reviewed_after(conn: duckdb.DuckDBPyConnection, classifier: dict) -> list[tuple]:
    """(recording_id, start_s, end_s, positive) of the classifier's label imported after it was trained: windows
    people reviewed, not the examples it learned from."""
    return conn.execute(
        """SELECT recording_id, start_s, end_s, positive FROM annotations
           WHERE label = ? AND imported_at > ? ORDER BY recording_id, start_s""",
        [classifier["label"], classifier["created_at"]]).fetchall()


def windows_of_recordings(conn: duckdb.DuckDBPyConnection, classifier_id: str, recording_ids: list[str]) -> list[tuple]:
    """(recording_id, start_s, end_s, score, site) of the classifier's windows in these recordings."""
    return conn.execute(
        """SELECT d.recording_id, d.start_s, d.end_s, d.score, r.site FROM detections d JOIN recordings r USING (recording_id)
           WHERE d.classifier_id = ? AND d.recording_id IN (SELECT unnest(?)) ORDER BY 1, 2""",
        [classifier_id, list(recording_ids)]).fetchall()


def has_detections(conn: duckdb.DuckDBPyConnection) -> bool:
    present = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'detections'").fetchone()[0]
    return bool(present) and conn.execute("SELECT count(*) FROM (SELECT 1 FROM detections LIMIT 1)").fetchone()[0] > 0


def has_classifiers(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether the workspace has a classifiers table (one made before `classify` existed has none)."""
    return conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'classifiers'").fetchone()[0] > 0
