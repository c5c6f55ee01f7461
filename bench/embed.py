"""Embedding benchmark: the extraction flow against the model's forward pass alone.

In one run, for each preset (default `tiny` and `small`):

* (a) forward pass alone: the checkpoint's encoder and quantizer projection on batches already in
  memory (the same segments, batch size and padding the flow uses), under `torch.no_grad`;
* (b) `ceta2vec embed` end to end (real Prefect flow, subprocess): reading segments from Parquet,
  the forward pass, pooling, frame vectors to Parquet, commits into DuckDB. Its extraction loop
  is timed by the flow itself (`real_time_factor`); the whole command, with k-means units and
  Prefect's start-up, is reported beside it.

Prints audio seconds per wall second (real-time factor) of each and the ratio (b) ÷ (a), goal
≥ 0.8. The models are trained for one step only: speed does not depend on what they learned.

Run:  .venv/bin/python bench/embed.py [--presets tiny small] [--workspace DIR] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "ceta2vec"
SAMPLE = ROOT / "data" / "sample"
GOAL = 0.8

sys.path.insert(0, str(ROOT))
from tasks.embedding.encode import embed_batch, load_model  # noqa: E402
from tasks.workspace import Workspace  # noqa: E402


def run(args: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"ceta2vec {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result, elapsed


def segments_audio(workspace: Workspace) -> list[np.ndarray]:
    """Every segment's valid samples, as the flow reads them."""
    import duckdb

    conn = duckdb.connect(str(workspace.db_path), read_only=True)
    valid = dict(conn.execute("SELECT segment_id, round(valid_s * sample_rate)::BIGINT FROM segments").fetchall())
    conn.close()
    audio = []
    for file in sorted(workspace.segments_dir.rglob("*.parquet")):
        table = pq.read_table(file, columns=["segment_id", "audio"])
        for sid, samples in zip(table.column("segment_id").to_pylist(), table.column("audio").to_pylist()):
            audio.append(np.asarray(samples[: valid[sid]], np.float32))
    return audio


def time_forward(export: Path, audio: list[np.ndarray], batch_size: int, repeats: int) -> float:
    """Audio seconds per wall second of the forward pass alone (median of `repeats` passes)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(export, device)
    config = json.loads((export / "config.json").read_text())
    frame_seconds = float(np.prod(config["conv_stride"])) / config["sampling_rate"]
    layers = list(range(config["num_hidden_layers"] + 1))
    batches = [audio[i : i + batch_size] for i in range(0, len(audio), batch_size)]
    embed_batch(model, ["w"] * len(batches[0]), batches[0], layers, frame_seconds, device)  # warm-up
    seconds = sum(len(a) for a in audio) / config["sampling_rate"]
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            embed_batch(model, ["x"] * len(batch), batch, layers, frame_seconds, device)
        rates.append(seconds / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--workspace", help="Reuse a workspace with ingested segments (default: data/sample, fresh).")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="ceta2vec-bench-embed-"))
    env = {**os.environ, "PREFECT_HOME": str(scratch / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    ws = Workspace.at(args.workspace or scratch / "ws")
    if not args.workspace:
        print(f"ingesting {SAMPLE} ...", flush=True)
        run(["ingest", str(SAMPLE), "--workspace", str(ws.root)], env)
    audio = segments_audio(ws)
    hours = sum(len(a) for a in audio) / 16000 / 3600
    print(f"workspace {ws.root}: {len(audio)} segments, {hours * 3600:.0f} s of audio", flush=True)

    rows = []
    for preset in args.presets:
        print(f"{preset}: training one step for a checkpoint ...", flush=True)
        run(["pretrain", "--workspace", str(ws.root), "--preset", preset, "--run", f"bench-{preset}",
             "--chunks", "1", "--steps-per-chunk", "1", "--batch-size", "2"], env)
        export = ws.checkpoints_dir / f"bench-{preset}" / "chunk-0001" / "hf"
        print(f"{preset}: forward pass alone ...", flush=True)
        forward_rate = time_forward(export, audio, args.batch_size, args.repeats)
        print(f"{preset}: ceta2vec embed ...", flush=True)
        result, wall = run(["embed", "--workspace", str(ws.root), "--run", f"bench-{preset}",
                            "--batch-size", str(args.batch_size)], env)
        summary = json.loads(result.stdout[result.stdout.index("{"):])
        flow_rate = summary["real_time_factor"]
        rows.append((preset, forward_rate, flow_rate, summary["audio_seconds"] / wall, flow_rate / forward_rate))

    print()
    print("ceta2vec embed benchmark (audio seconds per wall second; CPU threads: %d)" % torch.get_num_threads())
    print(f"{'preset':8} {'forward alone':>14} {'extraction':>11} {'whole command':>14} {'ratio':>7}")
    for preset, forward_rate, flow_rate, whole, ratio in rows:
        print(f"{preset:8} {forward_rate:14.1f} {flow_rate:11.1f} {whole:14.1f} {ratio:7.2f}")
    print("(extraction: the flow's batch loop — Parquet reads, forward, pooling, frame files, DuckDB commits;"
          " whole command: with Prefect start-up and k-means units of every layer)")
    for preset, *_, ratio in rows:
        print(f"{'PASS' if ratio >= GOAL else 'FAIL'}  {preset}: extraction >= {GOAL} x forward pass alone: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
