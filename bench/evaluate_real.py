"""The evaluate flow on the real labelled recordings: does a CPU-budget pretraining beat the baselines?

Ingests `../shared/data/hydrophone/` with labels from its MANIFEST (species and call type,
normalised), pretrains the `tiny` preset for a CPU budget, embeds every segment and scores every
layer against log-mel statistics, MFCC statistics and the same architecture with random weights,
with splits by recording. Prints the scorecard of the best layer beside the baselines. Whether
the model wins at this budget is a finding, not a goal.

Run:  .venv/bin/python bench/evaluate_real.py [--chunks 4] [--steps-per-chunk 50] [--label-column species]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "hydrophone"
CLI = Path(sys.executable).parent / "ceta2vec"


def species(text: str) -> str:
    """Manifest species text → a short label; background and unknown kept apart."""
    lowered = text.lower()
    for key, label in (("orcinus", "orca"), ("megaptera", "humpback"), ("humpback", "humpback"),
                       ("physeter", "sperm_whale"), ("bowhead", "bowhead"), ("balaena", "bowhead")):
        if key in lowered:
            return label
    if lowered.startswith("none"):
        return "none"
    return "unknown"


def write_labels(path: Path) -> None:
    with open(SHARED / "MANIFEST.csv") as src, open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["file", "species", "call_type"])
        for row in csv.DictReader(src):
            writer.writerow([row["path"], species(row["label_species"]), row["label_calltype"].split(" (")[0]])


def run(args: list[str], env: dict) -> str:
    started = time.perf_counter()
    result = subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env)
    print(f"  ceta2vec {args[0]}: {time.perf_counter() - started:.0f} s", flush=True)
    if result.returncode != 0:
        raise SystemExit(f"ceta2vec {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--steps-per-chunk", type=int, default=50)
    parser.add_argument("--label-column", default="species")
    parser.add_argument("--workspace", help="Keep the workspace here (default: a temporary folder).")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ceta2vec-eval-real-"))
    ws = Path(args.workspace) if args.workspace else scratch / "ws"
    env = {**os.environ, "PREFECT_HOME": str(scratch / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "COLUMNS": "160"}
    labels = scratch / "labels.csv"
    write_labels(labels)
    print(f"workspace {ws}", flush=True)
    run(["ingest", str(SHARED), "--labels", str(labels), "--site", "shared", "--workspace", str(ws)], env)
    run(["pretrain", "--preset", "tiny", "--chunks", str(args.chunks), "--steps-per-chunk", str(args.steps_per_chunk),
         "--workspace", str(ws)], env)
    run(["embed", "--poolings", "mean", "--workspace", str(ws)], env)
    print(run(["evaluate", "--label-column", args.label_column, "--workspace", str(ws)], env))
    summary = subprocess.run(
        [str(CLI), "sql", f"""SELECT features, metric, round(value, 3) AS value, round(ci_low, 3) AS low,
                                     round(ci_high, 3) AS high, segments, recordings
                              FROM evaluations WHERE label_column = '{args.label_column}'
                                AND metric IN ('knn5_macro_f1', 'probe_macro_f1', 'mean_average_precision')
                                AND features NOT LIKE 'random weights layer%' ORDER BY metric, value DESC""",
         "--workspace", str(ws), "--format", "json"], capture_output=True, text=True, env=env)
    print(json.dumps(json.loads(summary.stdout), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
