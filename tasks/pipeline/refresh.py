"""What a refresh after new audio or a new checkpoint works on: the run to embed with and the
label columns to score. Whether each step is still needed is decided by the same checks as the
pipeline's (tasks/pipeline/plan.py), so a refresh and a pipeline run never redo each other's work."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from tasks.catalog import recordings, runs


@dataclass(frozen=True)
class RefreshPlan:
    run: str | None                # None: no trained checkpoint yet, nothing to embed
    label_columns: list[str]       # columns to score, in the workspace's order


def plan_refresh(conn: duckdb.DuckDBPyConnection, run: str | None, label_columns: list[str] | None) -> RefreshPlan:
    if run is None:
        run = runs.latest_trained_run(conn)
    elif not runs.chunks_done(conn, run):
        run = None
    if label_columns is None:
        label_columns = recordings.label_column_names(conn)
    return RefreshPlan(run, list(label_columns))
