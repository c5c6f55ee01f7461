"""Segment activity in the workspace database: which segments still need a score, and storing scores."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from tasks.workspace.database import insert

# What produced a score (tasks/audio/activity.py's definition); a changed definition gets a new name.
ACTIVITY_METHOD = "max-band-excess-over-p20-floor/p90"


@dataclass(frozen=True)
class UnscoredRecording:
    recording_id: str
    parquet_path: str  # relative to the workspace's segment dataset
    sample_rate: int


def unscored_recordings(conn: duckdb.DuckDBPyConnection) -> list[UnscoredRecording]:
    """Recordings with at least one segment without an activity score of the current method: a
    recording is scored whole, since its noise floor comes from all its segments."""
    rows = conn.execute(
        """SELECT DISTINCT s.recording_id, s.parquet_path, s.sample_rate
           FROM segments s LEFT JOIN segment_activity a
             ON a.segment_id = s.segment_id AND a.method = ?
           WHERE a.segment_id IS NULL
           ORDER BY s.recording_id""", [ACTIVITY_METHOD]).fetchall()
    return [UnscoredRecording(*row) for row in rows]


def store_activity(conn: duckdb.DuckDBPyConnection, scores: dict[str, float]) -> None:
    """Write (or replace) the activity of these segments."""
    if not scores:
        return
    conn.execute("DELETE FROM segment_activity WHERE segment_id IN (SELECT unnest(?::VARCHAR[]))", [list(scores)])
    insert(conn, "segment_activity", [{"segment_id": segment_id, "activity_db": value, "method": ACTIVITY_METHOD}
                                      for segment_id, value in scores.items()])
