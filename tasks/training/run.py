"""A pretraining run: its identity and settings, and one chunk of it from checkpoint to checkpoint.

Every chunk starts from the run's latest complete checkpoint on disk, the first from random
weights (or `init_from`), so an uninterrupted run and one killed and resumed take the same path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from schemas.records import StepMetrics
from schemas.settings import PRETRAIN_MUTABLE, PretrainSettings
from tasks.catalog import recordings, runs
from tasks.model import checkpoints
from tasks.model.config import build_config
from tasks.model.device import pick_device
from tasks.model.frontend import plan_feature_encoder
from tasks.training.chunk import RunSpec, chunk_body
from tasks.training.data import SegmentIndex, build_index
from tasks.training.distributed import launch_chunk, processes_for
from tasks.workspace import Workspace
from tasks.workspace.database import WorkspaceError

MIN_FRAMES_PER_CROP = 25  # shorter segments cannot hold two masked spans and their distractors


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
    # The objective and the first layer's start are recorded in the config (and so in every export):
    # the report's verdict and the random-weight twin read them there. model_overrides may still set any field.
    recipe = {"pretrain_targets": effective.targets, "frontend_init": effective.frontend_init}
    config = build_config(effective.preset, plan, {**recipe, **effective.model_overrides}, effective.mask_time_prob,
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
    health: dict | None = None  # tasks.model.health's verdict on the chunk's last log interval

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
    try:
        info, metrics = chunk_body(spec, index, pick_device(settings.device), on_step)
    except (RuntimeError, MemoryError) as exc:
        if not out_of_memory(exc):
            raise
        raise TrainingOutOfMemory(out_of_memory_advice(settings, exc)) from exc
    checkpoints.prune(spec.run_dir, settings.keep_last)
    return ChunkResult(info, metrics, checkpoints.read_metrics(info.path)[1])


class TrainingOutOfMemory(ValueError):
    """A chunk that needed more memory than the machine or GPU has (a setting to change, not a crash)."""


# What torch's CPU allocator says (Linux, other systems), and its CUDA and MPS allocators.
_OOM_WORDS = ("can't allocate memory", "not enough memory", "Cannot allocate memory", "out of memory")


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation that failed: numpy's MemoryError, torch.OutOfMemoryError
    (GPU), or the RuntimeError of torch's CPU allocator."""
    import torch

    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(exc, RuntimeError) and any(words in str(exc) for words in _OOM_WORDS))


def out_of_memory_advice(settings: PretrainSettings, exc: BaseException) -> str:
    """One line: what ran out, at which batch, and the settings that fit the same effective batch."""
    split = min(4, settings.batch_size)
    smaller, accum = max(1, settings.batch_size // split), settings.grad_accum * split
    where = "GPU" if "CUDA" in str(exc) or "MPS" in str(exc) else "memory"
    return (f"out of {where} training a batch of {settings.batch_size} crops of {settings.crop_seconds:g} s "
            f"(--grad-accum {settings.grad_accum}); the last complete checkpoint is kept: give a smaller "
            f"--batch-size, with --grad-accum to keep the effective batch (e.g. --batch-size {smaller} "
            f"--grad-accum {accum}), or shorter --crop-seconds")


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
