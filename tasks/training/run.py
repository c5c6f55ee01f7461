"""A pretraining run: its identity and settings, and one chunk of it from checkpoint to checkpoint.

Every chunk starts from the run's latest complete checkpoint on disk, the first from random
weights (or `init_from`), so an uninterrupted run and one killed and resumed take the same path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
from transformers import Wav2Vec2Config

from schemas.settings import PRETRAIN_MUTABLE, PretrainSettings
from tasks.catalog import recordings, runs
from tasks.training import checkpoints
from tasks.training.data import SegmentIndex, build_index
from tasks.training.distributed import launch_chunk, processes_for
from tasks.training.frontend import FeatureEncoderPlan, plan_feature_encoder
from tasks.training.loop import (
    Schedule,
    StepMetrics,
    build_trainer,
    data_stream,
    load_checkpoint,
    pick_device,
    save_checkpoint,
    train_steps,
)
from tasks.training.model_config import build_config
from tasks.workspace import Workspace
from tasks.workspace.database import WorkspaceError

MIN_FRAMES_PER_CROP = 25  # shorter segments cannot hold two masked spans and their distractors


@dataclass(frozen=True)
class RunSpec:
    run: str  # the run's name: its row in `models`, its folder under checkpoints/
    run_dir: Path
    settings: PretrainSettings  # effective: the run's own settings plus this call's mutable ones
    plan: FeatureEncoderPlan
    config: dict
    horizon: int
    created: bool

    def model_config(self) -> Wav2Vec2Config:
        return Wav2Vec2Config.from_dict(self.config)


# What runs created before these settings existed trained with.
LEGACY_RECIPE = {"lr_scaling": "none", "feature_grad_mult": 1.0}


def resolve_run(conn: duckdb.DuckDBPyConnection, workspace: Workspace, settings: PretrainSettings) -> RunSpec:
    """The run named by the settings: created on first use, continued after.

    A continued run keeps the settings it was created with; changing one that defines it (batch
    size, preset, seed, ...) is refused, since the run could no longer reproduce itself.
    """
    run = settings.run_name
    saved = runs.run_settings(conn, run)
    config_rows = recordings.dataset_config(conn)
    if "sample_rate" not in config_rows:
        raise WorkspaceError(f"{workspace.root} holds no ingested audio: run `ceta2vec ingest` first")
    sample_rate = int(config_rows["sample_rate"])
    if saved:
        # A run created before a recipe setting existed continues with the behaviour it was trained
        # with, not with today's default.
        stored = PretrainSettings(**{**LEGACY_RECIPE, **saved})
        clashes = [
            f"{name}: run has {getattr(stored, name)!r}, asked for {getattr(settings, name)!r}"
            for name in sorted(settings.model_fields_set - PRETRAIN_MUTABLE)
            if getattr(stored, name) != getattr(settings, name)
        ]
        if clashes:
            raise WorkspaceError(
                f"run '{run}' was created with other settings ({'; '.join(clashes)}). "
                "Continue it with its own settings, or start another with --run NAME."
            )
        effective = stored.model_copy(update={k: getattr(settings, k) for k in PRETRAIN_MUTABLE if k != "init_from"})
    else:
        effective = settings
    plan = plan_feature_encoder(sample_rate, effective.frame_ms, effective.receptive_field_ms)
    config = build_config(effective.preset, plan, effective.model_overrides, effective.mask_time_prob,
                          effective.mask_time_length)
    horizon = effective.schedule_steps or (
        saved.get("_horizon") if saved else None) or effective.chunks * effective.steps_per_chunk
    return RunSpec(run, workspace.checkpoints_dir / run, effective, plan, config.to_dict(), horizon,
                   created=saved is None)


def stored_settings(spec: RunSpec) -> dict:
    """Settings as the models table keeps them; the schedule horizon is fixed at creation."""
    return {**spec.settings.model_dump(mode="json"), "_horizon": spec.horizon}


def training_index(conn: duckdb.DuckDBPyConnection, workspace: Workspace, spec: RunSpec) -> SegmentIndex:
    min_seconds = MIN_FRAMES_PER_CROP * spec.plan.frame_seconds
    return build_index(conn, workspace, spec.settings.exclude_recordings, spec.settings.max_clipped_fraction, min_seconds)


@dataclass(frozen=True)
class ChunkResult:
    checkpoint: checkpoints.CheckpointInfo
    metrics: list[StepMetrics]
    health: dict | None = None  # tasks.training.health's verdict on the chunk's last log interval

    @classmethod
    def written(cls, info: checkpoints.CheckpointInfo) -> "ChunkResult":
        """The result of a chunk as its checkpoint folder records it."""
        steps, health = checkpoints.read_metrics(info.path)
        return cls(info, [StepMetrics(**m) for m in steps], health)


def train_chunk(spec: RunSpec, index: SegmentIndex, on_step: Callable[[StepMetrics], None] | None = None,
                on_log: Callable[[str], None] | None = None) -> ChunkResult:
    """Load the latest checkpoint, take `steps_per_chunk` steps, write the next checkpoint: in
    this process, or on `nproc` processes launched by torchrun (their output lines to `on_log`)."""
    settings = spec.settings
    nproc = processes_for(settings)
    if nproc > 1:
        info, metrics = launch_chunk(spec, index, nproc, on_step, on_log)
        checkpoints.prune(spec.run_dir, settings.keep_last)
        return ChunkResult(info, metrics, checkpoints.read_metrics(info.path)[1])
    device = pick_device(settings.device)
    schedule = Schedule(settings, spec.horizon)
    done = checkpoints.complete(spec.run_dir)
    init_from = settings.init_from if not done else None
    state = build_trainer(spec.model_config(), settings, schedule, device, init_from=init_from)
    if done:
        load_checkpoint(state, done[-1])
    stream = data_stream(index, settings, state, pin_memory=device.type == "cuda")
    metrics = train_steps(state, stream, settings, schedule, device, settings.steps_per_chunk, on_step)
    info = save_checkpoint(state, spec.run_dir, settings, metrics, index.sample_rate)
    checkpoints.prune(spec.run_dir, settings.keep_last)
    return ChunkResult(info, metrics, checkpoints.read_metrics(info.path)[1])


def collapse_warning(metrics: list[StepMetrics], codes_per_group: int) -> str | None:
    """Codebook collapse: the code distribution has narrowed to a handful of codes."""
    tail = metrics[-10:]
    if not tail:
        return None
    lowest = min(sum(m.perplexity[g] for m in tail) / len(tail) for g in range(len(tail[0].perplexity)))
    if lowest < max(2.0, 0.02 * codes_per_group):
        return (f"codebook collapse: codevector perplexity has fallen to {lowest:.1f} of {codes_per_group} codes "
                "in a group; consider a higher diversity_loss_weight or gumbel temperature")
    return None
