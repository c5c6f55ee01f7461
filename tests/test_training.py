"""Pretraining without Prefect: learning, checkpoints, exports, data selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Model

from quick_ingest import ingest_quick
from schemas.settings import PretrainSettings
from signals import click_train, noise, sweep, tone, write
from tasks import checkpoints, store
from tasks.pretrain_run import collapse_warning, resolve_run, train_chunk, training_index
from tasks.training import Schedule, StepMetrics, TrainingDiverged, build_trainer, data_stream, load_checkpoint, pick_device
from tasks.workspace import Workspace

RATE = 16000
FAST = dict(preset="tiny", batch_size=4, crop_seconds=1.0, model_overrides={"num_hidden_layers": 2},
            learning_rate=1e-3)


def synthetic_calls(folder, n=8, seconds=6.0):
    """Recordings with structure to learn: tone bursts, sweeps and click trains over noise."""
    rng = np.random.default_rng(1)
    for i in range(n):
        x = noise(seconds, RATE, 0.02, seed=i)
        for start in np.arange(0.2, seconds - 0.5, 0.7):
            kind = rng.integers(3)
            part = (tone(rng.choice([400, 900, 2500]), 0.3, RATE, 0.4) if kind == 0 else
                    sweep(300, 3000, 0.3, RATE, 0.4) if kind == 1 else click_train(0.3, RATE, 0.02, 0.6))
            s = int(start * RATE)
            x[s : s + len(part)] += part
        write(folder / f"call_{i:02d}.wav", x, RATE, "PCM_16")


@pytest.fixture(scope="module")
def calls_workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    synthetic_calls(root / "rec")
    ws = Workspace.at(root / "ws")
    ingest_quick(ws, root / "rec", segment_seconds=2.0)
    return ws


def fresh_spec(workspace, **options):
    settings = PretrainSettings(workspace=str(workspace.root), **{**FAST, **options})
    with store.writing(workspace) as conn:
        spec = resolve_run(conn, workspace, settings)
        index = training_index(conn, workspace, spec)
    return spec, index


def test_loss_decreases_over_a_few_dozen_tiny_steps(calls_workspace):
    spec, index = fresh_spec(calls_workspace, run="learn", steps_per_chunk=40, chunks=1)
    result = train_chunk(spec, index)
    losses = [m.loss for m in result.metrics]
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.1, losses
    assert all(np.isfinite(losses))
    last = result.metrics[-1]
    assert len(last.perplexity) == 2 and 0 <= last.unused_code_share <= 1 and 0 <= last.accuracy <= 1
    assert last.learning_rate > 0 and last.audio_seconds == pytest.approx(4.0)


def test_checkpoint_round_trip_and_transformers_export(calls_workspace):
    spec, index = fresh_spec(calls_workspace, run="roundtrip", steps_per_chunk=3, chunks=1)
    result = train_chunk(spec, index)
    info = result.checkpoint
    assert info.chunk == 1 and info.step == 3 and (info.path / "hf" / "config.json").exists()
    assert not list(spec.run_dir.glob("*.partial"))
    device = pick_device("cpu")
    schedule = Schedule(spec.settings, spec.horizon)
    restored = build_trainer(spec.model_config(), spec.settings, schedule, device)
    saved = load_checkpoint(restored, info, device)
    assert (restored.step, restored.chunk) == (3, 1)
    assert restored.position == tuple(saved["data_position"]["position"]) and restored.position[1] == 12
    assert saved["temperature"] == pytest.approx(schedule.temperature(2))
    assert restored.scheduler.last_epoch == 3
    for key, value in torch.load(info.path / "state.pt", weights_only=False)["model"].items():
        assert torch.equal(restored.model.state_dict()[key], value)
    # plain transformers loads the export, and computes what the trained encoder computes
    exported = Wav2Vec2Model.from_pretrained(info.path / "hf").eval()
    restored.model.eval()
    x = torch.randn(1, RATE)
    with torch.no_grad():
        ours = restored.model.wav2vec2(x).last_hidden_state
        theirs = exported(x).last_hidden_state
    torch.testing.assert_close(ours, theirs)
    assert exported.config.sampling_rate == RATE


def test_nan_silent_and_held_out_segments_are_not_trained_on(tmp_path):
    folder = tmp_path / "rec"
    x = noise(6.0, RATE, 0.1)
    x[int(2.5 * RATE)] = np.nan  # segment 1 of 3
    write(folder / "nan.wav", x, RATE, "FLOAT")
    write(folder / "silent.wav", np.zeros(2 * RATE, np.float32), RATE, "PCM_16")
    write(folder / "held_out.wav", noise(4.0, RATE, 0.1, seed=5), RATE, "PCM_16")
    ws = Workspace.at(tmp_path / "ws")
    ingest_quick(ws, folder, segment_seconds=2.0)
    spec, index = fresh_spec(ws, exclude_recordings=["held_out.wav"])
    with store.reading(ws) as conn:
        names = dict(conn.execute("SELECT segment_id, file_name FROM segments_with_recordings").fetchall())
        nan_segment = conn.execute("SELECT segment_id FROM segments WHERE nonfinite_count > 0").fetchall()
    assert len(nan_segment) == 1 and nan_segment[0][0] not in index.segment_ids
    assert sorted(names[s] for s in index.segment_ids) == ["nan.wav", "nan.wav"]


def test_a_nan_loss_stops_the_chunk_without_a_checkpoint(calls_workspace, tmp_path):
    spec, index = fresh_spec(calls_workspace, run="diverge", steps_per_chunk=2, chunks=1)
    poisoned = tmp_path / "poisoned"
    state = build_trainer(spec.model_config(), spec.settings, Schedule(spec.settings, 2), pick_device("cpu"))
    with torch.no_grad():
        state.model.project_hid.weight.fill_(float("nan"))
    state.model.save_pretrained(poisoned)
    bad = spec.__class__(**{**spec.__dict__, "settings": spec.settings.model_copy(update={"init_from": str(poisoned)})})
    with pytest.raises(TrainingDiverged, match="non-finite loss"):
        train_chunk(bad, index)
    assert checkpoints.complete(spec.run_dir) == []


def test_the_stream_is_a_pure_function_of_its_position(calls_workspace):
    spec, index = fresh_spec(calls_workspace, run="stream")
    state = build_trainer(spec.model_config(), spec.settings, Schedule(spec.settings, 10), pick_device("cpu"))
    whole = data_stream(index, spec.settings, state)
    batches = [whole.next_batch() for _ in range(7)]  # crosses an epoch boundary (24 segments / 4)
    state.position = batches[3].end_position
    resumed = data_stream(index, spec.settings, state)
    for expected in batches[4:]:
        got = resumed.next_batch()
        np.testing.assert_array_equal(got.audio, expected.audio)
        assert got.end_position == expected.end_position
    assert batches[-1].end_position[0] == 1


def test_codebook_collapse_is_reported():
    def metrics(p):
        return StepMetrics(0, 1, 1.0, 1.0, 0.0, p, 0.9, 0.1, 1.0, 1e-4, 1.0, 10, 1.0, 1.0)
    assert collapse_warning([metrics([1.2, 40.0])] * 10, 64) is not None
    assert collapse_warning([metrics([30.0, 40.0])] * 10, 64) is None
