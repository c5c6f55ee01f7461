"""Pretraining benchmark: is data handling ever the bottleneck of a wav2vec 2.0 training step?

What it measures, in one run, for each preset (default tiny and small), on one model:

* pure step: forward, backward, gradient clipping and the AdamW step on ONE batch that is already
  in memory (on the device), with its mask and distractor indices computed once beforehand:
  the most a step can do on this machine;
* loop step: the trainer's own `tasks.training.loop.train_steps`, i.e. crops streamed from the
  workspace's Parquet segments on the prefetch thread (length-bucketed, pinned on a GPU),
  per-step seeding, span masking and distractor sampling on the device, the model step and
  every metric (accuracy, perplexity, code usage), kept on the device and read back once per
  log interval (every step on CPU, every 10 on a GPU).

Both use the same model, optimiser, batch size, crop length, thread count and device (bf16
autocast on a GPU, as the trainer). The two alternate block by block, a block being the loop's
log interval: `train_steps` runs one long chunk, as a real run does, and when it hands over a
block's metrics, the callback takes as many pure steps, so machine noise lands on both alike. The
first block (at least `--warmup` steps) of each is dropped; medians of the rest, per step, are
reported. A loop block is timed from the end of one block's callbacks to the next, so it includes
everything the loop does between them, not only what the trainer's own timer sees.

Throughput is crops per second; pure step i runs the loop's batch i (the same tensor shapes:
batches differ in width, as length buckets make them), so the ratio is median pure step time /
median loop step time. The goal is loop >= 0.9 x pure. Audio-seconds per
second count valid (unpadded) audio: the mean per batch of the loop's crops, over the step time.

After the alternation, the loop's extra work is timed alone on the same batch (crop reading,
masking and distractors, metrics), so a ratio below the goal can be traced to its cause, and the
share of the batch tensors that is padding is measured over the loop's first batches. Because the figures mean
nothing when other processes share the CPU, the CPU time they took during the timed steps is
reported (from /proc/stat) with a warning when it is significant.

The workspace is made by `ceta2vec ingest data/sample` (the real Prefect flow, ~20 s) in a
temporary folder under bench/out, unless `--workspace` names an ingested one. The exit code is 0
whatever the ratio is and non-zero only when something crashed.

Run:  .venv/bin/python bench/pretrain.py  [--workspace DIR] [--presets tiny small] [--steps N]
                                          [--warmup N] [--batch-size 8] [--crop-seconds 4.0]
                                          [--device auto|cpu|cuda] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers

from schemas.records import StepMetrics
from schemas.settings import PretrainSettings
from tasks.catalog import recordings
from tasks.model.config import PRESETS, build_config
from tasks.model.device import pick_device
from tasks.model.frontend import plan_feature_encoder
from tasks.training.data import PADDING_TARGET, Batch, SegmentIndex, build_index
from tasks.training.loop import (
    CUDA_LOG_EVERY,
    Schedule,
    StepInputs,
    TrainerState,
    build_trainer,
    code_statistics,
    data_stream,
    forward_step,
    prepare_inputs,
    step_seed,
    train_steps,
)
from tasks.training.run import MIN_FRAMES_PER_CROP
from tasks.workspace import Workspace, database

ROOT = Path(__file__).resolve().parents[1]
BENCH_OUT = ROOT / "bench" / "out"
SAMPLE_DATA = ROOT / "data" / "sample"
CLI = Path(sys.executable).parent / "ceta2vec"

LOOP_TO_PURE_GOAL = 0.9
# Timed steps per side. On CPU a small step takes seconds, so these keep the whole run to a few
# minutes on 2 cores; on a GPU steps take milliseconds and more of them steady the medians.
CPU_STEPS = {"tiny": 10, "small": 6, "base": 3}
GPU_STEPS = 30
# Repeats of each isolated overhead measurement (each one costs at most a few tens of ms).
OVERHEAD_REPEATS = 8
# Batches over which the padding share is measured (reading them takes a second or two).
PADDING_BATCHES = 20
# Other processes using more than this many cores during the timed steps make the figures suspect.
OTHER_LOAD_WARNING_CORES = 0.25


class BenchError(RuntimeError):
    """Something the benchmark needs failed; the message says what and where the logs are."""


# --- workspace --------------------------------------------------------------------------------


def ingest_sample(workspace: Path, log_dir: Path) -> float:
    """`ceta2vec ingest data/sample` into `workspace`; returns its wall time."""
    env = dict(os.environ)
    # A private Prefect home and its own ephemeral server: no state shared with other runs.
    env["PREFECT_HOME"] = str(log_dir / "prefect-home")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.pop("PREFECT_API_URL", None)
    log = log_dir / "ingest.log"
    start = time.perf_counter()
    with open(log, "wb") as out:
        result = subprocess.run([str(CLI), "ingest", str(SAMPLE_DATA), "--workspace", str(workspace)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        raise BenchError(f"ceta2vec ingest exited with {result.returncode}; see {log}")
    return time.perf_counter() - start


def load_index(workspace: Workspace, settings: PretrainSettings) -> SegmentIndex:
    """The segments a run with `settings` would train on (same filter as `ceta2vec pretrain`)."""
    if not workspace.exists():
        raise BenchError(f"no ceta2vec workspace at {workspace.root} (run `ceta2vec ingest` first)")
    with database.reading(workspace) as conn:
        config = recordings.dataset_config(conn)
        if "sample_rate" not in config:
            raise BenchError(f"{workspace.root} holds no ingested audio: run `ceta2vec ingest` first")
        plan = plan_feature_encoder(int(config["sample_rate"]), settings.frame_ms, settings.receptive_field_ms)
        return build_index(conn, workspace, settings.exclude_recordings, settings.max_clipped_fraction,
                           MIN_FRAMES_PER_CROP * plan.frame_seconds)


# --- CPU accounting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuClock:
    """Wall time, this process's CPU time (all threads) and the whole machine's busy CPU time."""

    wall: float
    own: float
    machine: float | None  # None where /proc/stat cannot be read

    @classmethod
    def now(cls) -> "CpuClock":
        times = os.times()
        return cls(time.perf_counter(), times.user + times.system, machine_busy_seconds())

    def since(self, start: "CpuClock") -> tuple[float, float | None]:
        """(cores this process kept busy, cores every other process kept busy) since `start`."""
        wall = max(self.wall - start.wall, 1e-9)
        own = (self.own - start.own) / wall
        if self.machine is None or start.machine is None:
            return own, None
        return own, max(0.0, (self.machine - start.machine) / wall - own)


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot; steal counts as busy (another VM had it)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# --- measurements -----------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a step's time is its own and not the next one's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Inputs = StepInputs  # what a loop step feeds the model, prepared by the trainer's own code


def step_inputs(state: TrainerState, batch: Batch, settings: PretrainSettings, device: torch.device) -> Inputs:
    """Exactly what `train_steps` does to a batch before its forward pass (as at step 0)."""
    return prepare_inputs(state.model, batch, settings, device, step_seed(settings.seed, 0, 0))


class PureStep:
    """Forward (with the trainer's fp32 loss), backward, clipping and optimiser step on inputs that
    never leave the device; `steps` of them timed together, one wait for the device at the end.
    Step i takes the loop's batch i (batches differ in width: length buckets), prepared beforehand."""

    def __init__(self, state: TrainerState, inputs: list[Inputs], settings: PretrainSettings, device: torch.device):
        self.state, self.inputs, self.settings, self.device = state, inputs, settings, device
        self._next = 0

    def __call__(self, steps: int = 1) -> float:
        model, optimizer = self.state.model, self.state.optimizer
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            x = self.inputs[self._next % len(self.inputs)]
            self._next += 1
            optimizer.zero_grad(set_to_none=True)
            out = forward_step(model, model, x, self.device)
            (out.loss / x.n_global.clamp(min=1)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.settings.max_grad_norm)
            optimizer.step()
        synchronize(self.device)
        return (time.perf_counter() - start) / steps


@dataclass
class Alternation:
    """`train_steps`' on_step callback: after every block of loop steps (its log interval, whose
    metrics it hands over together), as many pure steps.

    A loop block's time runs from the end of the previous block's callbacks to the last callback
    of this one, so it covers all the loop does per step, including what its own timer leaves out.
    """

    pure_step: PureStep
    warmup: int  # blocks
    device: torch.device
    block: int
    loop: list[float] = field(default_factory=list)
    pure: list[float] = field(default_factory=list)
    trainer_seconds: list[float] = field(default_factory=list)  # the step as the trainer's own timer saw it
    audio_seconds: list[float] = field(default_factory=list)
    timed_from: CpuClock | None = None
    timed_to: CpuClock | None = None
    _calls: int = 0
    _mark: float = 0.0

    def start(self) -> None:
        self._mark = time.perf_counter()
        if self.warmup == 0:
            self.timed_from = CpuClock.now()

    def __call__(self, record: StepMetrics) -> None:
        self._calls += 1
        if self._calls % self.block:
            return  # the block's last record closes it
        synchronize(self.device)  # GPU work the loop queued (its last optimiser step) is its own
        loop_seconds = (time.perf_counter() - self._mark) / self.block
        pure_seconds = self.pure_step(self.block)
        blocks = self._calls // self.block
        if blocks > self.warmup:
            self.loop.append(loop_seconds)
            self.pure.append(pure_seconds)
            self.trainer_seconds.append(record.audio_seconds / record.audio_seconds_per_second)
            self.audio_seconds.append(record.audio_seconds)
            self.timed_to = CpuClock.now()
        elif blocks == self.warmup:
            self.timed_from = CpuClock.now()
        self._mark = time.perf_counter()


def median_ms(measure: Callable[[], None], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        measure()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@dataclass(frozen=True)
class Overheads:
    """Milliseconds per step of the loop's work besides the model step, each timed alone."""

    crops: float  # reading and cropping one batch; in the loop it runs on the prefetch thread
    inputs: float  # seeding, span masks, distractor indices (drawn on the device), copy to the device
    metrics: float  # code statistics and the step's sums, on the device; read back once per interval
    padding: float  # share of the loop's batch tensors that is padding (length-bucketed crops)
    unbucketed_padding: float  # the share were every crop padded to the full crop length

    @property
    def main_thread(self) -> float:
        """What the loop adds to every step in series with the model step."""
        return self.inputs + self.metrics


def loop_overheads(state: TrainerState, index: SegmentIndex, settings: PretrainSettings, batch: Batch,
                   device: torch.device) -> Overheads:
    model = state.model
    # Crops are read from a fresh stream at the run's start, as the loop's prefetch thread does;
    # here on the main thread, so the figure is the work itself, not its overlap with compute.
    stream = data_stream(index, settings, state)
    crops = median_ms(stream.next_batch, OVERHEAD_REPEATS, device)
    inputs_ms = median_ms(lambda: step_inputs(state, batch, settings, device), OVERHEAD_REPEATS, device)

    inputs = step_inputs(state, batch, settings, device)
    with torch.no_grad():
        out = forward_step(model, model, inputs, device)
    logits = model.quantizer.last_logits
    totals = torch.zeros(6, device=device)
    code_sums = torch.zeros_like(out.code_sums)

    def metrics() -> None:
        # What train_steps adds per step besides the loss: code statistics and the step's sums,
        # all on the device (the read-back, once per log interval, is in the loop's figure).
        totals[:5] += torch.stack([out.loss, out.contrastive, out.diversity, out.correct.float(),
                                   inputs.n_masked.float()])
        code_sums.add_(code_statistics(logits, inputs))

    padding = padding_shares(index, settings, state)
    return Overheads(crops, inputs_ms, median_ms(metrics, OVERHEAD_REPEATS, device), *padding)


def padding_shares(index: SegmentIndex, settings: PretrainSettings, state: TrainerState,
                   batches: int = PADDING_BATCHES) -> tuple[float, float]:
    """(padding share of the loop's batch tensors, the share without length buckets: every crop
    padded to the crop length), over the stream's first `batches` batches."""
    stream = data_stream(index, settings, state)
    padded = total = valid = 0
    for _ in range(batches):
        batch = stream.next_batch()
        padded += batch.padding_share * batch.lengths.size * batch.audio.shape[1]
        total += batch.lengths.size * batch.audio.shape[1]
        valid += batch.lengths.sum()
    return padded / total, 1.0 - valid / (batches * settings.batch_size * stream.crop)


@dataclass
class PresetResult:
    preset: str
    parameters: int
    batch_size: int
    crop_seconds: float
    pure: list[float]  # seconds per timed step
    loop: list[float]
    trainer_seconds: list[float]  # loop steps as train_steps' own timer saw them
    audio_seconds: list[float]  # valid audio per loop batch
    overheads: Overheads
    device: str
    own_cores: float
    other_cores: float | None

    @property
    def pure_s(self) -> float:
        return statistics.median(self.pure)

    @property
    def loop_s(self) -> float:
        return statistics.median(self.loop)

    @property
    def ratio(self) -> float:
        return self.pure_s / self.loop_s

    @property
    def audio_per_batch(self) -> float:
        return float(np.mean(self.audio_seconds))

    @property
    def passed(self) -> bool:
        return self.ratio >= LOOP_TO_PURE_GOAL


def measure_preset(index: SegmentIndex, workspace: Workspace, preset: str, args: argparse.Namespace,
                   device: torch.device) -> PresetResult:
    settings = PretrainSettings(workspace=str(workspace.root), preset=preset, batch_size=args.batch_size,
                                crop_seconds=args.crop_seconds, device=device.type)
    plan = plan_feature_encoder(index.sample_rate, settings.frame_ms, settings.receptive_field_ms)
    config = build_config(preset, plan, settings.model_overrides, settings.mask_time_prob, settings.mask_time_length)
    schedule = Schedule(settings, settings.chunks * settings.steps_per_chunk)
    state = build_trainer(config, settings, schedule, device)
    block = CUDA_LOG_EVERY if device.type == "cuda" else 1  # the loop's log interval
    steps = args.steps or (GPU_STEPS if device.type == "cuda" else CPU_STEPS[preset])
    steps = -(-steps // block) * block
    warmup_blocks = -(-args.warmup // block)

    # The pure steps get the very batches the loop takes, in its order, with the masks it draws for them.
    prepared = data_stream(index, settings, state)
    batches = [prepared.next_batch() for _ in range(warmup_blocks * block + steps)]
    batch = batches[0]
    pure_inputs = [prepare_inputs(state.model, b, settings, device, step_seed(settings.seed, i, 0))
                   for i, b in enumerate(batches)]
    alternation = Alternation(PureStep(state, pure_inputs, settings, device), warmup_blocks, device, block)
    stream = data_stream(index, settings, state, pin_memory=device.type == "cuda")
    alternation.start()
    train_steps(state, stream, settings, schedule, device, warmup_blocks * block + steps, on_step=alternation,
                log_every=block)
    if alternation.timed_from is None or alternation.timed_to is None:
        raise BenchError(f"{preset}: train_steps took fewer steps than asked")
    own, other = alternation.timed_to.since(alternation.timed_from)

    overheads = loop_overheads(state, index, settings, batch, device)
    parameters = sum(p.numel() for p in state.model.parameters())
    a = alternation
    return PresetResult(preset, parameters, settings.batch_size, settings.crop_seconds, a.pure, a.loop,
                        a.trainer_seconds, a.audio_seconds, overheads, device.type, own, other)


# --- report -----------------------------------------------------------------------------------


def verdict(passed: bool, goal: str, measured: str) -> str:
    return f"{'PASS' if passed else 'FAIL'}  {goal}: {measured}"


def spread(values: list[float]) -> str:
    return f"min {min(values):.3f}, max {max(values):.3f}, n={len(values)}"


def print_preset(result: PresetResult) -> None:
    audio = result.audio_per_batch
    o = result.overheads
    print()
    print(f"{result.preset}: {result.parameters / 1e6:.2f} M parameters, batch {result.batch_size} x "
          f"{result.crop_seconds:g} s crops; {audio:.2f} s of audio per batch")
    print(f"  padding     {100 * o.padding:.1f}% of the batch tensors (length buckets, batches cut to at most "
          f"{100 * PADDING_TARGET:g}% padding); {100 * o.unbucketed_padding:.1f}% were every crop padded to "
          f"{result.crop_seconds:g} s")
    print(f"  pure step   {result.pure_s:7.3f} s/step  {audio / result.pure_s:8.2f} audio-s/s   ({spread(result.pure)})")
    print(f"  loop step   {result.loop_s:7.3f} s/step  {audio / result.loop_s:8.2f} audio-s/s   ({spread(result.loop)})")
    print(f"              train_steps' own timer: median {statistics.median(result.trainer_seconds):.3f} s/step "
          "(it leaves out the bookkeeping between steps)")
    print(f"  ratio       loop / pure throughput = {result.ratio:.3f}")
    print(f"  overheads   per step, each timed alone: crops from Parquet {o.crops:.1f} ms (prefetch thread), "
          f"masks and distractors {o.inputs:.1f} ms, metrics {o.metrics:.1f} ms (both on the {result.device})")
    print(f"              in series with the model step: {o.main_thread:.1f} ms = "
          f"{100 * o.main_thread / 1000 / result.pure_s:.1f}% of a pure step; crops alongside it: "
          f"{100 * o.crops / 1000 / result.pure_s:.1f}%")
    other = "unknown" if result.other_cores is None else f"{result.other_cores:.2f}"
    print(f"  CPU         this process kept {result.own_cores:.2f} cores busy, other processes {other} "
          f"(timed steps only)")
    if result.other_cores is not None and result.other_cores > OTHER_LOAD_WARNING_CORES:
        print(f"  WARNING     other processes used {result.other_cores:.2f} cores while this ran: "
              "both step times are inflated and noisy; rerun on an idle machine for figures to quote")
    print(f"  {verdict(result.passed, f'loop >= {LOOP_TO_PURE_GOAL} x pure step throughput', f'{result.ratio:.3f}')}")


def print_summary(results: list[PresetResult]) -> None:
    print()
    print(f"{'preset':<8}{'params':>9}{'batch':>12}{'pure s/step':>13}{'pure a-s/s':>12}"
          f"{'loop s/step':>13}{'loop a-s/s':>12}{'ratio':>8}{'padding':>9}  goal")
    for r in results:
        audio = r.audio_per_batch
        print(f"{r.preset:<8}{r.parameters / 1e6:>8.2f}M{f'{r.batch_size} x {r.crop_seconds:g} s':>12}"
              f"{r.pure_s:>13.3f}{audio / r.pure_s:>12.2f}{r.loop_s:>13.3f}{audio / r.loop_s:>12.2f}"
              f"{r.ratio:>8.3f}{100 * r.overheads.padding:>8.1f}%  {'PASS' if r.passed else 'FAIL'}")


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = PretrainSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=None,
                        help="An ingested workspace to read (default: ingest data/sample into a temporary one).")
    parser.add_argument("--presets", nargs="+", choices=list(PRESETS), default=["tiny", "small"],
                        help="Presets to measure (default: tiny small).")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"Timed steps per side (default: {CPU_STEPS} on CPU, {GPU_STEPS} on GPU).")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps per side first (default 2).")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help=f"Crops per step (default {defaults.batch_size}, as pretraining).")
    parser.add_argument("--crop-seconds", type=float, default=defaults.crop_seconds,
                        help=f"Crop length in seconds (default {defaults.crop_seconds:g}, as pretraining).")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="Where to train: auto picks a GPU when there is one.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary workspace and its logs.")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.warmup < 0 or args.batch_size < 1 or args.crop_seconds <= 0:
        parser.error("--warmup must be >= 0, --batch-size >= 1 and --crop-seconds > 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is available")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_dir: Path | None = None
    if args.workspace:
        workspace = Workspace.at(args.workspace)
        origin = "given"
    else:
        BENCH_OUT.mkdir(parents=True, exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix="pretrain-", dir=BENCH_OUT))
        workspace = Workspace.at(run_dir / "ws")
        print(f"ingesting {SAMPLE_DATA.relative_to(ROOT)} ...", flush=True)
        origin = f"ingested {SAMPLE_DATA.relative_to(ROOT)} in {ingest_sample(workspace.root, run_dir):.1f} s"

    try:
        device = pick_device(args.device)
        index = load_index(workspace, PretrainSettings(workspace=str(workspace.root)))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        gpu = f", {torch.cuda.get_device_name(device)}, bf16 autocast" if device.type == "cuda" else ", fp32"
        print()
        print("ceta2vec pretraining benchmark: training loop vs pure model step")
        print(f"workspace   {workspace.root} ({origin})")
        print(f"            {len(index)} training segments, {index.hours:.3f} h, {index.sample_rate} Hz, "
              f"{len(index.files)} Parquet files")
        print(f"device      {device.type}{gpu}; {torch.get_num_threads()} torch threads, {cores} CPUs; "
              f"torch {torch.__version__}, transformers {transformers.__version__}")
        block = CUDA_LOG_EVERY if device.type == "cuda" else 1
        print(f"method      loop and pure steps alternate on one model, in blocks of {block} (the loop's log "
              f"interval); the first block(s), at least {args.warmup} warm-up step(s), dropped; medians of the rest")
        print(f"load avg    {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min) at start", flush=True)

        results = []
        for preset in args.presets:
            print(f"\nmeasuring {preset} ...", flush=True)
            result = measure_preset(index, workspace, preset, args, device)
            print_preset(result)
            results.append(result)
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the preset's model is gone; give its memory back
        print_summary(results)
        print(f"load avg    {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min) at end")
    finally:
        if run_dir is not None:
            if args.keep:
                print(f"kept        {run_dir} (workspace, Prefect home, ingest log)")
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench/pretrain.py: error: {exc}", file=sys.stderr)
        sys.exit(1)
