"""Does a preset train in bf16 without a NaN? The trainer's own loop under bf16 autocast, on CPU too.

On a GPU the trainer runs bf16 autocast itself; on CPU it trains in fp32, so this wraps its loop
(`tasks.training.loop.train_steps`) in `torch.autocast("cpu", torch.bfloat16)` to put the same
numerics to the test where no GPU is lent. It prints the loss, accuracy, gradient norm and code
perplexity every `--every` steps, and stops at the first non-finite loss or gradient norm
(TrainingDiverged), at `--steps`, or after `--minutes`. Exit code 1 on divergence, else 0.

Run:  .venv/bin/python bench/bf16_stability.py --workspace WS [--preset base] [--batch-size 2]
          [--crop-seconds 1] [--steps 1000] [--minutes 8] [--learning-rate 5e-4] [--lr-scaling sqrt]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from schemas.settings import PretrainSettings
from tasks.training.loop import (
    Schedule,
    TrainingDiverged,
    build_trainer,
    data_stream,
    effective_learning_rate,
    train_steps,
)
from tasks.training.run import resolve_run, training_index
from tasks.workspace import Workspace, database


class OutOfTime(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--crop-seconds", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--lr-scaling", choices=["sqrt", "linear", "none"], default="sqrt")
    parser.add_argument("--feature-grad-mult", type=float, default=0.1)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)
    ws = Workspace.at(args.workspace)
    settings = PretrainSettings(workspace=str(ws.root), run=f"bf16-{args.preset}", preset=args.preset,
                                batch_size=args.batch_size, crop_seconds=args.crop_seconds, chunks=1,
                                steps_per_chunk=args.steps, learning_rate=args.learning_rate,
                                lr_scaling=args.lr_scaling, feature_grad_mult=args.feature_grad_mult, device=args.device)
    with database.reading(ws) as conn:  # nothing is written: no run is created in the workspace
        spec = resolve_run(conn, ws, settings)
        index = training_index(conn, ws, spec)
    device = torch.device(args.device)
    schedule = Schedule(settings, args.steps)
    state = build_trainer(spec.model_config(), settings, schedule, device)
    print(f"{args.preset} in bf16 on {device.type}: batch {args.batch_size} x {args.crop_seconds:g} s, peak lr "
          f"{effective_learning_rate(settings):.2e} ({args.lr_scaling} of {args.learning_rate:g}), feature gradient "
          f"x{args.feature_grad_mult:g}, up to {args.steps} steps or {args.minutes:g} min", flush=True)
    started = time.monotonic()

    def report(m) -> None:
        if m.step % args.every == 0 or not math.isfinite(m.loss):
            print(f"step {m.step:5d}  loss {m.loss:.4f}  accuracy {m.accuracy:.3f}  grad norm {m.grad_norm:.2f}  "
                  f"perplexity {[round(p, 1) for p in m.perplexity]}  {time.monotonic() - started:.0f} s", flush=True)
        if time.monotonic() - started > 60 * args.minutes:
            raise OutOfTime(m.step + 1)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    try:
        with autocast:
            train_steps(state, data_stream(index, settings, state), settings, schedule, device, args.steps, report)
        print(f"{args.steps} steps in bf16, every loss and gradient norm finite")
    except OutOfTime as done:
        print(f"{done.args[0]} steps in bf16 in {args.minutes:g} min, every loss and gradient norm finite (time is up)")
    except TrainingDiverged as exc:
        print(f"DIVERGED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
