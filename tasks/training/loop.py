"""wav2vec 2.0 pretraining, one chunk of optimiser steps at a time, on one process or several.

Every random draw of a step is seeded from (seed, step, micro-batch): masked spans and
distractors from a torch.Generator on the model's device, dropout and Gumbel noise from the
device's global generator; the data order is a function of (seed, epoch, offset). So a run
resumed from a checkpoint takes exactly the steps the uninterrupted run would have taken.

The step never waits for the host: masks and distractors are drawn on the device, the step's
metrics stay there and are read back once per log interval (every step on CPU, where reading is
free). The quantizer, the contrastive logits and the loss run in fp32 under bf16 autocast: the
logits are cosines divided by 0.1, which bf16 would round to steps of 0.06.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining

from schemas.model_ref import ModelRef
from schemas.records import StepMetrics
from schemas.settings import PretrainSettings
from tasks.model import checkpoints
from tasks.model.device import autocast_for
from tasks.model.frontend_init import configured_init, initialise_frontend
from tasks.model.health import interval_means, training_health
from tasks.model.objectives import alternative_targets, masked_task, target_kind
from tasks.model.quantizer import StableQuantizer, one_hot
from tasks.training import data2vec, logmel_targets
from tasks.training.data import ActivitySampling, Batch, CropStream, SegmentIndex
from tasks.training.regression import masked_regression_terms

# Effective batch (crops x accumulation x crop length) the configured learning rate is meant for:
# the default 8 x 4 s. See effective_learning_rate.
LR_REFERENCE_SECONDS = 32.0
# Steps whose metrics are read back from a GPU together: each read-back stalls the device queue.
CUDA_LOG_EVERY = 10


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient: the chunk stops and no checkpoint is written."""



def step_seed(seed: int, step: int, micro: int) -> int:
    return int(np.random.SeedSequence([seed, step, micro]).generate_state(1)[0])


def seed_everything(value: int) -> None:
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _cpu_bytes(state) -> torch.Tensor:
    """torch's generators take their state only as a CPU ByteTensor, wherever loading put it."""
    return torch.as_tensor(state).detach().to(device="cpu", dtype=torch.uint8)


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(_cpu_bytes(states["torch"]))
    if "cuda" in states and torch.cuda.is_available():
        # per device, for as many as both the checkpoint and this machine have
        for device, state in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(_cpu_bytes(state), device)


def effective_learning_rate(settings: PretrainSettings) -> float:
    """The peak learning rate for the settings' effective batch.

    `learning_rate` is the rate for LR_REFERENCE_SECONDS of audio per optimiser step; a batch of S
    seconds trains at learning_rate x sqrt(S / 32) ("sqrt", Adam's rule: the gradient's noise
    falls as 1/sqrt(batch)), learning_rate x S / 32 ("linear") or learning_rate ("none").
    """
    ratio = settings.batch_size * settings.grad_accum * settings.crop_seconds / LR_REFERENCE_SECONDS
    power = {"sqrt": 0.5, "linear": 1.0, "none": 0.0}[settings.lr_scaling]
    return settings.learning_rate * ratio**power


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


# ---------------------------------------------------------------- numerics of the model


class _GradScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def stabilise(model: Wav2Vec2ForPreTraining, feature_grad_mult: float) -> None:
    """The fp32 quantizer, and the paper's scaling of the feature encoder's gradient (0.1): its
    convolutions see every sample and take far larger gradients than the transformer."""
    model.quantizer = StableQuantizer.replacing(model.quantizer, model.config)
    if feature_grad_mult != 1.0:
        model.wav2vec2.feature_extractor.register_forward_hook(
            lambda module, inputs, output: _GradScale.apply(output, feature_grad_mult) if module.training else output)


@dataclass
class StepInputs:
    """One batch's rows on the device, with the masked spans and distractors its step draws."""

    audio: torch.Tensor  # (rows, width)
    attention: torch.Tensor  # (rows, width) int64; a row without audio attends to all of it (see prepare_inputs)
    frame_mask: torch.Tensor  # (rows, frames) bool: valid frames
    masked: torch.Tensor  # (rows, frames) bool
    negatives: torch.Tensor  # (rows, frames, K) int64: distractor frames, within the row
    n_masked: torch.Tensor  # masked frames of these rows (0-d, on the device)
    n_global: torch.Tensor  # masked frames of the whole batch (0-d, on the device)


def span_mask(frame_lengths: torch.Tensor, frames: int, prob: float, span: int, min_spans: int,
              generator: torch.Generator) -> torch.Tensor:
    """wav2vec 2.0's masked spans, as transformers' _compute_mask_indices draws them (int(prob x
    length / span + U) spans, at least min_spans, starts without replacement) but on the device,
    and only inside each row's valid frames: a row too short for a span gets none."""
    device = frame_lengths.device
    epsilon = torch.rand((), generator=generator, device=device)
    starts_available = (frame_lengths - span + 1).clamp(min=0)
    wanted = torch.floor(prob * frame_lengths / span + epsilon).long().clamp(min=min_spans)
    count = torch.minimum(torch.minimum(wanted, starts_available), torch.full_like(wanted, frames // span))
    keys = torch.rand((len(frame_lengths), frames), generator=generator, device=device)
    position = torch.arange(frames, device=device)
    keys = keys.masked_fill(position >= starts_available[:, None], 2.0)  # never among the lowest `count`
    rank = keys.argsort(dim=1).argsort(dim=1)
    starts = (rank < count[:, None]).int()
    covered = starts.cumsum(1)
    masked = (covered - F.pad(covered, (span, 0))[:, :frames]) > 0  # a start within the last `span` frames
    return masked & (masked.sum(1, keepdim=True) >= 2)  # one masked frame has no distractor


def sample_negatives(masked: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """For every frame, `count` other masked frames of its row, uniformly with replacement (as
    transformers' _sample_negative_indices): (rows, frames, count) frame indices."""
    rows, frames = masked.shape
    n = masked.sum(1)
    in_order = torch.argsort((~masked).to(torch.int8), dim=1, stable=True)  # masked frames first
    own = masked.long().cumsum(1) - 1
    draws = torch.rand((rows, frames, count), generator=generator, device=masked.device)
    pick = (draws * (n - 1).clamp(min=1)[:, None, None]).long()
    pick = torch.minimum(pick, (n - 2).clamp(min=0)[:, None, None])  # float rounding of draws near 1
    pick = pick + (pick >= own[..., None]).long()  # skip the frame itself, keeping the draw uniform
    return torch.gather(in_order, 1, pick.clamp(max=frames - 1).view(rows, -1)).view(rows, frames, count)


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        # the prefetch thread pinned it already when it could; the copy then overlaps compute
        return tensor.to(device, non_blocking=tensor.is_pinned())
    return tensor


def prepare_inputs(model: Wav2Vec2ForPreTraining, batch: Batch, settings: PretrainSettings, device: torch.device,
                   seed: int, rows: tuple[int, int] | None = None, dropout_seed: int | None = None) -> StepInputs:
    """Masks and distractors for the whole batch from the step's seed, and `rows` of it (a
    process's shard; all by default); then seed dropout and Gumbel noise (`dropout_seed`, by
    default the step's seed)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    lengths = to_device(batch.lengths, device)
    width = batch.audio.shape[1]
    frames = int(model._get_feat_extract_output_lengths(width))
    frame_lengths = model._get_feat_extract_output_lengths(lengths).clamp(min=0, max=frames)
    masked = span_mask(frame_lengths, frames, settings.mask_time_prob, settings.mask_time_length, 2, generator)
    negatives = sample_negatives(masked, model.config.num_negatives, generator)
    first, last = rows or (0, len(batch.lengths))
    mine = lengths[first:last]
    # A row without a sample would leave attention nothing to attend to (a softmax over no keys is
    # NaN); it attends to its zeros instead, and has no valid frame, no mask and no distractor.
    attention = torch.arange(width, device=device)[None, :] < torch.where(mine > 0, mine, width)[:, None]
    frame_mask = torch.arange(frames, device=device)[None, :] < frame_lengths[first:last, None]
    torch.manual_seed(seed if dropout_seed is None else dropout_seed)
    return StepInputs(to_device(batch.audio, device), attention.long(), frame_mask, masked[first:last],
                      negatives[first:last], masked[first:last].sum(), masked.sum())


@dataclass
class StepOutput:
    """A micro-batch's loss terms (sums over its masked frames) and statistics, on the device."""

    loss: torch.Tensor
    contrastive: torch.Tensor
    diversity: torch.Tensor
    correct: torch.Tensor  # masked frames whose target outranks every distractor
    code_sums: torch.Tensor  # (2, G, V): soft code probabilities summed over masked frames; codes valid frames chose


def contrastive_terms(projected: torch.Tensor, targets: torch.Tensor, codes: torch.Tensor, inputs: StepInputs,
                      temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed contrastive loss and correct count over the masked frames, in fp32.

    The cosines of every frame's prediction with every target of its row are one (T x T) matmul;
    each masked frame reads its target's and its distractors' from it. A distractor with the
    target's codes is the target itself and is left out, as in wav2vec 2.0."""
    with torch.autocast(projected.device.type, enabled=False):
        c = F.normalize(projected.float(), dim=-1, eps=1e-6)
        q = F.normalize(targets.float(), dim=-1, eps=1e-6)
        cosines = torch.bmm(c, q.transpose(1, 2))  # (rows, T, T)
        positive = torch.diagonal(cosines, dim1=1, dim2=2)
        negative = torch.gather(cosines, 2, inputs.negatives)
        same_code = (torch.gather(codes.unsqueeze(1).expand(-1, codes.shape[1], -1, -1), 2,
                                  inputs.negatives.unsqueeze(-1).expand(-1, -1, -1, codes.shape[-1]))
                     == codes.unsqueeze(2)).all(-1)
        logits = torch.cat([positive.unsqueeze(-1), negative.masked_fill(same_code, float("-inf"))], -1) / temperature
        per_frame = torch.logsumexp(logits, -1) - logits[..., 0]
        # where, not a product: a row with no audio may hold anything in its unused frames
        loss = torch.where(inputs.masked, per_frame, 0.0).sum()
        correct = (inputs.masked & (logits[..., 0] > logits[..., 1:].max(-1).values)).sum()
    return loss, correct


def forward_step(module, model: Wav2Vec2ForPreTraining, inputs: StepInputs, device: torch.device,
                 teacher: torch.nn.Module | None = None) -> StepOutput:
    """The model on one micro-batch (`module`: the model, or its DDP wrapper) and its loss terms
    (`teacher`: data2vec's EMA teacher, for that objective)."""
    config = model.config
    kind = target_kind(config)
    tap = data2vec.FeatureTap(model) if kind == "data2vec" else None
    try:
        with autocast_for(device):
            out = module(inputs.audio, attention_mask=inputs.attention, mask_time_indices=inputs.masked)
    finally:
        if tap:
            tap.remove()
    quantizer = model.quantizer
    diversity_weight = config.diversity_loss_weight
    if kind == "data2vec":
        if teacher is None:
            raise ValueError("pretrain_targets=data2vec needs the run's EMA teacher")
        frames = out.projected_states.shape[1]
        frame_attention = model.wav2vec2._get_feature_vector_attention_mask(frames, inputs.attention)
        target = data2vec.teacher_targets(model, teacher, tap.features, frame_attention)
        contrastive, correct = masked_regression_terms(out.projected_states, target, inputs, per=target.shape[-1])
        diversity_weight = 0.0  # the quantizer is not trained: nothing reads its codes
    elif alternative_targets(config):  # e.g. log-mel codes instead of the quantizer's (see there)
        contrastive, correct = logmel_targets.masked_prediction_terms(model, out, inputs,
                                                                        config.contrastive_logits_temperature)
    else:
        contrastive, correct = contrastive_terms(out.projected_states, out.projected_quantized_states,
                                                 quantizer.last_codes, inputs, config.contrastive_logits_temperature)
    codes = config.num_codevector_groups * config.num_codevectors_per_group
    diversity = (codes - out.codevector_perplexity.float()) / codes * inputs.n_masked
    return StepOutput(contrastive + diversity_weight * diversity, contrastive, diversity, correct,
                      code_statistics(quantizer.last_logits, inputs))


@torch.no_grad()
def code_statistics(logits: torch.Tensor, inputs: StepInputs) -> torch.Tensor:
    """(2, G, V): soft code probabilities summed over masked frames (their mean is the marginal
    the diversity loss sees), and how many valid frames chose each code (argmax, no noise)."""
    # einsum, not where: a broadcast where over (B, T, G, V) takes ~1000x longer on CPU
    soft_sum = torch.einsum("btgv,bt->gv", torch.softmax(logits, -1), inputs.masked.float())
    used = torch.einsum("btgv,bt->gv", one_hot(logits.argmax(-1), logits.shape[-1]), inputs.frame_mask.float())
    return torch.stack([soft_sum, used])


# ---------------------------------------------------------------- trainer state and checkpoints


@dataclass
class TrainerState:
    model: Wav2Vec2ForPreTraining
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int
    chunk: int  # chunks completed
    position: tuple[int, int]
    dataset_fingerprint: str
    teacher: torch.nn.Module | None = None  # data2vec's EMA teacher (None for the other objectives)


def build_trainer(config: Wav2Vec2Config, settings: PretrainSettings, schedule: Schedule, device: torch.device,
                  init_from: str | None = None) -> TrainerState:
    seed_everything(settings.seed)
    if init_from:
        model = Wav2Vec2ForPreTraining.from_pretrained(init_from, config=config, ignore_mismatched_sizes=False)
    else:
        model = Wav2Vec2ForPreTraining(config)
        initialise_frontend(model, configured_init(config))
    stabilise(model, settings.feature_grad_mult)
    model.to(device)
    teacher = data2vec.make_teacher(model) if data2vec.uses_teacher(config) else None
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=effective_learning_rate(settings), betas=(0.9, 0.98), eps=1e-6,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.lr_factor)
    return TrainerState(model, optimizer, scheduler, step=0, chunk=0, position=(0, 0), dataset_fingerprint="",
                        teacher=teacher)


def restore_state(state: TrainerState, saved: dict) -> None:
    """Put a loaded checkpoint into `state`, wherever its tensors were loaded to: the model and
    optimiser copy theirs to their parameters' device, the RNG states go to the CPU."""
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.step, state.chunk = saved["step"], saved["chunk"]
    state.position = tuple(saved["data_position"]["position"])
    state.dataset_fingerprint = saved["data_position"]["dataset_fingerprint"]
    if state.teacher is not None:
        if saved.get("teacher") is None:
            raise ValueError("the checkpoint holds no EMA teacher, which pretrain_targets=data2vec needs")
        state.teacher.load_state_dict(saved["teacher"])
    restore_rng_states(saved["rng"])


def load_checkpoint(state: TrainerState, info: checkpoints.CheckpointInfo) -> dict:
    """Load onto the CPU whatever the training device: restore_state moves what must move."""
    checkpoints.verify(info)
    saved = torch.load(info.path / "state.pt", map_location="cpu", weights_only=False)
    restore_state(state, saved)
    return saved


def chunk_health(model_config: Wav2Vec2Config, metrics: list[StepMetrics], label: str | None = None) -> dict:
    """The training-health verdict on the chunk's last log interval (see tasks.model.health)."""
    task = masked_task(model_config)
    return training_health(interval_means(metrics), task.alternatives, model_config.num_codevectors_per_group,
                           model_config.num_codevector_groups, label, task.loss_at_chance, task.loss_name,
                           task.chance_note)


def save_checkpoint(state: TrainerState, run_dir: Path, settings: PretrainSettings, metrics: list[StepMetrics],
                    sample_rate: int) -> checkpoints.CheckpointInfo:
    """Write the chunk's checkpoint atomically (state, metrics and health verdict, transformers export)."""
    chunk = state.chunk + 1
    partial = checkpoints.begin(run_dir, chunk)
    mean_loss = float(np.mean([m.loss for m in metrics])) if metrics else float("nan")
    torch.save(
        {
            "model": state.model.state_dict(),
            "teacher": None if state.teacher is None else state.teacher.state_dict(),
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
    checkpoints.write_metrics(partial, [asdict(m) for m in metrics],
                              chunk_health(state.model.config, metrics, label=str(ModelRef(run_dir.name, chunk))))
    state.model.save_pretrained(partial / "hf")
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=sample_rate, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(partial / "hf")
    info = checkpoints.finish(partial, chunk, state.step, mean_loss)
    state.chunk = chunk
    return info


def data_stream(index: SegmentIndex, settings: PretrainSettings, state: TrainerState,
                rows: tuple[int, int] | None = None, pin_memory: bool = False) -> CropStream:
    """The crop stream from the state's position; a grown or shrunk dataset starts a new epoch.
    `rows`: the rows of every batch this process trains on (all by default)."""
    position = state.position
    if state.dataset_fingerprint and state.dataset_fingerprint != index.fingerprint:
        position = (position[0] + 1, 0)
    state.dataset_fingerprint = index.fingerprint
    state.position = position
    sampling = (ActivitySampling(settings.activity_temperature_db, settings.activity_floor)
                if settings.crop_sampling == "activity" else None)
    return CropStream(index, settings.batch_size, settings.crop_seconds, settings.seed, position, rows=rows,
                      pin_memory=pin_memory, sampling=sampling)


# ---------------------------------------------------------------- the step loop


def _dropout_seed(seed: int, rank: int, world: int) -> int | None:
    """One process draws dropout from the step's seed; each of several ranks its own."""
    return None if world == 1 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


SCALARS = ("loss", "contrastive", "diversity", "correct", "masked", "grad_norm")


def train_steps(
    state: TrainerState, stream: CropStream, settings: PretrainSettings, schedule: Schedule, device: torch.device,
    steps: int, on_step: Callable[[StepMetrics], None] | None = None, rank: int = 0, world: int = 1,
    log_every: int | None = None,
) -> list[StepMetrics]:
    """`steps` optimiser steps of the global batch from the current state, this process taking
    `stream.rows` of every batch (all of it when world == 1, several ranks under DDP otherwise).

    Metrics are kept on the device and read back every `log_every` steps (default: every step on
    CPU, CUDA_LOG_EVERY on a GPU), then handed to `on_step` one step at a time. Under DDP they are
    summed over ranks first, so every rank holds the global batch's values; a rank's loss is its
    masked frames' sum over the global count (times the world size, which DDP's gradient average
    divides out). Raises TrainingDiverged, on every rank together, at the first non-finite loss or
    gradient norm of an interval."""
    model = state.model
    model.train()
    config = model.config
    module = model
    if world > 1:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        # LayerDrop skips layers at random per rank, and the objectives other than contrastive leave
        # the quantizer unused: those parameters then get no gradient there
        module = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                         find_unused_parameters=config.layerdrop > 0 or alternative_targets(config))
    log_every = log_every or (CUDA_LOG_EVERY if device.type == "cuda" else 1)
    accum = settings.grad_accum
    metrics: list[StepMetrics] = []
    pending: list[tuple[torch.Tensor, torch.Tensor, dict]] = []  # per step: scalars, code sums, host values
    interval_started = time.perf_counter()
    batches = stream.batches(steps * accum)

    def read_back() -> None:
        nonlocal interval_started
        scalars = torch.stack([p[0] for p in pending]).double()
        codebook = torch.stack([p[1] for p in pending]).double()
        if world > 1:
            dist.all_reduce(scalars)
            dist.all_reduce(codebook)
            scalars[:, SCALARS.index("grad_norm")] /= world  # the same on every rank
        scalars, codebook = scalars.cpu().numpy(), codebook.cpu()
        elapsed = time.perf_counter() - interval_started
        seconds = sum(p[2]["seconds"] for p in pending)
        for values, codes, (_, _, host) in zip(scalars, codebook, pending):
            row = dict(zip(SCALARS, values.tolist()))
            if not math.isfinite(row["loss"]):
                raise TrainingDiverged(f"non-finite loss ({row['loss']}) at step {host['step']}: "
                                       "chunk stopped, no checkpoint written")
            if not math.isfinite(row["grad_norm"]):
                raise TrainingDiverged(f"non-finite gradient norm at step {host['step']}: "
                                       "chunk stopped, no checkpoint written")
            n = max(row["masked"], 1.0)
            marginal = codes[0] / n
            perplexity = torch.exp(-torch.sum(torch.xlogy(marginal, marginal), dim=-1))
            record = StepMetrics(
                step=host["step"], chunk=state.chunk + 1, loss=row["loss"] / n, contrastive_loss=row["contrastive"] / n,
                diversity_loss=row["diversity"] / n, perplexity=perplexity.tolist(),
                unused_code_share=float(1.0 - (codes[1] > 0).double().mean()), accuracy=row["correct"] / n,
                grad_norm=row["grad_norm"], learning_rate=host["learning_rate"], temperature=host["temperature"],
                masked_frames=int(row["masked"]), audio_seconds=host["seconds"],
                audio_seconds_per_second=seconds / max(elapsed, 1e-9),
            )
            metrics.append(record)
            if on_step:
                on_step(record)
        pending.clear()
        interval_started = time.perf_counter()

    for _ in range(steps):
        temperature = schedule.temperature(state.step)
        model.set_gumbel_temperature(temperature)
        state.optimizer.zero_grad(set_to_none=True)
        totals = torch.zeros(len(SCALARS), device=device)
        code_sums = torch.zeros(2, config.num_codevector_groups, config.num_codevectors_per_group, device=device)
        seconds = 0.0
        for micro in range(accum):
            batch: Batch = next(batches)
            seed = step_seed(settings.seed, state.step, micro)
            inputs = prepare_inputs(model, batch, settings, device, seed, stream.rows, _dropout_seed(seed, rank, world))
            sync = module.no_sync() if world > 1 and micro < accum - 1 else nullcontext()  # all-reduced once per step
            with sync:
                out = forward_step(module, model, inputs, device, state.teacher)
                # the gradient of the global batch's mean loss per masked frame
                (out.loss * world / inputs.n_global.clamp(min=1) / accum).backward()
            with torch.no_grad():
                # summed over micro-batches and ranks, divided by the masked frames when read back
                totals[:5] += torch.stack([out.loss.detach(), out.contrastive.detach(), out.diversity.detach(),
                                           out.correct.float(), inputs.n_masked.float()])
                code_sums += out.code_sums
            seconds += batch.audio_seconds
            state.position = batch.end_position
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        totals[5] = grad_norm
        host = dict(step=state.step, learning_rate=state.scheduler.get_last_lr()[0], temperature=temperature,
                    seconds=seconds)
        state.optimizer.step()
        state.scheduler.step()
        if state.teacher is not None:
            data2vec.ema_update(state.teacher, model, data2vec.ema_decay(state.step, schedule.horizon))
        state.step += 1
        pending.append((totals, code_sums, host))
        if len(pending) >= log_every:
            read_back()
    if pending:
        read_back()
    return metrics
