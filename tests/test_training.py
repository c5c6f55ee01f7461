"""Pretraining without Prefect: learning, checkpoints, exports, data selection."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from quick_ingest import ingest_quick
from signals import click_train, noise, sweep, tone, write
from transformers import Wav2Vec2Model
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2GumbelVectorQuantizer

from schemas.records import StepMetrics
from schemas.settings import PretrainSettings
from tasks.catalog import runs
from tasks.model import checkpoints
from tasks.model.config import build_config
from tasks.model.device import pick_device
from tasks.model.frontend import plan_feature_encoder
from tasks.model.health import VERDICTS, training_health
from tasks.training.data import Batch
from tasks.training.loop import (
    Schedule,
    TrainingDiverged,
    build_trainer,
    data_stream,
    effective_learning_rate,
    forward_step,
    load_checkpoint,
    prepare_inputs,
    restore_rng_states,
    restore_state,
    sample_negatives,
    span_mask,
    step_seed,
    train_steps,
)
from tasks.training.run import collapse_warning, resolve_run, train_chunk, training_index
from tasks.workspace import Workspace, database

RATE = 16000
FAST = dict(preset="tiny", batch_size=4, crop_seconds=1.0, model_overrides={"num_hidden_layers": 2},
            learning_rate=1e-3, lr_scaling="none")


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
    with database.writing(workspace) as conn:
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
    saved = load_checkpoint(restored, info)
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
    with database.reading(ws) as conn:
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


def _moved(value):
    """What a device-moving map location leaves of a checkpoint, as seen from the CPU: every tensor
    changed (uint8 RNG states to int64, float weights to float64), the values kept. A CUDA map
    location moves the CPU RNG state to the GPU; torch.set_rng_state then raises
    "RNG state must be a torch.ByteTensor", as it does for these."""
    if isinstance(value, torch.Tensor):
        return value.long() if value.dtype == torch.uint8 else value.double() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _moved(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and any(isinstance(v, (torch.Tensor, dict, list)) for v in value):
        return type(value)(_moved(v) for v in value)
    return value


def test_a_checkpoint_resumes_whatever_device_its_tensors_were_mapped_to(calls_workspace):
    spec, index = fresh_spec(calls_workspace, run="mapped", steps_per_chunk=2, chunks=2)
    info = train_chunk(spec, index).checkpoint
    device = pick_device("cpu")
    schedule = Schedule(spec.settings, spec.horizon)
    saved = torch.load(info.path / "state.pt", weights_only=False)
    moved = _moved(saved)
    assert moved["rng"]["torch"].dtype == torch.int64 and moved["model"]["project_hid.weight"].dtype == torch.float64

    restore_rng_states(moved["rng"])  # raised TypeError (not a ByteTensor) before the fix
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])

    # the whole state, from the moved copy and from a plain load: the next chunk's steps agree
    runs = []
    for source in ("moved", "loaded"):
        state = build_trainer(spec.model_config(), spec.settings, schedule, device)
        if source == "moved":
            restore_state(state, moved)
        else:
            load_checkpoint(state, info)
        assert state.model.project_hid.weight.dtype == torch.float32
        runs.append(train_steps(state, data_stream(index, spec.settings, state), spec.settings, schedule, device, 2))
    assert [m.loss for m in runs[0]] == [m.loss for m in runs[1]]
    assert [m.step for m in runs[0]] == [2, 3]


def test_masks_and_distractors_stay_inside_valid_frames_and_follow_the_seed():
    lengths = torch.tensor([200, 60, 0, 12, 9])
    draw = lambda seed: span_mask(lengths, 200, 0.65, 10, 2, torch.Generator().manual_seed(seed))  # noqa: E731
    masked = draw(3)
    assert torch.equal(masked, draw(3)) and not torch.equal(masked, draw(4))
    valid = torch.arange(200)[None, :] < lengths[:, None]
    assert not (masked & ~valid).any()
    # rows without a frame or too short for a span get none; 12 frames hold two overlapping spans of 10
    assert masked[0].sum() > 50 and masked[2].sum() == 0 and masked[4].sum() == 0 and masked[3].sum() >= 10
    negatives = sample_negatives(masked, 20, torch.Generator().manual_seed(0))
    for row in range(len(lengths)):
        own = torch.nonzero(masked[row]).squeeze(1)
        picked = negatives[row][masked[row]]
        assert masked[row][picked].all() and (picked != own[:, None]).all()


def _tiny_model_and_batch(seconds: float = 1.0):
    settings = PretrainSettings(**FAST)
    plan = plan_feature_encoder(RATE, settings.frame_ms, settings.receptive_field_ms)
    config = build_config("tiny", plan, {"num_hidden_layers": 2})
    state = build_trainer(config, settings, Schedule(settings, 10), pick_device("cpu"))
    width = int(seconds * RATE)
    lengths = np.array([width, width // 2, 0])  # a full crop, a half-padded one, an all-zero padded row
    audio = np.zeros((3, width), np.float32)
    rng = np.random.default_rng(0)
    for row, length in enumerate(lengths):
        audio[row, :length] = rng.standard_normal(length)
    return state, settings, Batch(audio, float(lengths.sum()) / RATE, (0, 3), lengths)


def test_an_all_padding_row_leaves_loss_and_gradients_finite_in_bf16():
    state, settings, batch = _tiny_model_and_batch()
    model = state.model
    model.train()
    inputs = prepare_inputs(model, batch, settings, pick_device("cpu"), step_seed(0, 0, 0))
    assert inputs.masked[2].sum() == 0 and inputs.frame_mask[2].sum() == 0 and inputs.masked[0].sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = forward_step(model, model, inputs, pick_device("cpu"))
    loss = out.loss / inputs.n_masked
    loss.backward()
    assert torch.isfinite(loss) and 0 < float(out.correct) <= int(inputs.n_masked)
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert bad == []
    assert model.project_hid.weight.grad.abs().sum() > 0


def test_the_learning_rate_follows_the_effective_batch():
    base = PretrainSettings(batch_size=8, crop_seconds=4.0, learning_rate=5e-4)
    assert effective_learning_rate(base) == pytest.approx(5e-4)
    assert effective_learning_rate(base.model_copy(update={"batch_size": 32})) == pytest.approx(1e-3)
    assert effective_learning_rate(base.model_copy(update={"grad_accum": 4, "lr_scaling": "linear"})) == pytest.approx(2e-3)
    assert effective_learning_rate(base.model_copy(update={"batch_size": 2, "lr_scaling": "none"})) == pytest.approx(5e-4)


def test_length_buckets_keep_padding_low(tmp_path):
    folder = tmp_path / "rec"
    for i, seconds in enumerate([0.6, 0.9, 1.3, 2.0, 0.7, 1.1, 1.7, 0.8] * 2):  # short clips of mixed lengths
        write(folder / f"clip_{i:02d}.wav", noise(seconds, RATE, 0.1, seed=i), RATE, "PCM_16")
    ws = Workspace.at(tmp_path / "ws")
    ingest_quick(ws, folder, segment_seconds=2.0)
    spec, index = fresh_spec(ws, crop_seconds=2.0)
    state = build_trainer(spec.model_config(), spec.settings, Schedule(spec.settings, 10), pick_device("cpu"))
    stream = data_stream(index, spec.settings, state)
    batches = [stream.next_batch() for _ in range(len(index) // 4)]
    padded = sum(b.padding_share * b.audio.size for b in batches) / sum(b.audio.size for b in batches)
    # unbucketed, these crops padded to 2 s would be 1 - mean(length)/2 = about 45% padding
    assert padded < 0.10, padded
    assert all(b.audio.shape[1] == b.lengths.max() for b in batches)
    # batches of like lengths: cutting crops to the batch's width loses little audio (one epoch here)
    kept = sum(int(b.lengths.sum()) for b in batches) / np.minimum(index.valid_samples, 2 * RATE).sum()
    print(f"padding {padded:.3f}, audio kept {kept:.3f}")
    assert kept > 0.85, kept


def test_the_health_verdict_tells_chance_from_learning_and_collapse():
    def verdict(accuracy, perplexity, loss=2.5):
        return training_health({"accuracy": accuracy, "contrastive_loss": loss, "perplexity": perplexity,
                                "unused_code_share": 0.5}, num_negatives=20, codes_per_group=64, groups=2,
                               label="tiny@3")
    at_chance = verdict(0.057, [30.0, 40.0])
    assert at_chance["verdict"] == "at chance" and at_chance["chance"] == pytest.approx(1 / 21)
    assert at_chance["sentence"].startswith("tiny@3 is at chance: masked-prediction accuracy 0.057 vs chance 0.048")
    assert at_chance["max_perplexity"] == 128 and at_chance["code_usage"] == 0.5
    assert at_chance["loss_at_chance"] == pytest.approx(np.log(21))
    assert verdict(0.4, [30.0, 40.0])["verdict"] == "learning"
    assert verdict(0.9, [1.1, 40.0])["verdict"] == "collapsed"
    assert verdict(float("nan"), [30.0, 40.0], loss=float("nan"))["verdict"] == "diverged"


def test_the_chunk_verdict_is_kept_with_the_checkpoint_and_in_duckdb(calls_workspace, tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    shutil.copytree(calls_workspace.root, ws.root)
    spec, index = fresh_spec(ws, run="health", steps_per_chunk=2, chunks=1)
    result = train_chunk(spec, index)
    steps, health = checkpoints.read_metrics(result.checkpoint.path)
    assert health == result.health and health["verdict"] in VERDICTS
    assert health["sentence"].startswith(f"health@1 is {health['verdict']}: ")
    assert [s["step"] for s in steps] == [0, 1]
    with database.writing(ws) as conn:
        conn.execute("DROP TABLE chunk_health")  # a workspace made before verdicts were kept
        database.apply_schema(conn, ws)
        runs.commit_chunk(conn, ws, "health", result.checkpoint, steps)
        row = conn.execute("SELECT chunk, verdict, chance, sentence FROM chunk_health WHERE run = 'health'").fetchall()
    assert row == [(1, health["verdict"], pytest.approx(1 / 21), health["sentence"])]


def test_a_code_no_frame_can_choose_leaves_the_diversity_gradient_finite():
    """The cause of base's NaN gradients: once logits grow, some code's softmax underflows to 0 in
    every masked frame, and the perplexity's xlogy(p, p) has a NaN gradient at p = 0."""
    state, settings, batch = _tiny_model_and_batch()
    model = state.model
    model.train()
    quantizer = model.quantizer
    with torch.no_grad():
        quantizer.weight_proj.bias[0] = -1e4  # code 0 of group 0: probability exactly 0 in every frame
    features = torch.randn(2, 50, model.config.conv_dim[-1])
    mask = torch.ones(2, 50, dtype=torch.bool)
    _, stock = Wav2Vec2GumbelVectorQuantizer.forward(quantizer, features, mask)  # transformers' own
    stock.backward()
    assert torch.isnan(quantizer.weight_proj.weight.grad).any()
    model.zero_grad()
    _, ours = quantizer(features, mask)
    ours.backward()
    assert torch.isfinite(quantizer.weight_proj.weight.grad).all() and torch.isfinite(ours)
    model.zero_grad()
    inputs = prepare_inputs(model, batch, settings, pick_device("cpu"), step_seed(0, 0, 0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = forward_step(model, model, inputs, pick_device("cpu"))
    (out.loss / inputs.n_masked).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
