"""Scoring on synthetic data whose answer is known."""

import numpy as np
import pytest

from tasks.evaluation.metrics import grouped_folds, knn_predictions, purity_pnmi, scorecard


def planted(n_recordings=12, per=6, classes=3, dim=16, spread=0.15, seed=0):
    """Segments of recordings; each recording has one class; classes are separated directions."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 3
    x, y, groups = [], [], []
    for r in range(n_recordings):
        c = r % classes
        offset = rng.standard_normal(dim) * spread  # a recording's own colour
        for _ in range(per):
            x.append(centres[c] + offset + rng.standard_normal(dim) * spread)
            y.append(f"class{c}")
            groups.append(f"rec{r}")
    return np.array(x), np.array(y), np.array(groups)


def test_planted_structure_scores_near_one():
    x, y, groups = planted()
    card = scorecard(x, y, groups, n_boot=50)
    for metric in ("knn1_accuracy", "knn5_macro_f1", "probe_macro_f1", "precision_at_1", "mean_average_precision",
                   "cluster_nmi", "cluster_ari"):
        assert card[metric][0] > 0.95, (metric, card[metric])
    value, low, high = card["knn1_accuracy"]
    assert low <= value <= high


def test_shuffled_labels_score_near_chance():
    x, y, groups = planted(n_recordings=24, per=5, seed=1)
    rng = np.random.default_rng(3)
    labels_of = {g: rng.choice(["a", "b", "c"]) for g in np.unique(groups)}  # shuffled per recording
    shuffled = np.array([labels_of[g] for g in groups])
    card = scorecard(x, shuffled, groups, n_boot=200)
    for metric in ("knn5_accuracy", "precision_at_1"):
        value, low, high = card[metric]
        assert low <= 1 / 3 + 0.1 and value < 0.6, (metric, card[metric])


def test_two_classes_get_roc_auc():
    x, y, groups = planted(classes=2)
    card = scorecard(x, y, groups, n_boot=20)
    assert card["roc_auc"][0] > 0.95


def test_grouped_splits_never_leak_a_recording():
    groups = np.repeat([f"r{i}" for i in range(9)], 4)
    for train, test in grouped_folds(groups):
        assert not set(groups[train]) & set(groups[test])
    few = np.repeat(["a", "b", "c"], 3)
    assert len(grouped_folds(few)) == 3  # leave one recording out


def test_knn_never_uses_the_segments_own_recording():
    # two recordings with the same features but different labels: only cross-recording votes count
    x = np.array([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    y = np.array(["a", "a", "b", "b"])
    groups = np.array(["r1", "r1", "r2", "r2"])
    assert list(knn_predictions(x, y, groups, 1).y_pred) == ["b", "b", "a", "a"]


def test_pnmi_and_purity():
    labels = np.repeat(["s1", "s2", "s3"], 50)
    assert purity_pnmi(labels.copy(), labels) == pytest.approx((1.0, 1.0))
    units = np.arange(150) % 7
    purity, pnmi = purity_pnmi(units, np.random.default_rng(0).permutation(labels))
    assert pnmi < 0.1
