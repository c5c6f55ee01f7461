"""wav2vec 2.0 pretraining, one chunk of optimiser steps at a time.

Every random draw of a step (masks, distractors, Gumbel noise, dropout) is seeded from
(seed, step, micro-batch), and the data order from (seed, epoch, offset), so a run resumed from
a checkpoint takes exactly the steps the uninterrupted run would have taken.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

from schemas.settings import PretrainSettings
from tasks import checkpoints
from tasks.training_data import Batch, CropStream, SegmentIndex


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the chunk stops and no checkpoint is written."""


@dataclass
class StepMetrics:
    step: int
    chunk: int
    loss: float
    contrastive_loss: float
    diversity_loss: float
    perplexity: list[float]  # per codebook group
    unused_code_share: float
    accuracy: float
    grad_norm: float
    learning_rate: float
    temperature: float
    masked_frames: int
    audio_seconds: float
    audio_seconds_per_second: float


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def step_seed(seed: int, step: int, micro: int) -> int:
    return int(np.random.SeedSequence([seed, step, micro]).generate_state(1)[0])


def seed_everything(value: int) -> None:
    random.seed(value)
    np.random.seed(value)  # transformers' mask and distractor samplers draw from numpy's global RNG
    torch.manual_seed(value)


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class Schedule:
    """Linear warm-up, linear decay to `final_lr_ratio` at the horizon, flat after; the Gumbel
    temperature decays geometrically from gumbel_max to gumbel_min at 70% of the horizon."""

    def __init__(self, settings: PretrainSettings, horizon: int):
        self.settings, self.horizon = settings, horizon
        self.warmup = max(1, round(settings.warmup_fraction * horizon))
        anneal_steps = max(1, round(0.7 * horizon))
        self.decay = (settings.gumbel_min / settings.gumbel_max) ** (1 / anneal_steps)

    def lr_factor(self, step: int) -> float:
        s = self.settings
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.horizon - self.warmup))
        return 1.0 - (1.0 - s.final_lr_ratio) * progress

    def temperature(self, step: int) -> float:
        return max(self.settings.gumbel_min, self.settings.gumbel_max * self.decay**step)


@dataclass
class TrainerState:
    model: Wav2Vec2ForPreTraining
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int
    chunk: int  # chunks completed
    position: tuple[int, int]
    dataset_fingerprint: str


def build_trainer(config: Wav2Vec2Config, settings: PretrainSettings, schedule: Schedule, device: torch.device,
                  init_from: str | None = None) -> TrainerState:
    seed_everything(settings.seed)
    if init_from:
        model = Wav2Vec2ForPreTraining.from_pretrained(init_from, config=config, ignore_mismatched_sizes=False)
    else:
        model = Wav2Vec2ForPreTraining(config)
    model.to(device)
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate, betas=(0.9, 0.98), eps=1e-6,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.lr_factor)
    return TrainerState(model, optimizer, scheduler, step=0, chunk=0, position=(0, 0), dataset_fingerprint="")


def load_checkpoint(state: TrainerState, info: checkpoints.CheckpointInfo, device: torch.device) -> dict:
    checkpoints.verify(info)
    saved = torch.load(info.path / "state.pt", map_location=device, weights_only=False)
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.step, state.chunk = saved["step"], saved["chunk"]
    state.position = tuple(saved["data_position"]["position"])
    state.dataset_fingerprint = saved["data_position"]["dataset_fingerprint"]
    restore_rng_states(saved["rng"])
    return saved


def _codebook_stats(logits: torch.Tensor, frame_mask: torch.Tensor, masked: torch.Tensor, groups: int) -> tuple[list[float], float]:
    """Per-group perplexity of the soft code distribution over masked frames (as the diversity
    loss sees it) and the share of codes no valid frame picked."""
    b, t, _ = logits.shape
    per_group = logits.float().view(b, t, groups, -1)
    probs = torch.softmax(per_group[masked], dim=-1)  # (n, G, V)
    marginal = probs.mean(0)
    perplexity = torch.exp(-torch.sum(torch.xlogy(marginal, marginal), dim=-1))
    chosen = per_group[frame_mask].argmax(-1)  # (n_valid, G)
    codes = per_group.shape[-1]
    used = sum(int(torch.unique(chosen[:, g]).numel()) for g in range(groups))
    return perplexity.tolist(), 1.0 - used / (groups * codes)


def _accuracy(out, negatives: torch.Tensor, masked: torch.Tensor) -> float:
    """Share of masked frames whose true quantized target outranks every distractor."""
    c, q = out.projected_states.float(), out.projected_quantized_states.float()
    b, t, d = q.shape
    negs = q.reshape(-1, d)[negatives.reshape(-1)].view(b, t, -1, d)
    positive = torch.cosine_similarity(c, q, dim=-1)
    negative = torch.cosine_similarity(c.unsqueeze(2), negs, dim=-1)
    negative = negative.masked_fill((negs == q.unsqueeze(2)).all(-1), float("-inf"))
    correct = positive > negative.max(-1).values
    return float(correct[masked].float().mean())


@dataclass
class StepInputs:
    """One batch on the device, with the masked spans and distractors its step draws."""

    audio: torch.Tensor
    attention: torch.Tensor
    frame_mask: torch.Tensor  # valid frames
    masked: torch.Tensor
    negatives: torch.Tensor
    n_masked: int


def prepare_inputs(model: Wav2Vec2ForPreTraining, batch: Batch, settings: PretrainSettings, device: torch.device,
                   seed: int) -> StepInputs:
    """Seed the step's random draws, then mask spans and sample distractors inside valid frames."""
    seed_everything(seed)
    audio = torch.from_numpy(batch.audio).to(device)
    attention = torch.from_numpy(batch.attention_mask).to(device)
    frames = int(model._get_feat_extract_output_lengths(audio.shape[1]))
    frame_mask = model._get_feature_vector_attention_mask(frames, attention)
    mask = _compute_mask_indices((audio.shape[0], frames), settings.mask_time_prob, settings.mask_time_length,
                                 attention_mask=frame_mask.cpu(), min_masks=2)
    negatives = _sample_negative_indices((audio.shape[0], frames), model.config.num_negatives, mask)
    return StepInputs(audio, attention, frame_mask, torch.from_numpy(mask).to(device),
                      torch.from_numpy(negatives).long().to(device), int(mask.sum()))


def train_steps(
    state: TrainerState, stream: CropStream, settings: PretrainSettings, schedule: Schedule, device: torch.device,
    steps: int, on_step: Callable[[StepMetrics], None] | None = None,
) -> list[StepMetrics]:
    """`steps` optimiser steps from the current state; raises TrainingDiverged on a NaN loss."""
    model = state.model
    model.train()
    config = model.config
    logits_seen: dict[str, torch.Tensor] = {}
    hook = model.quantizer.weight_proj.register_forward_hook(lambda m, i, o: logits_seen.__setitem__("logits", o.detach()))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    metrics: list[StepMetrics] = []
    batches = stream.batches(steps * settings.grad_accum)
    try:
        for _ in range(steps):
            started = time.perf_counter()
            temperature = schedule.temperature(state.step)
            model.set_gumbel_temperature(temperature)
            state.optimizer.zero_grad(set_to_none=True)
            totals = dict(loss=0.0, contrastive=0.0, diversity=0.0, accuracy=0.0, masked=0, seconds=0.0)
            perplexities, unused = [], []
            for micro in range(settings.grad_accum):
                batch: Batch = next(batches)
                inputs = prepare_inputs(model, batch, settings, device, step_seed(settings.seed, state.step, micro))
                x, attention, frame_mask = inputs.audio, inputs.attention, inputs.frame_mask
                masked, negatives = inputs.masked, inputs.negatives
                with autocast:
                    out = model(x, attention_mask=attention, mask_time_indices=masked, sampled_negative_indices=negatives)
                n = inputs.n_masked
                loss = out.loss / n
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"non-finite loss ({float(loss.detach())}) at step {state.step}: chunk stopped, no checkpoint written")
                (loss / settings.grad_accum).backward()
                with torch.no_grad():
                    totals["loss"] += float(loss) / settings.grad_accum
                    totals["contrastive"] += float(out.contrastive_loss) / n / settings.grad_accum
                    totals["diversity"] += float(out.diversity_loss) / n / settings.grad_accum
                    totals["accuracy"] += _accuracy(out, negatives, masked.bool()) / settings.grad_accum
                    p, u = _codebook_stats(logits_seen["logits"], frame_mask.bool(), masked.bool(), config.num_codevector_groups)
                    perplexities.append(p)
                    unused.append(u)
                totals["masked"] += n
                totals["seconds"] += batch.audio_seconds
                state.position = batch.end_position
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm))
            if not math.isfinite(grad_norm):
                raise TrainingDiverged(f"non-finite gradient norm at step {state.step}: chunk stopped, no checkpoint written")
            learning_rate = state.scheduler.get_last_lr()[0]
            state.optimizer.step()
            state.scheduler.step()
            elapsed = time.perf_counter() - started
            record = StepMetrics(
                step=state.step, chunk=state.chunk + 1, loss=totals["loss"], contrastive_loss=totals["contrastive"],
                diversity_loss=totals["diversity"], perplexity=np.mean(perplexities, axis=0).tolist(),
                unused_code_share=float(np.mean(unused)), accuracy=totals["accuracy"], grad_norm=grad_norm,
                learning_rate=learning_rate, temperature=temperature, masked_frames=totals["masked"],
                audio_seconds=totals["seconds"], audio_seconds_per_second=totals["seconds"] / elapsed,
            )
            metrics.append(record)
            state.step += 1
            if on_step:
                on_step(record)
    finally:
        hook.remove()
    return metrics


def save_checkpoint(state: TrainerState, run_dir: Path, settings: PretrainSettings, metrics: list[StepMetrics],
                    sample_rate: int) -> checkpoints.CheckpointInfo:
    """Write the chunk's checkpoint atomically (state, metrics, transformers export)."""
    chunk = state.chunk + 1
    partial = checkpoints.begin(run_dir, chunk)
    mean_loss = float(np.mean([m.loss for m in metrics])) if metrics else float("nan")
    torch.save(
        {
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "temperature": state.model.quantizer.temperature,
            "step": state.step,
            "chunk": chunk,
            "data_position": {"position": list(state.position), "dataset_fingerprint": state.dataset_fingerprint},
            "rng": rng_states(),
            "settings": settings.model_dump(mode="json"),
            "model_config": state.model.config.to_dict(),
            "mean_loss": mean_loss,
        },
        partial / "state.pt",
    )
    (partial / "metrics.json").write_text(json.dumps([asdict(m) for m in metrics]))
    state.model.save_pretrained(partial / "hf")
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=sample_rate, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(partial / "hf")
    info = checkpoints.finish(partial, chunk, state.step, mean_loss)
    state.chunk = chunk
    return info


def data_stream(index: SegmentIndex, settings: PretrainSettings, state: TrainerState,
                rows: tuple[int, int] | None = None) -> CropStream:
    """The crop stream from the state's position; a grown or shrunk dataset starts a new epoch.
    `rows`: the rows of every batch this process trains on (all by default)."""
    position = state.position
    if state.dataset_fingerprint and state.dataset_fingerprint != index.fingerprint:
        position = (position[0] + 1, 0)
    state.dataset_fingerprint = index.fingerprint
    state.position = position
    return CropStream(index, settings.batch_size, settings.crop_seconds, settings.seed, position, rows=rows)
