"""Pretraining runs in DuckDB: `models` (one row per run), `checkpoints`, `train_metrics` and
`chunk_health`, all keyed by the run's name."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np

from schemas.model_ref import ModelRef
from schemas.records import ChunkHealth, StepMetrics, field_names
from schemas.tables import embedding_table
from tasks.catalog.embeddings import EmbeddingModel
from tasks.catalog.rows import typed_row
from tasks.model import checkpoints
from tasks.model.frontend import receptive_field
from tasks.workspace import Workspace
from tasks.workspace.database import WorkspaceError, insert, transaction

METRIC_COLUMNS = field_names(StepMetrics)
HEALTH_COLUMNS = field_names(ChunkHealth)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def upsert_model(conn: duckdb.DuckDBPyConnection, row: dict) -> None:
    """Create the run's row, or refresh what a later call may change (data used, chunks planned)."""
    existing = conn.execute("SELECT created_at FROM models WHERE run = ?", [row["run"]]).fetchone()
    values = {**row, "updated_at": _now(), "created_at": existing[0] if existing else _now()}
    insert(conn, "models", [{k: json.dumps(v) if isinstance(v, dict) else v for k, v in values.items()}],
           on_conflict="replace")


@dataclass(frozen=True)
class RunProgress:
    """How far a run is: its `models` row's progress columns."""

    chunks_done: int = 0
    steps_done: int = 0
    latest_checkpoint: str | None = None
    best_checkpoint: str | None = None


def run_progress(conn: duckdb.DuckDBPyConnection, run: str) -> RunProgress:
    """Chunks and steps done and the latest and best checkpoints; zeros for a run not yet recorded."""
    names = ", ".join(field_names(RunProgress))
    return typed_row(conn.execute(f"SELECT {names} FROM models WHERE run = ?", [run]), RunProgress) or RunProgress()


def run_settings(conn: duckdb.DuckDBPyConnection, run: str) -> dict | None:
    """The settings a run was created with (JSON), or None for a new run."""
    row = conn.execute("SELECT settings FROM models WHERE run = ?", [run]).fetchone()
    return json.loads(row[0]) if row else None


def latest_trained_run(conn: duckdb.DuckDBPyConnection) -> str | None:
    row = conn.execute("SELECT run FROM models WHERE chunks_done > 0 ORDER BY updated_at DESC LIMIT 1").fetchone()
    return row[0] if row else None


def committed_chunks(conn: duckdb.DuckDBPyConnection, run: str) -> set[int]:
    return {r[0] for r in conn.execute("SELECT chunk FROM checkpoints WHERE run = ?", [run]).fetchall()}


def chunks_done(conn: duckdb.DuckDBPyConnection, run: str) -> int:
    return max(committed_chunks(conn, run), default=0)


def commit_chunk(
    conn: duckdb.DuckDBPyConnection, workspace: Workspace, run: str, info: checkpoints.CheckpointInfo,
    metrics: list[dict],
) -> None:
    """Record a finished chunk in one transaction; re-committing the same chunk changes nothing.

    Which checkpoints are kept, and which is best, is read from the run's folder after pruning.
    """
    on_disk = checkpoints.complete(info.path.parent)
    kept = [i.chunk for i in on_disk]
    best = min(on_disk, key=lambda i: i.mean_loss).chunk if on_disk else info.chunk
    with transaction(conn):
        conn.execute("DELETE FROM train_metrics WHERE run = ? AND chunk = ?", [run, info.chunk])
        insert(conn, "train_metrics", [{"run": run, **{c: m[c] for c in METRIC_COLUMNS}} for m in metrics])
        insert(conn, "checkpoints", [{
            "run": run, "chunk": info.chunk, "step": info.step, "path": workspace.relative(info.path),
            "state_sha256": info.state_sha256, "export_sha256": info.export_sha256, "mean_loss": info.mean_loss,
            "created_at": _now(), "kept": True}], on_conflict="replace")
        conn.execute("UPDATE checkpoints SET kept = list_contains(?, chunk) WHERE run = ?", [kept, run])
        health = checkpoints.read_metrics(info.path)[1]
        conn.execute("DELETE FROM chunk_health WHERE run = ? AND chunk = ?", [run, info.chunk])
        if health:  # checkpoints written before verdicts were kept have none
            insert(conn, "chunk_health", [{"run": run, "chunk": info.chunk, **{c: health.get(c) for c in HEALTH_COLUMNS}}])
        run_dir = info.path.parent
        conn.execute(
            """UPDATE models SET chunks_done = ?, steps_done = ?, latest_checkpoint = ?, best_checkpoint = ?, updated_at = ?
               WHERE run = ?""",
            [info.chunk, info.step, workspace.relative(info.path),
             workspace.relative(checkpoints.chunk_dir(run_dir, best)), _now(), run],
        )


def metrics_as_rows(metrics: list[StepMetrics]) -> list[dict]:
    return [asdict(m) for m in metrics]


def uncommitted_checkpoints(conn: duckdb.DuckDBPyConnection, run: str, run_dir: Path) -> list[tuple[checkpoints.CheckpointInfo, list[dict]]]:
    """Checkpoints written to disk whose commit a crash prevented, with their saved metrics."""
    done = committed_chunks(conn, run)
    return [
        (info, checkpoints.read_metrics(info.path)[0])
        for info in checkpoints.complete(run_dir)
        if info.chunk not in done
    ]


def train_metrics(conn: duckdb.DuckDBPyConnection, run: str) -> dict[str, np.ndarray]:
    """Per-step training health of a run; `perplexity` is (steps, groups). Empty arrays when none."""
    cursor = conn.execute(
        """SELECT step, chunk, loss, contrastive_loss, diversity_loss, perplexity, unused_code_share, accuracy,
                  grad_norm, learning_rate, temperature FROM train_metrics WHERE run = ? ORDER BY step""", [run])
    names = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    out = {n: np.asarray([r[i] for r in rows], np.float64) for i, n in enumerate(names) if n != "perplexity"}
    groups = max((len(r[5]) for r in rows), default=0)
    out["perplexity"] = np.asarray([list(r[5]) + [np.nan] * (groups - len(r[5])) for r in rows],
                                   np.float64).reshape(len(rows), groups)
    return out


def checkpoint_step(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel) -> int | None:
    row = conn.execute("SELECT step FROM checkpoints WHERE run = ? AND chunk = ?", [model.run, model.chunk]).fetchone()
    return int(row[0]) if row else None


def model_record(conn: duckdb.DuckDBPyConnection, run: str) -> dict:
    """The run's row of `models` with its JSON columns parsed ({} when the run is not recorded)."""
    cursor = conn.execute("SELECT * FROM models WHERE run = ?", [run])
    row = cursor.fetchone()
    if row is None:
        return {}
    record = dict(zip([d[0] for d in cursor.description], row))
    for key in ("settings", "model_config", "feature_encoder"):
        if isinstance(record.get(key), str):
            record[key] = json.loads(record[key])
    return record


def checkpoint_to_embed(conn: duckdb.DuckDBPyConnection, workspace: Workspace, run: str | None,
                            chunk: int | None) -> EmbeddingModel:
    """The checkpoint to embed with, read from its export: by default the latest of the most
    recently trained run. No torch: the CLI asks it before a command starts anything."""
    run = run or latest_trained_run(conn)
    if run is None:
        raise WorkspaceError(f"no trained model in {workspace.root}: run `ceta2vec pretrain` first")
    kept = {i.chunk: i for i in checkpoints.complete(workspace.checkpoints_dir / run)}
    if not kept:
        raise WorkspaceError(f"run '{run}' has no checkpoint in {workspace.checkpoints_dir / run}")
    chunk = chunk or max(kept)
    if chunk not in kept:
        raise WorkspaceError(f"run '{run}' keeps checkpoints of chunks {sorted(kept)}, not {chunk}")
    info = kept[chunk]
    config = json.loads((info.path / "hf" / "config.json").read_text())
    hop = int(np.prod(config["conv_stride"]))
    ref = ModelRef(run, chunk)
    return EmbeddingModel(
        ref=ref, export_dir=str(info.path / "hf"), export_sha256=info.export_sha256,
        dim=config["hidden_size"], layers=config["num_hidden_layers"] + 1,
        frame_seconds=hop / config["sampling_rate"], sample_rate=config["sampling_rate"],
        receptive_field=receptive_field(tuple(config["conv_stride"]), tuple(config["conv_kernel"])),
        table=embedding_table(str(ref)),
    )
