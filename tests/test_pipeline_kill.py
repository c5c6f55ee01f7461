"""`ceta2vec run` killed with SIGKILL once inside each stage (ingest, pretrain, embed, report), at
seeded random moments, then run to completion: the workspace must equal the uninterrupted run's.

A module of its own, so that `make test` (pytest-xdist, `--dist loadfile`) runs its five commands on
one worker while test_pipeline_flow.py builds the uninterrupted run on another (`reference_workspace`).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import CLI
from pipeline_corpus import cli_args, tones_and_clicks

from tasks.workspace import Workspace, database

pytestmark = pytest.mark.usefixtures("prefect_server")


# Kill once per stage: after the stage's subflow has begun (its log line), wait a seeded random
# time within the first half of what the stage takes on an idle 2-core machine (ingest 1.0 s,
# pretrain 2.0 s, embed 3.0 s, report 28 s, measured with `ceta2vec run` on this corpus), then
# SIGKILL the process group. The first run and the last are the user's default path, a temporary
# Prefect server of the command's own, in its process group and killed with it; the three between
# report to the worker's test server (`cli_env`), which spares each a server's start (about 8 s of CPU).
KILLS = [("ingest", 0.0, 0.5), ("pretrain", 0.3, 1.0), ("embed", 0.0, 1.5), ("report", 1.0, 8.0)]
SEED = 20260701


def begun(lines: list[str], flow: str) -> bool:
    return any(f"for flow '{flow}'" in line and "Beginning subflow run" in line for line in lines)


def finished(lines: list[str], flow: str) -> bool:
    runs = {line.split("Flow run '")[1].split("'")[0] for line in lines
            if f"for flow '{flow}'" in line and "Beginning subflow run" in line}
    return any(f"Flow run '{run}' - Finished in state" in line for run in runs for line in lines)


def run_and_kill(args: list[str], stage: str, delay: float, env: dict[str, str] | None = None) -> list[str]:
    process = subprocess.Popen([CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not begun(lines, stage) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert begun(lines, stage), f"stage {stage} never began:\n" + "".join(lines[-40:])
    time.sleep(delay)
    assert process.poll() is None, f"the run ended before it could be killed in {stage}:\n" + "".join(lines[-20:])
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    reader.join(10)
    assert not finished(lines, stage), (
        f"{stage} finished {delay:.2f} s after it began, before the kill: lower its delay in KILLS")
    return lines


def query(ws: Path, sql: str) -> list[tuple]:
    with database.reading(Workspace.at(ws)) as conn:
        return conn.execute(sql).fetchall()


def audio_by_segment(ws: Path) -> dict[str, np.ndarray]:
    out = {}
    for file in sorted((ws / "segments").rglob("*.parquet")):
        table = pq.read_table(file, columns=["segment_id", "audio"])
        for sid, audio in zip(table.column("segment_id").to_pylist(), table.column("audio").to_numpy(zero_copy_only=False)):
            assert sid not in out, f"segment {sid} stored twice"
            out[sid] = np.asarray(audio, np.float32)
    return out


def vectors(ws: Path) -> dict[tuple, np.ndarray]:
    rows = query(ws, "SELECT segment_id, layer, pooling, vector FROM segment_embeddings WHERE model_id = 'tiny@2'")
    out = {(s, l, p): np.array(v, np.float32) for s, l, p, v in rows}
    assert len(out) == len(rows), "duplicate embedding rows"
    return out


def frame_keys(ws: Path) -> list[tuple]:
    keys = []
    for file in (ws / "embeddings").rglob("frames/*.parquet"):
        t = pq.read_table(file, columns=["segment_id", "layer", "frame"])
        keys += list(zip(*(t.column(c).to_pylist() for c in ("segment_id", "layer", "frame"))))
    return keys


@pytest.mark.slow
def test_killed_inside_every_stage_then_rerun_equals_an_uninterrupted_run(reference_workspace, cli_env, tmp_path):
    root = tones_and_clicks(tmp_path / "corpus")  # the reference's corpus, generated alike: the same bytes
    ws = tmp_path / "ws"
    args = cli_args(root, ws)
    rng = random.Random(SEED)
    for stage, low, high in KILLS:
        run_and_kill(args, stage, rng.uniform(low, high), env=None if stage == "ingest" else cli_env)

    done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reference = reference_workspace()  # the uninterrupted run: waited for only now, once the kills are done
    assert "report: " in done.stdout and "similar " in done.stdout
    verdict = [line for line in done.stdout.splitlines() if line.startswith("verdict: ")]
    assert len(verdict) == 1 and ("does not beat" in verdict[0] or "is above" in verdict[0]), verdict

    # recordings, segments, their audio, labels: identical
    for sql in ("SELECT recording_id, content_hash, file_name, duration_s, segment_count, site FROM recordings ORDER BY 1",
                "SELECT segment_id, recording_id, start_s, end_s, valid_s, rms_dbfs, is_silent FROM segments ORDER BY 1",
                "SELECT path, status, recording_id FROM source_files ORDER BY 1",
                "SELECT recording_id, label_column, label_value FROM labels ORDER BY ALL"):
        expected, got = query(reference, sql), query(ws, sql)
        assert [r[1:] if "source_files" in sql else r for r in got] == \
               [r[1:] if "source_files" in sql else r for r in expected], sql
    ref_audio, got_audio = audio_by_segment(reference), audio_by_segment(ws)
    assert ref_audio.keys() == got_audio.keys()
    assert all(np.array_equal(ref_audio[k], got_audio[k]) for k in ref_audio)

    # checkpoints: the same chunks, the same per-step losses, the same weights
    assert query(ws, "SELECT chunk, step FROM checkpoints ORDER BY chunk") == \
        query(reference, "SELECT chunk, step FROM checkpoints ORDER BY chunk")
    expected, got = (query(w, "SELECT step, chunk, loss, accuracy FROM train_metrics ORDER BY step") for w in (reference, ws))
    assert [r[:2] for r in got] == [r[:2] for r in expected] == [(s, 1 + s // 3) for s in range(6)]
    for a, b in zip(expected, got):
        assert a[2] == pytest.approx(b[2], rel=1e-5, abs=1e-6) and a[3] == pytest.approx(b[3], abs=1e-6)
    assert query(ws, "SELECT export_sha256 FROM embedding_models") == query(reference, "SELECT export_sha256 FROM embedding_models")
    assert not list((ws / "checkpoints").rglob("*.partial"))

    # embeddings: one row per key, every key there, the same vectors
    ref_vectors, got_vectors = vectors(reference), vectors(ws)
    assert ref_vectors.keys() == got_vectors.keys() and len(got_vectors) == 12 * 3 * 2
    assert all(np.allclose(ref_vectors[k], got_vectors[k], atol=1e-5) for k in ref_vectors)
    keys = frame_keys(ws)
    assert len(keys) == len(set(keys)) and sorted(set(keys)) == sorted(set(frame_keys(reference)))
    assert query(ws, "SELECT count(*), count(DISTINCT (segment_id, layer)) FROM embedded_segments") == [(36, 36)]

    # units: the same codevectors, k-means fits and assignments
    units = "SELECT segment_id, source, layer, code_group, units FROM frame_units ORDER BY ALL"
    assert query(ws, units) == query(reference, units)
    fits = "SELECT layer, k, fitted_frames FROM unit_models ORDER BY layer"
    assert query(ws, fits) == query(reference, fits)
    stats = "SELECT source, layer, code_group, unit, frames, segments FROM unit_stats ORDER BY ALL"
    assert query(ws, stats) == query(reference, stats)

    # the scorecard and the report
    card = "SELECT features, metric, round(value, 4) FROM evaluations ORDER BY ALL"
    assert query(ws, card) == query(reference, card)
    assert (ws / "reports" / "tiny-2" / "index.html").exists() and (ws / "reports" / "tiny-2" / "explorer.html").exists()
    assert not [p for p in (ws / "staging").iterdir()]
