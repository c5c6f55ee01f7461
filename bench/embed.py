"""Embedding benchmark: the whole `ceta2vec embed` command against the model's forward pass alone.

In one run, for each preset (default `tiny` and `small`):

* (a) forward pass alone: the checkpoint's encoder and quantizer projection on batches already in
  memory (the same segments, batch size and padding the flow uses), under `torch.no_grad`;
* (b) `ceta2vec embed` end to end (real Prefect flow, subprocess, wall clock): Python and Prefect
  start-up, reading segments from Parquet, the forward pass, pooling, frame vectors to Parquet,
  commits into DuckDB, then k-means units of every layer (sample, fit, assignment of every frame)
  and the unit statistics;
* (c) the same command again, with nothing left to embed: what start-up alone costs.

Prints the seconds of each, the flow's extraction loop (from its own `real_time_factor`), what
is left for units and start-up, and the ratio (a) ÷ (b) in seconds, goal >= 0.8. The models are
trained for one step only: speed does not depend on what they learned.

Fixed costs (start-up, model load) weigh less the more audio there is: `--minutes M` embeds M
minutes of synthetic recordings (noise, tones and clicks, distinct per file) instead of
`data/sample` (214 s).

Run:  .venv/bin/python bench/embed.py [--presets tiny small] [--minutes M | --workspace DIR] [--batch-size 8]
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
import soundfile
import torch

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "ceta2vec"
SAMPLE = ROOT / "data" / "sample"
GOAL = 0.8
RATE = 16000

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


def synthetic_recordings(folder: Path, minutes: float, file_seconds: float = 60.0) -> Path:
    """`minutes` of distinct recordings (noise, a drifting tone, click trains), one file per minute."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(file_seconds * RATE)) / RATE
    for i in range(int(np.ceil(minutes * 60 / file_seconds))):
        rng = np.random.default_rng(i)
        tone = 0.2 * np.sin(2 * np.pi * (400 + 50 * i + 300 * np.sin(2 * np.pi * t / 7)) * t)
        clicks = (rng.random(len(t)) < 20 / RATE) * rng.uniform(0.3, 0.8, len(t))
        x = tone * (np.sin(2 * np.pi * t / 11) > 0) + clicks + rng.normal(0, 0.02, len(t))
        soundfile.write(folder / f"synthetic-{i:04d}.wav", np.clip(x, -1, 1).astype(np.float32), RATE, "PCM_16")
    return folder


def segments_audio(workspace: Workspace) -> list[np.ndarray]:
    """Every segment's valid samples, as the flow reads them."""
    import duckdb

    conn = duckdb.connect(str(workspace.db_path), read_only=True)
    valid = dict(conn.execute("SELECT segment_id, round(valid_s * sample_rate)::BIGINT FROM segments").fetchall())
    conn.close()
    audio = []
    for file in sorted(workspace.segments_dir.rglob("*.parquet")):
        table = pq.read_table(file, columns=["segment_id", "audio"])
        column = table.column("audio").combine_chunks()
        for i, sid in enumerate(table.column("segment_id").to_pylist()):
            audio.append(np.asarray(column[i].values.to_numpy(zero_copy_only=False)[: valid[sid]], np.float32))
    return audio


def time_forward(export: Path, audio: list[np.ndarray], batch_size: int, repeats: int) -> float:
    """Seconds of the forward pass alone over every segment (median of `repeats` passes)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(export, device)
    config = json.loads((export / "config.json").read_text())
    frame_seconds = float(np.prod(config["conv_stride"])) / config["sampling_rate"]
    layers = list(range(config["num_hidden_layers"] + 1))
    batches = [audio[i : i + batch_size] for i in range(0, len(audio), batch_size)]
    embed_batch(model, ["w"] * len(batches[0]), batches[0], layers, frame_seconds, device)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            embed_batch(model, ["x"] * len(batch), batch, layers, frame_seconds, device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--workspace", help="Reuse a workspace with ingested segments (default: data/sample, fresh).")
    source.add_argument("--minutes", type=float, help="Ingest this many minutes of synthetic recordings instead.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="Forward passes timed (the median is kept).")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="ceta2vec-bench-embed-"))
    env = {**os.environ, "PREFECT_HOME": str(scratch / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    ws = Workspace.at(args.workspace or scratch / "ws")
    if not args.workspace:
        recordings = synthetic_recordings(scratch / "rec", args.minutes) if args.minutes else SAMPLE
        print(f"ingesting {recordings} ...", flush=True)
        run(["ingest", str(recordings), "--workspace", str(ws.root)], env)
    audio = segments_audio(ws)
    seconds = sum(len(a) for a in audio) / RATE
    print(f"workspace {ws.root}: {len(audio)} segments, {seconds:.0f} s of audio", flush=True)

    rows = []
    for preset in args.presets:
        print(f"{preset}: training one step for a checkpoint ...", flush=True)
        run(["pretrain", "--workspace", str(ws.root), "--preset", preset, "--run", f"bench-{preset}",
             "--chunks", "1", "--steps-per-chunk", "1", "--batch-size", "2"], env)
        export = ws.checkpoints_dir / f"bench-{preset}" / "chunk-0001" / "hf"
        print(f"{preset}: forward pass alone ...", flush=True)
        forward = time_forward(export, audio, args.batch_size, args.repeats)
        print(f"{preset}: ceta2vec embed ...", flush=True)
        command = ["embed", "--workspace", str(ws.root), "--run", f"bench-{preset}", "--batch-size", str(args.batch_size)]
        result, whole = run(command, env)
        summary = json.loads(result.stdout[result.stdout.index("{"):])
        extraction = summary["audio_seconds"] / summary["real_time_factor"]
        print(f"{preset}: ceta2vec embed again, nothing to embed ...", flush=True)
        _, idle = run(command, env)
        rows.append((preset, forward, extraction, whole, idle, forward / whole))
        print(f"{preset}: forward alone {forward:.1f} s, extraction {extraction:.1f} s, whole command {whole:.1f} s, "
              f"start-up {idle:.1f} s, ratio {forward / whole:.2f}", flush=True)

    print()
    print(f"ceta2vec embed benchmark: {len(audio)} segments, {seconds:.0f} s of audio, batch {args.batch_size}, "
          f"{torch.get_num_threads()} CPU threads (seconds)")
    print(f"{'preset':8} {'forward alone':>14} {'extraction':>11} {'whole command':>14} {'rest':>6} "
          f"{'start-up':>9} {'ratio':>6}")
    for preset, forward, extraction, whole, idle, ratio in rows:
        print(f"{preset:8} {forward:14.1f} {extraction:11.1f} {whole:14.1f} {whole - extraction:6.1f} "
              f"{idle:9.1f} {ratio:6.2f}")
    print("(extraction: the flow's batch loop - Parquet reads, forward, pooling, frame files, DuckDB commits; "
          "rest: whole command minus extraction - start-up, k-means units of every layer, unit statistics; "
          "start-up: the same command with nothing to embed; ratio: forward alone / whole command)")
    for preset, *_, ratio in rows:
        print(f"{'PASS' if ratio >= GOAL else 'FAIL'}  {preset}: forward pass alone / whole command >= {GOAL}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
