"""How well embeddings and units separate what matters: metrics with splits by recording.

Every split keeps all segments of a recording on one side (a recording's segments are near
copies of each other; letting them straddle a split would score memory, not understanding), and
confidence intervals come from resampling recordings, not segments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score, roc_auc_score
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def grouped_folds(groups: np.ndarray, max_folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-recording-out when there are few recordings, grouped k-fold otherwise."""
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError("scoring needs labelled segments from at least two recordings")
    splitter = LeaveOneGroupOut() if n_groups <= max_folds else GroupKFold(n_splits=max_folds)
    index = np.arange(len(groups))
    return list(splitter.split(index, groups=groups))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _standardise(fit: np.ndarray, *apply: np.ndarray) -> list[np.ndarray]:
    """Z-score every dimension with statistics of `fit`. Without it, cosine comparisons of raw
    features are dominated by their common offset (log-mel levels, a shared embedding mean)."""
    mean, std = fit.mean(0), fit.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    return [(a - mean) / std for a in apply]


@dataclass
class Predictions:
    """Cross-validated predictions for every segment, kept so intervals can resample recordings."""

    y_true: np.ndarray
    y_pred: np.ndarray
    score: np.ndarray | None = None  # probability of the positive class, for two-class ROC-AUC


def knn_predictions(x: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int) -> Predictions:
    """Cosine k-nearest-neighbour vote on standardised features (statistics of the training fold),
    neighbours drawn from other recordings only."""
    x = x.astype(np.float64)
    classes = np.unique(y)
    pred = np.empty(len(y), dtype=y.dtype)
    score = np.zeros(len(y))
    for train, test in grouped_folds(groups):
        train_x, test_x = (_unit(a) for a in _standardise(x[train], x[train], x[test]))
        sims = test_x @ train_x.T
        kk = min(k, len(train))
        top = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
        for row, neighbours in zip(test, top):
            votes = y[train][neighbours]
            counts = np.array([(votes == c).sum() for c in classes])
            pred[row] = classes[int(np.argmax(counts))]
            score[row] = counts[-1] / kk
    return Predictions(y, pred, score if len(classes) == 2 else None)


def probe_predictions(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0,
                      max_folds: int = 5) -> Predictions:
    """Logistic regression on standardised features, trained fold by fold on other recordings."""
    pred = np.empty(len(y), dtype=y.dtype)
    classes = np.unique(y)
    score = np.zeros(len(y))
    for train, test in grouped_folds(groups, max_folds):
        if len(np.unique(y[train])) < 2:
            pred[test] = y[train][0]
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
        model.fit(x[train], y[train])
        pred[test] = model.predict(x[test])
        if len(classes) == 2:
            proba = model.predict_proba(x[test])
            positive = list(model.classes_).index(classes[-1]) if classes[-1] in model.classes_ else None
            score[test] = proba[:, positive] if positive is not None else 0.0
    return Predictions(y, pred, score if len(classes) == 2 else None)


# How a segment's frames become one vector, as BEANS' baselines pool (earthspecies/beans): a short
# call in a window of noise moves the max and the spread of its frames far more than their mean.
POOLINGS = ("mean", "mean+std", "mean+max")


def pool_frames(frames: np.ndarray, pooling: str) -> np.ndarray:
    """One segment's (frames, D) pooled as `pooling` ("mean", "mean+std", "mean+max", ...)."""
    parts = {"mean": lambda f: f.mean(0), "std": lambda f: f.std(0), "max": lambda f: f.max(0)}
    return np.concatenate([parts[how](frames) for how in pooling.split("+")])


@dataclass
class PooledPredictions(Predictions):
    chosen: list[str] | None = None  # the pooling each outer fold chose on its training recordings


def pooled_probe_predictions(options: dict[str, np.ndarray], y: np.ndarray, groups: np.ndarray,
                             seed: int = 0, inner_folds: int = 3) -> PooledPredictions:
    """The linear probe with its pooling chosen inside each training fold, never on scored data.

    For each outer fold (grouped by recording, as probe_predictions), every pooling in `options`
    (name -> (segments, D) features, rows aligned) is scored by macro-F1 in an inner grouped
    cross-validation over the training recordings only; the best (the first listed on a tie) is
    fitted on the whole training fold and predicts the held-out recordings."""
    names = list(options)
    pred = np.empty(len(y), dtype=y.dtype)
    classes = np.unique(y)
    score = np.zeros(len(y))
    chosen = []
    for train, test in grouped_folds(groups):
        if len(np.unique(y[train])) < 2:
            pred[test] = y[train][0]
            chosen.append(names[0])
            continue
        best = names[0]
        if len(names) > 1 and len(np.unique(groups[train])) >= 2:
            inner = {name: macro_f1(probe_predictions(options[name][train], y[train], groups[train], seed,
                                                      max_folds=inner_folds)) for name in names}
            best = max(names, key=lambda name: inner[name])  # max keeps the first of equals
        chosen.append(best)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
        model.fit(options[best][train], y[train])
        pred[test] = model.predict(options[best][test])
        if len(classes) == 2:
            proba = model.predict_proba(options[best][test])
            positive = list(model.classes_).index(classes[-1]) if classes[-1] in model.classes_ else None
            score[test] = proba[:, positive] if positive is not None else 0.0
    return PooledPredictions(y, pred, score if len(classes) == 2 else None, chosen)


def accuracy(p: Predictions) -> float:
    return float(np.mean(p.y_true == p.y_pred))


def macro_f1(p: Predictions) -> float:
    return float(f1_score(p.y_true, p.y_pred, average="macro", labels=np.unique(p.y_true), zero_division=0))


def roc_auc(p: Predictions) -> float:
    classes = np.unique(p.y_true)
    if p.score is None or len(classes) != 2:
        return float("nan")
    return float(roc_auc_score(p.y_true == classes[-1], p.score))


def retrieval(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query: precision@1 and average precision, searching segments of other recordings only
    (cosine on features standardised over the set: no labels are used)."""
    xn = _unit(_standardise(x.astype(np.float64), x.astype(np.float64))[0])
    p1, ap = np.full(len(y), np.nan), np.full(len(y), np.nan)
    for i in range(len(y)):
        others = groups != groups[i]
        relevant = (y == y[i]) & others
        if not relevant.any():
            continue
        sims = xn[others] @ xn[i]
        order = np.argsort(-sims, kind="stable")
        hits = (y[others][order] == y[i]).astype(float)
        p1[i] = hits[0]
        ap[i] = float((np.cumsum(hits) / np.arange(1, len(hits) + 1))[hits == 1].mean())
    return p1, ap


def clustering(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """NMI and adjusted Rand index of k-means clusters (k = number of classes) against labels."""
    k = len(np.unique(y))
    standard = _standardise(x.astype(np.float64), x.astype(np.float64))[0]
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(_unit(standard))
    return float(normalized_mutual_info_score(y, clusters)), float(adjusted_rand_score(y, clusters))


def purity_pnmi(units: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Frame-level unit purity and phone-normalised mutual information, I(unit; label) / H(label),
    as used to score HuBERT's units."""
    _, u = np.unique(units, return_inverse=True)
    _, l = np.unique(labels, return_inverse=True)
    joint = np.zeros((u.max() + 1, l.max() + 1))
    np.add.at(joint, (u, l), 1)
    joint /= joint.sum()
    pu, pl = joint.sum(1), joint.sum(0)
    purity = float(joint.max(1).sum())
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(pu, pl)[nz])).sum())
    h_label = float(-(pl[pl > 0] * np.log(pl[pl > 0])).sum())
    return purity, (mi / h_label if h_label > 0 else float("nan"))


def bootstrap(metric: Callable[[np.ndarray], float], groups: np.ndarray, n: int = 200, seed: int = 0,
              level: float = 0.95) -> tuple[float, float]:
    """Interval of `metric(indices)` when whole recordings are resampled with replacement."""
    unique = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in unique}
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        picked = rng.choice(unique, size=len(unique), replace=True)
        idx = np.concatenate([members[g] for g in picked])
        value = metric(idx)
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


METRICS = ("knn1_accuracy", "knn1_macro_f1", "knn5_accuracy", "knn5_macro_f1", "probe_macro_f1", "probe_pooled_macro_f1",
           "precision_at_1", "mean_average_precision", "cluster_nmi", "cluster_ari", "roc_auc")


def scorecard(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0,
              n_boot: int = 200, poolings: dict[str, np.ndarray] | None = None) -> dict[str, tuple[float, float, float]]:
    """Every segment-level metric as (value, CI low, CI high); ROC-AUC only for two classes.
    With `poolings` (name -> features, e.g. POOLINGS), also the probe with its pooling chosen
    inside the training folds (probe_pooled_macro_f1)."""
    knn1 = knn_predictions(x, y, groups, 1)
    knn5 = knn_predictions(x, y, groups, 5)
    probe = probe_predictions(x, y, groups, seed)
    p1, ap = retrieval(x, y, groups)
    nmi, ari = clustering(x, y, seed)

    def on(p: Predictions, fn) -> Callable[[np.ndarray], float]:
        return lambda idx: fn(Predictions(p.y_true[idx], p.y_pred[idx], None if p.score is None else p.score[idx]))

    def mean_of(values: np.ndarray) -> Callable[[np.ndarray], float]:
        return lambda idx: float(np.nanmean(values[idx])) if np.isfinite(values[idx]).any() else float("nan")

    def with_ci(value: float, fn) -> tuple[float, float, float]:
        return (value, *bootstrap(fn, groups, n=n_boot, seed=seed))

    def auc_on(idx: np.ndarray) -> float:
        return roc_auc(Predictions(probe.y_true[idx], probe.y_pred[idx], probe.score[idx])) \
            if len(np.unique(probe.y_true[idx])) == 2 else float("nan")

    card = {
        "knn1_accuracy": with_ci(accuracy(knn1), on(knn1, accuracy)),
        "knn1_macro_f1": with_ci(macro_f1(knn1), on(knn1, macro_f1)),
        "knn5_accuracy": with_ci(accuracy(knn5), on(knn5, accuracy)),
        "knn5_macro_f1": with_ci(macro_f1(knn5), on(knn5, macro_f1)),
        "probe_macro_f1": with_ci(macro_f1(probe), on(probe, macro_f1)),
        "precision_at_1": with_ci(float(np.nanmean(p1)), mean_of(p1)),
        "mean_average_precision": with_ci(float(np.nanmean(ap)), mean_of(ap)),
        "cluster_nmi": (nmi, float("nan"), float("nan")),
        "cluster_ari": (ari, float("nan"), float("nan")),
    }
    if poolings:
        pooled = pooled_probe_predictions(poolings, y, groups, seed)
        card["probe_pooled_macro_f1"] = with_ci(macro_f1(pooled), on(pooled, macro_f1))
    if len(np.unique(y)) == 2 and probe.score is not None:
        card["roc_auc"] = with_ci(roc_auc(probe), auc_on)
    return card
