"""One chunk of a run, from its latest checkpoint to the next: the body both training paths run.

`tasks.training.run.train_chunk` runs it in the flow's process; each rank of
`tasks.training.distributed` runs it on its rows of every batch, and rank 0 writes the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Wav2Vec2Config

from schemas.records import StepMetrics
from schemas.settings import PretrainSettings
from tasks.model import checkpoints
from tasks.model.frontend import FeatureEncoderPlan
from tasks.training.data import SegmentIndex
from tasks.training.loop import Schedule, build_trainer, data_stream, load_checkpoint, save_checkpoint, train_steps


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


def chunk_body(spec: RunSpec, index: SegmentIndex, device: torch.device,
               on_step: Callable[[StepMetrics], None] | None = None, *, rows: tuple[int, int] | None = None,
               rank: int = 0, world: int = 1) -> tuple[checkpoints.CheckpointInfo | None, list[StepMetrics]]:
    """Resume from the run's latest complete checkpoint (the first chunk from random weights or
    `init_from`), take `steps_per_chunk` steps on `rows` of every batch, and write the next
    checkpoint on rank 0. Returns the checkpoint (None on other ranks) and the step metrics."""
    settings = spec.settings
    schedule = Schedule(settings, spec.horizon)
    done = checkpoints.complete(spec.run_dir)
    state = build_trainer(spec.model_config(), settings, schedule, device,
                          init_from=settings.init_from if not done else None)
    if done:
        load_checkpoint(state, done[-1])
    stream = data_stream(index, settings, state, rows=rows, pin_memory=device.type == "cuda")
    metrics = train_steps(state, stream, settings, schedule, device, settings.steps_per_chunk, on_step,
                          rank=rank, world=world)
    info = save_checkpoint(state, spec.run_dir, settings, metrics, index.sample_rate) if rank == 0 else None
    return info, metrics
