"""Pretraining records in DuckDB: `models`, `checkpoints` and `train_metrics`."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from tasks.training import checkpoints
from tasks.training.loop import StepMetrics
from tasks.workspace import Workspace
from tasks.workspace.database import transaction

METRIC_COLUMNS = (
    "step", "chunk", "loss", "contrastive_loss", "diversity_loss", "perplexity", "unused_code_share", "accuracy",
    "grad_norm", "learning_rate", "temperature", "masked_frames", "audio_seconds", "audio_seconds_per_second",
)

HEALTH_COLUMNS = ("verdict", "accuracy", "chance", "perplexity", "max_perplexity", "code_usage", "loss",
                  "loss_at_chance", "sentence")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def upsert_model(conn: duckdb.DuckDBPyConnection, row: dict) -> None:
    """Create the run's row, or refresh what a later call may change (data used, chunks planned)."""
    existing = conn.execute("SELECT created_at FROM models WHERE model_id = ?", [row["model_id"]]).fetchone()
    values = {**row, "updated_at": _now(), "created_at": existing[0] if existing else _now()}
    columns = list(values)
    conn.execute(
        f"INSERT OR REPLACE INTO models ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
        [json.dumps(v) if isinstance(v, dict) else v for v in values.values()],
    )


def committed_chunks(conn: duckdb.DuckDBPyConnection, model_id: str) -> set[int]:
    return {r[0] for r in conn.execute("SELECT chunk FROM checkpoints WHERE model_id = ?", [model_id]).fetchall()}


def chunks_done(conn: duckdb.DuckDBPyConnection, model_id: str) -> int:
    return max(committed_chunks(conn, model_id), default=0)


def commit_chunk(
    conn: duckdb.DuckDBPyConnection, workspace: Workspace, model_id: str, info: checkpoints.CheckpointInfo,
    metrics: list[dict],
) -> None:
    """Record a finished chunk in one transaction; re-committing the same chunk changes nothing.

    Which checkpoints are kept, and which is best, is read from the run's folder after pruning.
    """
    on_disk = checkpoints.complete(info.path.parent)
    kept = [i.chunk for i in on_disk]
    best = min(on_disk, key=lambda i: i.mean_loss).chunk if on_disk else info.chunk
    with transaction(conn):
        conn.execute("DELETE FROM train_metrics WHERE model_id = ? AND chunk = ?", [model_id, info.chunk])
        conn.executemany(
            f"INSERT INTO train_metrics (model_id, {', '.join(METRIC_COLUMNS)}) VALUES (?{', ?' * len(METRIC_COLUMNS)})",
            [[model_id, *(m[c] for c in METRIC_COLUMNS)] for m in metrics],
        )
        conn.execute(
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, true)",
            [model_id, info.chunk, info.step, workspace.relative(info.path), info.state_sha256, info.export_sha256,
             info.mean_loss, _now()],
        )
        conn.execute("UPDATE checkpoints SET kept = list_contains(?, chunk) WHERE model_id = ?", [kept, model_id])
        health = checkpoints.read_metrics(info.path)[1]
        conn.execute("DELETE FROM chunk_health WHERE model_id = ? AND chunk = ?", [model_id, info.chunk])
        if health:  # checkpoints written before verdicts were kept have none
            conn.execute(f"INSERT INTO chunk_health (model_id, chunk, {', '.join(HEALTH_COLUMNS)}) "
                         f"VALUES (?, ?{', ?' * len(HEALTH_COLUMNS)})",
                         [model_id, info.chunk, *(health.get(c) for c in HEALTH_COLUMNS)])
        run_dir = info.path.parent
        conn.execute(
            """UPDATE models SET chunks_done = ?, steps_done = ?, latest_checkpoint = ?, best_checkpoint = ?, updated_at = ?
               WHERE model_id = ?""",
            [info.chunk, info.step, workspace.relative(info.path),
             workspace.relative(checkpoints.chunk_dir(run_dir, best)), _now(), model_id],
        )


def metrics_as_rows(metrics: list[StepMetrics]) -> list[dict]:
    return [asdict(m) for m in metrics]


def uncommitted_checkpoints(conn: duckdb.DuckDBPyConnection, model_id: str, run_dir: Path) -> list[tuple[checkpoints.CheckpointInfo, list[dict]]]:
    """Checkpoints written to disk whose commit a crash prevented, with their saved metrics."""
    done = committed_chunks(conn, model_id)
    return [
        (info, checkpoints.read_metrics(info.path)[0])
        for info in checkpoints.complete(run_dir)
        if info.chunk not in done
    ]
