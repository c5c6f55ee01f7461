"""A pretraining chunk on several processes: DistributedDataParallel, launched by torchrun.

    flow process ── torchrun --standalone --nproc-per-node N -m tasks.distributed_training JOB
                        rank 0 … rank N-1: the same weights and crop stream, each its rows of every batch

A global batch is still `batch_size` crops, in the order of the one-process crop stream: rank r
trains on rows [r·B/N, (r+1)·B/N) of every micro-batch and reads only those. Masked spans and
distractors are drawn for the whole global batch from the step's seed, exactly as one process
draws them, and each rank keeps its rows; a rank's loss is its masked frames' sum over the global
batch's count (times N, which DDP's gradient average divides out), so the gradient is that of the
global batch's mean loss. What depends on N: dropout and Gumbel noise (drawn per rank) and the
diversity loss, whose codebook perplexity is a statistic of each rank's shard. Metrics are
reduced over ranks to the global batch's values. The data position and schedule do not depend on
N, so a run may be continued on another N. Rank 0 writes the checkpoint, atomically as one process
does; gloo carries the collectives on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

from schemas.settings import PretrainSettings
from tasks import checkpoints
from tasks.training import (Schedule, StepMetrics, StepInputs, TrainerState, TrainingDiverged, _accuracy, build_trainer,
                            data_stream, load_checkpoint, pick_device, save_checkpoint, seed_everything, step_seed)
from tasks.training_data import Batch, CropStream, SegmentIndex

if TYPE_CHECKING:
    from tasks.pretrain_run import RunSpec

STEP_LINE = "CETA2VEC_STEP "
CHECKPOINT_LINE = "CETA2VEC_CHECKPOINT "
LOG_LINES_KEPT = 40


class DistributedTrainingFailed(RuntimeError):
    """A rank (or torchrun itself) failed; the message names the rank and its error."""


def processes_for(settings: PretrainSettings) -> int:
    """How many training processes the settings ask for (0: one per visible GPU)."""
    nproc = settings.nproc
    cuda = pick_device(settings.device).type == "cuda"
    if nproc == 0:
        nproc = torch.cuda.device_count() if cuda else 1
    if nproc > settings.batch_size:
        raise ValueError(f"nproc {nproc} is more than the batch size {settings.batch_size}: each process needs "
                         "at least one crop of every batch")
    if cuda and nproc > torch.cuda.device_count():
        raise ValueError(f"nproc {nproc} needs {nproc} GPUs; {torch.cuda.device_count()} are visible")
    return max(1, nproc)


def shard_rows(batch_size: int, rank: int, world: int) -> tuple[int, int]:
    return rank * batch_size // world, (rank + 1) * batch_size // world


# ---------------------------------------------------------------- worker side (one per rank)


def prepare_shard(model, batch: Batch, settings: PretrainSettings, device: torch.device, seed: int,
                  rows: tuple[int, int], rank: int) -> tuple[StepInputs, int]:
    """This rank's rows of the global batch with the masks and distractors one process would
    draw for the whole batch; and the global count of masked frames."""
    seed_everything(seed)
    crop = batch.audio.shape[1]
    full_attention = torch.from_numpy((np.arange(crop)[None, :] < batch.lengths[:, None]).astype(np.int64))
    frames = int(model._get_feat_extract_output_lengths(crop))
    full_frames = model._get_feature_vector_attention_mask(frames, full_attention)
    mask = _compute_mask_indices((len(batch.lengths), frames), settings.mask_time_prob, settings.mask_time_length,
                                 attention_mask=full_frames, min_masks=2)
    negatives = _sample_negative_indices((len(batch.lengths), frames), model.config.num_negatives, mask)
    first, last = rows
    mine, negatives = mask[first:last], negatives[first:last] - first * frames  # indices into this rank's rows
    # this rank's own dropout and Gumbel noise
    seed_everything(int(np.random.SeedSequence([seed, rank]).generate_state(1)[0]))
    inputs = StepInputs(
        torch.from_numpy(batch.audio).to(device), torch.from_numpy(batch.attention_mask).to(device),
        full_frames[first:last].to(device), torch.from_numpy(mine).to(device),
        torch.from_numpy(negatives).long().to(device), int(mine.sum()))
    return inputs, int(mask.sum())


def _codebook_sums(logits: torch.Tensor, frame_mask: torch.Tensor, masked: torch.Tensor, groups: int) -> torch.Tensor:
    """Soft code probabilities summed over masked frames, and which codes a valid frame picked:
    (2, G, V), to be summed over ranks before perplexity and unused share are taken."""
    b, t, _ = logits.shape
    per_group = logits.float().view(b, t, groups, -1)
    sums = torch.softmax(per_group[masked], dim=-1).sum(0)
    used = torch.zeros_like(sums)
    chosen = per_group[frame_mask].argmax(-1)
    for g in range(groups):
        used[g, chosen[:, g]] = 1.0
    return torch.stack([sums, used])


def train_steps_distributed(state: TrainerState, stream: CropStream, settings: PretrainSettings, schedule: Schedule,
                            device: torch.device, steps: int, rank: int, world: int,
                            on_step: Callable[[StepMetrics], None] | None = None) -> list[StepMetrics]:
    """`steps` optimiser steps of the global batch, this rank taking its rows; the same metrics on
    every rank (reduced once per step); raises TrainingDiverged on every rank together."""
    from torch.nn.parallel import DistributedDataParallel

    model = state.model
    model.train()
    config = model.config
    # LayerDrop skips layers at random per rank: their parameters then get no gradient there
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                  find_unused_parameters=config.layerdrop > 0)
    logits_seen: dict[str, torch.Tensor] = {}
    hook = model.quantizer.weight_proj.register_forward_hook(lambda m, i, o: logits_seen.__setitem__("logits", o.detach()))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    groups, codes, accum = config.num_codevector_groups, config.num_codevectors_per_group, settings.grad_accum
    rows = stream.rows
    metrics: list[StepMetrics] = []
    batches = stream.batches(steps * accum)
    try:
        for _ in range(steps):
            started = time.perf_counter()
            temperature = schedule.temperature(state.step)
            model.set_gumbel_temperature(temperature)
            state.optimizer.zero_grad(set_to_none=True)
            # per micro-batch: loss, contrastive, diversity, correct (each over the global count), masked frames
            scalars = torch.zeros(accum, 5, dtype=torch.float64, device=device)
            codebook = torch.zeros(accum, 2, groups, codes, dtype=torch.float64, device=device)
            seconds = 0.0
            for micro in range(accum):
                batch: Batch = next(batches)
                inputs, n_global = prepare_shard(model, batch, settings, device, step_seed(settings.seed, state.step, micro),
                                                 rows, rank)
                masked = inputs.masked
                with ddp.no_sync() if micro < accum - 1 else nullcontext():  # gradients all-reduced once per step
                    with autocast:
                        out = ddp(inputs.audio, attention_mask=inputs.attention, mask_time_indices=masked,
                                  sampled_negative_indices=inputs.negatives)
                    (out.loss * world / n_global / accum).backward()
                with torch.no_grad():
                    scalars[micro] = torch.tensor([
                        float(out.loss), float(out.contrastive_loss), float(out.diversity_loss),
                        _accuracy(out, inputs.negatives, masked.bool()) * inputs.n_masked, inputs.n_masked,
                    ], dtype=torch.float64) / torch.tensor([n_global] * 4 + [1], dtype=torch.float64)
                    codebook[micro] = _codebook_sums(logits_seen["logits"], inputs.frame_mask.bool(), masked.bool(), groups)
                    codebook[micro, 0] /= n_global
                seconds += batch.audio_seconds
                state.position = batch.end_position
            dist.all_reduce(scalars)
            dist.all_reduce(codebook)
            loss = float(scalars[:, 0].mean())
            if not math.isfinite(loss):
                raise TrainingDiverged(f"non-finite loss ({loss}) at step {state.step}: chunk stopped, no checkpoint written")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm))
            if not math.isfinite(grad_norm):
                raise TrainingDiverged(f"non-finite gradient norm at step {state.step}: chunk stopped, no checkpoint written")
            learning_rate = state.scheduler.get_last_lr()[0]
            state.optimizer.step()
            state.scheduler.step()
            marginal = codebook[:, 0]
            perplexity = torch.exp(-torch.sum(torch.xlogy(marginal, marginal), dim=-1)).mean(0)
            unused = 1.0 - (codebook[:, 1] > 0).sum(dim=(1, 2)).double() / (groups * codes)
            elapsed = time.perf_counter() - started
            record = StepMetrics(
                step=state.step, chunk=state.chunk + 1, loss=loss, contrastive_loss=float(scalars[:, 1].mean()),
                diversity_loss=float(scalars[:, 2].mean()), perplexity=perplexity.tolist(),
                unused_code_share=float(unused.mean()), accuracy=float(scalars[:, 3].mean()), grad_norm=grad_norm,
                learning_rate=learning_rate, temperature=temperature, masked_frames=int(scalars[:, 4].sum()),
                audio_seconds=seconds, audio_seconds_per_second=seconds / elapsed,
            )
            metrics.append(record)
            state.step += 1
            if on_step:
                on_step(record)
    finally:
        hook.remove()
    return metrics


def run_rank(job: Path, rank: int, world: int, local_rank: int) -> None:
    """One rank's share of the chunk described in `job`; rank 0 writes the checkpoint."""
    saved = pickle.loads((job / "job.pkl").read_bytes())
    spec, index = saved["spec"], saved["index"]
    settings = spec.settings
    device = pick_device(settings.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        schedule = Schedule(settings, spec.horizon)
        done = checkpoints.complete(spec.run_dir)
        state = build_trainer(spec.model_config(), settings, schedule, device,
                              init_from=settings.init_from if not done else None)
        if done:
            load_checkpoint(state, done[-1], device)
        stream = data_stream(index, settings, state, rows=shard_rows(settings.batch_size, rank, world))
        report = (lambda m: print(STEP_LINE + json.dumps(asdict(m)), flush=True)) if rank == 0 else None
        metrics = train_steps_distributed(state, stream, settings, schedule, device, settings.steps_per_chunk,
                                          rank, world, report)
        if rank == 0:
            info = save_checkpoint(state, spec.run_dir, settings, metrics, index.sample_rate)
            print(CHECKPOINT_LINE + str(info.path), flush=True)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    job = Path((argv if argv is not None else sys.argv[1:])[0])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    try:
        run_rank(job, rank, world, int(os.environ.get("LOCAL_RANK", rank)))
    except BaseException as exc:  # told to the launcher, which names the rank that failed
        (job / f"error-rank-{rank}.json").write_text(json.dumps({"rank": rank, "type": type(exc).__name__,
                                                                  "message": str(exc)}))
        raise


# ---------------------------------------------------------------- launcher side (the flow's task)


def _die_with_parent() -> None:
    """torchrun (and so its ranks) is stopped if the flow's process dies, even by kill -9."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: an orphaned run still only ever writes a complete checkpoint


def launch_chunk(spec: RunSpec, index: SegmentIndex, nproc: int, on_step: Callable[[StepMetrics], None] | None = None,
                 on_log: Callable[[str], None] | None = None) -> tuple[checkpoints.CheckpointInfo, list[StepMetrics]]:
    """Train one chunk on `nproc` processes with torchrun; its output lines go to `on_log`.

    Raises TrainingDiverged when the ranks stopped on a non-finite loss, and DistributedTrainingFailed
    naming the rank and its error for anything else."""
    metrics: list[StepMetrics] = []
    written: str | None = None
    tail: deque[str] = deque(maxlen=LOG_LINES_KEPT)
    with tempfile.TemporaryDirectory(prefix="ceta2vec-ddp-") as folder:
        job = Path(folder)
        (job / "job.pkl").write_bytes(pickle.dumps({"spec": spec, "index": index}))
        env = dict(os.environ)
        # each rank's torch gets its share of the cores (torchrun's own default is 1 thread)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                   "-m", "tasks.distributed_training", str(job)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                   preexec_fn=_die_with_parent)
        try:
            for line in process.stdout:  # type: ignore[union-attr]
                line = line.rstrip("\n")
                if line.startswith(STEP_LINE):
                    metrics.append(StepMetrics(**json.loads(line[len(STEP_LINE):])))
                    if on_step:
                        on_step(metrics[-1])
                elif line.startswith(CHECKPOINT_LINE):
                    written = line[len(CHECKPOINT_LINE):]
                elif line.strip():
                    tail.append(line)
                    if on_log:
                        on_log(line)
            code = process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait()
        errors = [json.loads(p.read_text()) for p in sorted(job.glob("error-rank-*.json"))]
    if code != 0 or written is None:
        diverged = next((e for e in errors if e["type"] == TrainingDiverged.__name__), None)
        if diverged:
            raise TrainingDiverged(diverged["message"])
        if errors:
            first = errors[0]
            raise DistributedTrainingFailed(f"rank {first['rank']} of {nproc} failed: {first['type']}: {first['message']}")
        raise DistributedTrainingFailed(f"torchrun exited with status {code} before any rank reported an error:\n"
                                        + "\n".join(tail))
    info = checkpoints.read_info(Path(written))
    if info is None:
        raise DistributedTrainingFailed(f"rank 0 reported {written}, which holds no complete checkpoint")
    return info, metrics


if __name__ == "__main__":
    main()
