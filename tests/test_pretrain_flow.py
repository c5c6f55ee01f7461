"""The pretrain command as a user runs it: a real kill -9 mid-chunk, resume, continue."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from conftest import CLI
from quick_ingest import ingest_quick
from test_training import synthetic_calls

from schemas.settings import PretrainSettings
from tasks.model.health import VERDICTS
from tasks.workspace import Workspace, database

ARGS = ["--run", "r", "--steps-per-chunk", "4", "--batch-size", "4", "--crop-seconds", "1.0",
        "--model-overrides", "num_hidden_layers=2"]


def losses(ws_path):
    with database.reading(Workspace.at(ws_path)) as conn:
        return conn.execute("SELECT step, chunk, loss, accuracy, perplexity FROM train_metrics ORDER BY step").fetchall()


def pretrain(ws, env, *extra):
    return subprocess.run([CLI, "pretrain", "--workspace", ws, *ARGS, *extra], capture_output=True, text=True,
                          timeout=600, env=env)


def pretrain_in_process(ws, chunks: int):
    """The same flow, run in this process (no new Prefect server and imports: faster)."""
    from flows.pretrain import pretrain as flow

    return flow(PretrainSettings(workspace=str(ws), run="r", steps_per_chunk=4, batch_size=4, crop_seconds=1.0,
                                 model_overrides={"num_hidden_layers": 2}, chunks=chunks))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    synthetic_calls(root / "rec")
    ingest_quick(Workspace.at(root / "ws"), root / "rec", segment_seconds=2.0)
    return root


def test_kill_9_mid_chunk_then_rerun_reproduces_the_uninterrupted_losses(ingested, tmp_path, cli_env):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    shutil.copytree(ingested / "ws", reference)
    shutil.copytree(ingested / "ws", killed)
    pretrain_in_process(reference, chunks=2)

    process = subprocess.Popen([CLI, "pretrain", "--workspace", killed, *ARGS, "--chunks", "2"], env=cli_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = killed / "checkpoints" / "r" / "chunk-0001"
    deadline = time.monotonic() + 300
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.4)  # into the second chunk's steps
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "checkpoints" / "r" / "chunk-0002").exists()

    resumed = pretrain(killed, cli_env, "--chunks", "2")
    assert resumed.returncode == 0, resumed.stderr
    # the summary says plainly whether the run learns (4 steps of a tiny model: it is at chance, or close)
    assert "r@2 is " in resumed.stdout and "vs chance 0.048" in resumed.stdout, resumed.stdout
    expected, got = losses(reference), losses(killed)
    assert [r[:2] for r in got] == [(s, 1 + s // 4) for s in range(8)]
    for a, b in zip(expected, got):
        assert a[2] == pytest.approx(b[2], rel=1e-5, abs=1e-6)
        assert a[3] == pytest.approx(b[3], abs=1e-6)

    # a finished run continues when --chunks is raised; the same command again does nothing
    assert pretrain_in_process(killed, chunks=3).chunks_trained == 1
    assert [r[0] for r in losses(killed)] == list(range(12))
    assert pretrain_in_process(killed, chunks=3).chunks_trained == 0
    with database.reading(Workspace.at(killed)) as conn:
        model = conn.execute("SELECT chunks_done, steps_done, latest_checkpoint, frame_rate_hz, parameters, "
                             "segments_used, feature_encoder FROM models WHERE run = 'r'").fetchone()
        kept = conn.execute("SELECT chunk, kept FROM checkpoints ORDER BY chunk").fetchall()
        health = conn.execute("SELECT chunk, verdict, chance FROM chunk_health ORDER BY chunk").fetchall()
    assert model[:4] == (3, 12, "checkpoints/r/chunk-0003", 50.0) and model[4] > 1e5 and model[5] == 24
    assert json.loads(model[6])["strides"] == [5, 2, 2, 2, 2, 2, 2]
    assert [k[0] for k in kept] == [1, 2, 3]
    assert [h[0] for h in health] == [1, 2, 3] and all(h[1] in VERDICTS and h[2] == pytest.approx(1 / 21) for h in health)


def test_changing_a_runs_defining_settings_is_refused(ingested, tmp_path, cli_env):
    ws = tmp_path / "ws"
    shutil.copytree(ingested / "ws", ws)
    pretrain_in_process(ws, chunks=1)
    refused = subprocess.run([CLI, "pretrain", "--workspace", ws, "--run", "r", "--batch-size", "2"],
                             capture_output=True, text=True, timeout=300, env=cli_env)
    assert refused.returncode == 2 and "batch_size: run has 4, asked for 2" in refused.stderr


@pytest.mark.usefixtures("prefect_server")
def test_a_run_created_before_a_recipe_setting_existed_continues_with_its_old_recipe(ingested, tmp_path):
    """LR scaling and the encoder's gradient scale came later: an older run continued must not
    switch recipe half-way, while a new run gets today's defaults."""
    from tasks.training.run import resolve_run

    ws = Workspace.at(tmp_path / "ws")
    shutil.copytree(ingested / "ws", ws.root)
    pretrain_in_process(ws.root, chunks=1)
    with database.writing(ws) as conn:
        stored = json.loads(conn.execute("SELECT settings FROM models WHERE run = 'r'").fetchone()[0])
        assert stored["lr_scaling"] == "sqrt" and stored["feature_grad_mult"] == 0.1  # today's defaults
        old = {k: v for k, v in stored.items() if k not in ("lr_scaling", "feature_grad_mult")}
        conn.execute("UPDATE models SET settings = ? WHERE run = 'r'", [json.dumps(old)])
        spec = resolve_run(conn, ws, PretrainSettings(workspace=str(ws.root), run="r", chunks=2))
        fresh = resolve_run(conn, ws, PretrainSettings(workspace=str(ws.root), run="new"))
    assert (spec.settings.lr_scaling, spec.settings.feature_grad_mult) == ("none", 1.0)
    assert (fresh.settings.lr_scaling, fresh.settings.feature_grad_mult) == ("sqrt", 0.1)


def test_kill_9_of_a_data2vec_run_with_activity_crops_resumes_the_same_run(ingested, tmp_path, cli_env):
    """The levers keep resume exact: the EMA teacher is in the checkpoint, the activity scores in
    DuckDB, the mel start in the config; a killed and resumed run ends with the same losses and teacher."""
    levers = ["--targets", "data2vec", "--crop-sampling", "activity", "--frontend-init", "mel", "--chunks", "2"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    shutil.copytree(ingested / "ws", reference)
    shutil.copytree(ingested / "ws", killed)
    from flows.pretrain import pretrain as flow

    flow(PretrainSettings(workspace=str(reference), run="r", steps_per_chunk=4, batch_size=4, crop_seconds=1.0,
                          model_overrides={"num_hidden_layers": 2}, chunks=2, targets="data2vec",
                          crop_sampling="activity", frontend_init="mel"))
    process = subprocess.Popen([CLI, "pretrain", "--workspace", killed, *ARGS, *levers], env=cli_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = killed / "checkpoints" / "r" / "chunk-0001"
    deadline = time.monotonic() + 300
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.4)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    resumed = pretrain(killed, cli_env, *levers)
    assert resumed.returncode == 0, resumed.stderr
    expected, got = losses(reference), losses(killed)
    assert [r[:2] for r in got] == [(s, 1 + s // 4) for s in range(8)]
    for a, b in zip(expected, got):
        assert a[2] == pytest.approx(b[2], rel=1e-5, abs=1e-6)
    import torch

    teachers = [torch.load(ws / "checkpoints" / "r" / "chunk-0002" / "state.pt", map_location="cpu",
                           weights_only=False)["teacher"] for ws in (reference, killed)]
    assert teachers[0].keys() == teachers[1].keys()
    # to float rounding, as the losses: the reference ran in this process, whose torch settings other
    # tests on this worker may have changed; bit-for-bit equality of a resumed teacher is checked in
    # one process by test_learning_levers.py
    for k in teachers[0]:
        torch.testing.assert_close(teachers[0][k], teachers[1][k], rtol=1e-5, atol=1e-6)
    with database.reading(Workspace.at(killed)) as conn:
        assert conn.execute("SELECT count(*) FROM segment_activity").fetchone()[0] == 24
