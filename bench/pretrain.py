"""Pretraining benchmark: is data handling ever the bottleneck of a wav2vec 2.0 training step?

What it measures, in one run, for each preset (default tiny and small), on one model:

* pure step: forward, backward, gradient clipping and the AdamW step on ONE batch that is already
  in memory (on the device), with its mask and distractor indices computed once beforehand:
  the most a step can do on this machine;
* loop step: the trainer's own `tasks.training.train_steps`, i.e. crops streamed from the
  workspace's Parquet segments on the prefetch thread, per-step seeding, span masking,
  distractor sampling, the model step and every metric (accuracy, perplexity, code usage).

Both use the same model, optimiser, batch size, crop length, thread count and device (bf16
autocast on a GPU, as the trainer). The two alternate step by step: `train_steps` runs one long
chunk, as a real run does, and its `on_step` callback takes one pure step after every loop step,
so machine noise lands on both alike. The first `--warmup` steps of each are dropped; medians of
the rest are reported. A loop step is timed from the end of one callback to the start of the next,
so it includes everything the loop does between two steps, not only what the trainer's own timer
sees (its figure is printed too).

Throughput is crops per second; both sides run identical tensor shapes, so the ratio is
median pure step time / median loop step time. The goal is loop >= 0.9 x pure. Audio-seconds per
second count valid (unpadded) audio: the mean per batch of the loop's crops, over the step time.

After the alternation, the loop's extra work is timed alone on the same batch (crop reading,
masking, metrics), so a ratio below the goal can be traced to its cause. Because the figures mean
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
import contextlib
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

from schemas.settings import PretrainSettings
from tasks import store
from tasks.frontend import plan_feature_encoder
from tasks.model_config import PRESETS, build_config
from tasks.pretrain_run import MIN_FRAMES_PER_CROP
from tasks.training import (Schedule, StepInputs, StepMetrics, TrainerState, _accuracy, _codebook_stats,
                            build_trainer, data_stream, pick_device, prepare_inputs, step_seed, train_steps)
from tasks.training_data import Batch, SegmentIndex, build_index
from tasks.workspace import Workspace

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
    with store.reading(workspace) as conn:
        config = store.dataset_config(conn)
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


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """The trainer's precision: bf16 autocast on a GPU, plain fp32 on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


Inputs = StepInputs  # what a loop step feeds the model, prepared by the trainer's own code


def step_inputs(state: TrainerState, batch: Batch, settings: PretrainSettings, device: torch.device) -> Inputs:
    """Exactly what `train_steps` does to a batch before its forward pass (as at step 0)."""
    return prepare_inputs(state.model, batch, settings, device, step_seed(settings.seed, 0, 0))


class PureStep:
    """Forward, backward, clipping and optimiser step on inputs that never leave the device."""

    def __init__(self, state: TrainerState, inputs: Inputs, settings: PretrainSettings, device: torch.device):
        self.state, self.inputs, self.settings, self.device = state, inputs, settings, device

    def __call__(self) -> float:
        model, optimizer, x = self.state.model, self.state.optimizer, self.inputs
        synchronize(self.device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(self.device):
            out = model(x.audio, attention_mask=x.attention, mask_time_indices=x.masked,
                        sampled_negative_indices=x.negatives)
        (out.loss / x.n_masked).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.settings.max_grad_norm)
        optimizer.step()
        synchronize(self.device)
        return time.perf_counter() - start


@dataclass
class Alternation:
    """`train_steps`' on_step callback: after every loop step, one pure step.

    A loop step's time runs from the end of the previous callback to the start of this one, so it
    covers all the loop does per step, including what happens outside the trainer's own timer.
    """

    pure_step: PureStep
    warmup: int
    device: torch.device
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
        synchronize(self.device)  # GPU work the loop step queued (its optimiser step) is its own
        loop_seconds = time.perf_counter() - self._mark
        pure_seconds = self.pure_step()
        self._calls += 1
        if self._calls > self.warmup:
            self.loop.append(loop_seconds)
            self.pure.append(pure_seconds)
            self.trainer_seconds.append(record.audio_seconds / record.audio_seconds_per_second)
            self.audio_seconds.append(record.audio_seconds)
            self.timed_to = CpuClock.now()
        elif self._calls == self.warmup:
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
    inputs: float  # seeding, span masks, distractor indices, copies to the device
    metrics: float  # loss terms, accuracy, perplexity, code usage

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
    seen: dict[str, torch.Tensor] = {}
    hook = model.quantizer.weight_proj.register_forward_hook(lambda m, i, o: seen.__setitem__("logits", o.detach()))
    try:
        with torch.no_grad(), autocast_for(device):
            out = model(inputs.audio, attention_mask=inputs.attention, mask_time_indices=inputs.masked,
                        sampled_negative_indices=inputs.negatives)
    finally:
        hook.remove()
    masked, frame_mask = inputs.masked.bool(), inputs.frame_mask.bool()

    def metrics() -> None:
        # What train_steps computes after backward, besides float(loss).
        float(out.contrastive_loss)
        float(out.diversity_loss)
        _accuracy(out, inputs.negatives, masked)
        _codebook_stats(seen["logits"], frame_mask, masked, model.config.num_codevector_groups)

    return Overheads(crops, inputs_ms, median_ms(metrics, OVERHEAD_REPEATS, device))


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
    steps = args.steps or (GPU_STEPS if device.type == "cuda" else CPU_STEPS[preset])

    # The pure step gets the very batch the loop starts with, with the masks the loop draws for it.
    batch = data_stream(index, settings, state).next_batch()
    alternation = Alternation(PureStep(state, step_inputs(state, batch, settings, device), settings, device),
                              args.warmup, device)
    stream = data_stream(index, settings, state)
    alternation.start()
    train_steps(state, stream, settings, schedule, device, args.warmup + steps, on_step=alternation)
    if alternation.timed_from is None or alternation.timed_to is None:
        raise BenchError(f"{preset}: train_steps took fewer steps than asked")
    own, other = alternation.timed_to.since(alternation.timed_from)

    overheads = loop_overheads(state, index, settings, batch, device)
    parameters = sum(p.numel() for p in state.model.parameters())
    a = alternation
    return PresetResult(preset, parameters, settings.batch_size, settings.crop_seconds, a.pure, a.loop,
                        a.trainer_seconds, a.audio_seconds, overheads, own, other)


# --- report -----------------------------------------------------------------------------------


def verdict(passed: bool, goal: str, measured: str) -> str:
    return f"{'PASS' if passed else 'FAIL'}  {goal}: {measured}"


def spread(values: list[float]) -> str:
    return f"min {min(values):.3f}, max {max(values):.3f}, n={len(values)}"


def print_preset(result: PresetResult, crop_samples: int, sample_rate: int) -> None:
    audio = result.audio_per_batch
    capacity = result.batch_size * crop_samples / sample_rate
    print()
    print(f"{result.preset}: {result.parameters / 1e6:.2f} M parameters, batch {result.batch_size} x "
          f"{result.crop_seconds:g} s crops; {audio:.2f} s of the {capacity:.2f} s per batch is audio, "
          f"the rest padding ({100 * (1 - audio / capacity):.0f}%)")
    print(f"  pure step   {result.pure_s:7.3f} s/step  {audio / result.pure_s:8.2f} audio-s/s   ({spread(result.pure)})")
    print(f"  loop step   {result.loop_s:7.3f} s/step  {audio / result.loop_s:8.2f} audio-s/s   ({spread(result.loop)})")
    print(f"              train_steps' own timer: median {statistics.median(result.trainer_seconds):.3f} s/step "
          "(it leaves out the bookkeeping between steps)")
    print(f"  ratio       loop / pure throughput = {result.ratio:.3f}")
    o = result.overheads
    print(f"  overheads   per step, each timed alone: crops from Parquet {o.crops:.1f} ms (prefetch thread), "
          f"masks and distractors {o.inputs:.1f} ms, metrics {o.metrics:.1f} ms")
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
          f"{'loop s/step':>13}{'loop a-s/s':>12}{'ratio':>8}  goal")
    for r in results:
        audio = r.audio_per_batch
        print(f"{r.preset:<8}{r.parameters / 1e6:>8.2f}M{f'{r.batch_size} x {r.crop_seconds:g} s':>12}"
              f"{r.pure_s:>13.3f}{audio / r.pure_s:>12.2f}{r.loop_s:>13.3f}{audio / r.loop_s:>12.2f}"
              f"{r.ratio:>8.3f}  {'PASS' if r.passed else 'FAIL'}")


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
        crop_samples = min(round(args.crop_seconds * index.sample_rate), index.segment_samples)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        gpu = f", {torch.cuda.get_device_name(device)}, bf16 autocast" if device.type == "cuda" else ", fp32"
        print()
        print("ceta2vec pretraining benchmark: training loop vs pure model step")
        print(f"workspace   {workspace.root} ({origin})")
        print(f"            {len(index)} training segments, {index.hours:.3f} h, {index.sample_rate} Hz, "
              f"{len(index.files)} Parquet files")
        print(f"device      {device.type}{gpu}; {torch.get_num_threads()} torch threads, {cores} CPUs; "
              f"torch {torch.__version__}, transformers {transformers.__version__}")
        print(f"method      loop and pure steps alternate on one model; {args.warmup} warm-up step(s) per side "
              "dropped; medians of the rest")
        print(f"load avg    {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min) at start", flush=True)

        results = []
        for preset in args.presets:
            print(f"\nmeasuring {preset} ...", flush=True)
            result = measure_preset(index, workspace, preset, args, device)
            print_preset(result, crop_samples, index.sample_rate)
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
