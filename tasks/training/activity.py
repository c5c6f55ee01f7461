"""Scoring the activity of every segment a run may sample, once, before crops are drawn by it."""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import numpy as np

from tasks.audio.activity import recording_activity
from tasks.catalog.activity import store_activity, unscored_recordings
from tasks.workspace import Workspace
from tasks.workspace.storage import open_parquet


def ensure_activity(conn: duckdb.DuckDBPyConnection, workspace: Workspace,
                    on_recording: Callable[[int, int], None] | None = None) -> int:
    """Score every segment of every recording not scored yet (on a writing connection); returns
    the segments scored. A recording's segments are read from its own Parquet file, so memory
    holds one recording at a time. Silent or non-finite samples score low, never fail."""
    pending = unscored_recordings(conn)
    scored = 0
    for done, recording in enumerate(pending, start=1):
        table = open_parquet(workspace.segment_file(recording.parquet_path)).read(
            columns=["segment_id", "recording_id", "valid_s", "audio"])
        mine = [i for i, r in enumerate(table.column("recording_id").to_pylist()) if r == recording.recording_id]
        ids = table.column("segment_id").to_pylist()
        valid = table.column("valid_s").to_pylist()
        audio = table.column("audio")
        segments = [np.asarray(audio[i].values.to_numpy(zero_copy_only=False), dtype=np.float32)
                    [: max(1, int(round(valid[i] * recording.sample_rate)))] for i in mine]
        scores = recording_activity(segments, recording.sample_rate)
        store_activity(conn, {ids[i]: score for i, score in zip(mine, scores)})
        scored += len(mine)
        if on_recording:
            on_recording(done, len(pending))
    return scored
