"""A pretraining chunk on several processes: DistributedDataParallel, launched by torchrun.

    flow process ── torchrun --standalone --nproc-per-node N -m tasks.training.distributed JOB
                        rank 0 … rank N-1: the same weights and crop stream, each its rows of every batch

A global batch is still `batch_size` crops, in the order of the one-process crop stream: rank r
trains on rows [r·B/N, (r+1)·B/N) of every micro-batch and reads only those. Masked spans and
distractors are drawn for the whole global batch from the step's seed, exactly as one process
draws them, and each rank keeps its rows; a rank's loss is its masked frames' sum over the global
batch's count (times N, which DDP's gradient average divides out), so the gradient is that of the
global batch's mean loss. What depends on N: dropout and Gumbel noise (drawn per rank) and the
diversity loss, whose codebook perplexity is a statistic of each rank's shard. Metrics are
reduced over ranks to the global batch's values. The step loop is the one-process loop
(tasks.training.loop.train_steps) with rank and world size. The data position and schedule do not depend on
N, so a run may be continued on another N. Rank 0 writes the checkpoint, atomically as one process
does; gloo carries the collectives on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import ctypes
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from schemas.records import StepMetrics
from schemas.settings import PretrainSettings
from tasks.model import checkpoints
from tasks.model.device import pick_device
from tasks.training.chunk import RunSpec, chunk_body
from tasks.training.data import SegmentIndex
from tasks.training.loop import TrainingDiverged

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
        report = (lambda m: print(STEP_LINE + json.dumps(asdict(m)), flush=True)) if rank == 0 else None
        info, _ = chunk_body(spec, index, device, report, rows=shard_rows(settings.batch_size, rank, world),
                             rank=rank, world=world)
        if info is not None:
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
                   "-m", "tasks.training.distributed", str(job)]
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
