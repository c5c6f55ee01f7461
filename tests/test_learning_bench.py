"""bench/learning.py end to end on a very small synthetic corpus: every layer and every baseline
scored with finite intervals. Whether the model wins is what the benchmark measures, not a test."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import learning  # noqa: E402


def test_up_and_downsweeps_share_their_log_mel_statistics():
    # the point of the synthetic corpus: direction is invisible to a log-mel summary, not to a model
    from tasks.evaluation.baselines import logmel_stats

    rate = 8000
    for seed in range(4):
        up = learning.call("upsweep", rate, np.random.default_rng(seed))
        down = learning.call("downsweep", rate, np.random.default_rng(seed))
        whistle = learning.call("whistle", rate, np.random.default_rng(seed))
        assert len(up) == len(down) and np.abs(up - down).max() > 0.5
        same_band = np.abs(logmel_stats(up, rate) - logmel_stats(down, rate)).mean()
        other_class = np.abs(logmel_stats(up, rate) - logmel_stats(whistle, rate)).mean()
        assert same_band < 0.2 * other_class, (seed, same_band, other_class)


def test_bench_scores_every_layer_and_baseline_with_finite_intervals(tmp_path):
    result = learning.run_bench(
        tmp_path, "synthetic", "call_type",
        {"preset": "tiny", "batch_size": 4, "crop_seconds": 1.0, "device": "cpu",
         "model_overrides": {"num_hidden_layers": 2}},
        learning.Budget(steps=4, chunk_steps=2), sample_rate=4000, segment_seconds=1.0, n_boot=20,
        synthetic=dict(recordings_per_class=2, segments_per_recording=2, snr_db=(0.0, 6.0)), log=lambda *a, **k: None,
    )
    assert result.steps_done == 4
    assert result.recordings == 2 * len(learning.CLASSES) and result.segments == 2 * result.recordings
    expected = {"layer 0", "layer 1", "layer 2", "all layers", "log-mel stats", "MFCC stats",
                "random layer 0", "random layer 1", "random layer 2"}
    assert set(result.rows) == expected
    for name, card in result.rows.items():
        for metric in ("probe_pooled_macro_f1", "probe_macro_f1", "knn5_macro_f1"):
            value, low, high = card[metric]
            assert all(math.isfinite(v) for v in (value, low, high)), (name, metric, card[metric])
            assert low <= high
    assert set(result.margins) == expected - {"log-mel stats"}
    for name, (value, low, high) in result.margins.items():
        assert all(math.isfinite(v) for v in (value, low, high)) and low <= high, name
        assert result.metric == "probe_pooled_macro_f1"
        probe = result.rows[name][result.metric][0] - result.rows["log-mel stats"][result.metric][0]
        assert value == np.float64(probe) or abs(value - probe) < 1e-9, name
    assert result.best_layer in {"layer 0", "layer 1", "layer 2"}
    value, low, high = result.over_random
    assert all(math.isfinite(v) for v in (value, low, high)) and low <= high
    # the learning curve: one point per kept checkpoint, by audio seen (2 steps x 4 crops x 1 s each)
    assert [(c["step"], round(c["hours_seen"] * 3600)) for c in result.curve] == [(2, 8), (4, 16)]
    assert all(0.0 <= c["best"] <= 1.0 and 0.0 <= c["all_layers"] <= 1.0 for c in result.curve)
    assert math.isfinite(result.slope_per_hour)


def test_logmel_rq_targets_ignore_gain():
    import torch

    from tasks.training.logmel_targets import frame_targets

    rng = np.random.default_rng(0)
    audio = learning.ocean_noise(8000, 4000, rng)
    sweep = learning.call("upsweep", 4000, rng)
    audio[1000 : 1000 + len(sweep)] += 3 * sweep
    x = torch.from_numpy(np.stack([audio, learning.ocean_noise(8000, 4000, rng)]))
    targets = frame_targets(x, 100, 80, 4000, 32)
    assert targets.shape == (2, 100) and int(targets.min()) >= 0 and int(targets.max()) < 32
    # the bands are standardised over the crop: the level of a recording is not what the targets say
    assert torch.equal(targets, frame_targets(10 * x, 100, 80, 4000, 32))


# from random weights: cross-entropy over 64 codes near ln 64; squared error per standardised band
# near 1 (plus the diversity term); each with its own chance accuracy
@pytest.mark.parametrize("targets, loss_range, chance", [("logmel-rq", (math.log(64) - 1, math.log(64) + 1), 1 / 64),
                                                         ("logmel-mse", (0.8, 2.2), 1 / 21)])
def test_alternative_targets_train_with_their_own_chance_line(tmp_path, targets, loss_range, chance):
    from schemas.settings import PretrainSettings
    from tasks.workspace import Workspace

    labels = learning.make_synthetic(tmp_path / "audio", 4000, 2, 2, 1.0, (0.0, 6.0), seed=0)
    ws = Workspace.at(str(tmp_path / "ws"))
    learning.ingest(ws, tmp_path / "audio", labels, 4000, 1.0)
    settings = PretrainSettings(workspace=str(ws.root), run="alt", steps_per_chunk=2, chunks=1, batch_size=4,
                                crop_seconds=1.0, device="cpu",
                                model_overrides={"num_hidden_layers": 1, "pretrain_targets": targets})
    steps, _, end = learning.pretrain(ws, settings, learning.Budget(steps=2), log=lambda *a, **k: None)
    assert steps == 2 and math.isfinite(end["loss"])
    assert loss_range[0] < end["loss"] < loss_range[1]
    assert end["chance"] == chance


def test_logmel_mse_loss_is_one_per_band_for_the_crop_mean_and_zero_for_the_bands():
    from types import SimpleNamespace

    import torch

    from tasks.model.objectives import masked_task
    from tasks.training.logmel_targets import N_MELS, _orthonormal, regression_terms, standardised_logmel

    rng = np.random.default_rng(1)
    audio = np.stack([learning.ocean_noise(8000, 8000, rng) for _ in range(2)])
    sweep = learning.call("upsweep", 8000, rng)[:2400]
    audio[0, 2000:2000 + len(sweep)] += 3 * sweep
    x = torch.from_numpy(audio.astype(np.float32))
    frames, hop, dim = 50, 160, 64
    bands = standardised_logmel(x, frames, hop, 8000)
    assert bands.shape == (2, frames, N_MELS)
    assert torch.allclose(bands, standardised_logmel(10 * x, frames, hop, 8000), atol=1e-3)  # gain is not a target
    model = SimpleNamespace(config=SimpleNamespace(conv_stride=(5, 4, 4, 2), sampling_rate=8000,
                                                   pretrain_targets="logmel-mse"))
    every = torch.ones((2, frames), dtype=torch.bool)
    negatives = torch.stack([torch.randperm(frames)[:10] for _ in range(2 * frames)]).view(2, frames, 10)
    negatives = torch.where(negatives == torch.arange(frames)[None, :, None], (negatives + 1) % frames, negatives)
    inputs = SimpleNamespace(audio=x, masked=every, negatives=negatives)

    # predicting every band's crop mean (0 after standardising) scores 1 per band: the chance line,
    # exactly (T - 1) / T per frame with the unbiased spread
    loss, _ = regression_terms(model, SimpleNamespace(projected_states=torch.zeros(2, frames, dim)), inputs)
    assert float(loss) == pytest.approx(2 * (frames - 1), rel=1e-4)
    # predicting the bands themselves (through the fixed orthonormal map) scores 0, and every frame is
    # nearer its own bands than its distractors'
    exact = bands @ _orthonormal(dim, "cpu")
    loss, correct = regression_terms(model, SimpleNamespace(projected_states=exact), inputs)
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and int(correct) == 2 * frames
    task = masked_task({"pretrain_targets": "logmel-mse", "num_negatives": 20})
    assert task.loss_at_chance == 1.0 and task.chance == 1 / 21
    with pytest.raises(ValueError, match="unknown pretrain_targets"):
        masked_task({"pretrain_targets": "logmel"})

