"""bench/learning.py end to end on a very small synthetic corpus: every layer and every baseline
scored with finite intervals. Whether the model wins is what the benchmark measures, not a test."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import learning  # noqa: E402


def test_up_and_downsweeps_share_their_log_mel_statistics():
    # the point of the synthetic corpus: direction is invisible to a log-mel summary, not to a model
    from tasks.baseline_features import logmel_stats

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
    expected = {"layer 0", "layer 1", "layer 2", "log-mel stats", "MFCC stats",
                "random layer 0", "random layer 1", "random layer 2"}
    assert set(result.rows) == expected
    for name, card in result.rows.items():
        for metric in ("probe_macro_f1", "knn5_macro_f1"):
            value, low, high = card[metric]
            assert all(math.isfinite(v) for v in (value, low, high)), (name, metric, card[metric])
            assert low <= high
    assert set(result.margins) == expected - {"log-mel stats"}
    for name, (value, low, high) in result.margins.items():
        assert all(math.isfinite(v) for v in (value, low, high)) and low <= high, name
        probe = result.rows[name]["probe_macro_f1"][0] - result.rows["log-mel stats"]["probe_macro_f1"][0]
        assert value == np.float64(probe) or abs(value - probe) < 1e-9, name
    assert result.best_layer in {"layer 0", "layer 1", "layer 2"}
    value, low, high = result.over_random
    assert all(math.isfinite(v) for v in (value, low, high)) and low <= high
