"""One detector per label: a standardised logistic regression (scikit-learn), validated by groups.

Embeddings learn the hydrophone as well as the calls, so validation holds out whole groups
(recordings, sites or days: StratifiedGroupKFold, never one group on both sides) and reports
ROC-AUC, average precision and the F1-optimal threshold on the held-out scores, each with a 95%
bootstrap interval over groups.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

MAX_FOLDS = 5
DEFAULT_THRESHOLD = 0.5  # when nothing could be validated


def make_classifier(c: float, seed: int) -> Pipeline:
    # balanced: a few positives among many negatives is the usual case
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000,
                                                              random_state=seed))


def grouped_folds(y: np.ndarray, groups: np.ndarray, seed: int, max_folds: int = MAX_FOLDS
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs in which no group is on both sides, each test fold holding out whole
    groups; empty when fewer than two groups hold a positive or a negative."""
    n_groups = len(np.unique(groups))
    if n_groups < 2 or len(np.unique(y)) < 2:
        return []
    folds = min(max_folds, n_groups, max(2, min(len(np.unique(groups[y == 1])), len(np.unique(groups[y == 0])))))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(train, test) for train, test in splitter.split(np.zeros(len(y)), y, groups)
            if len(np.unique(y[train])) == 2]


def f1_threshold(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) at the score threshold that maximises F1."""
    precision, recall, thresholds = precision_recall_curve(y, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


def _metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    if len(np.unique(y)) < 2:
        return {}
    threshold, f1 = f1_threshold(y, scores)
    return {"roc_auc": float(roc_auc_score(y, scores)), "average_precision": float(average_precision_score(y, scores)),
            "threshold": threshold, "f1": f1}


def validate(x: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float, seed: int, n_boot: int) -> dict:
    """Out-of-fold scores of grouped folds and their metrics, each as [value, low, high] (95% bootstrap
    over groups); {'folds': 0, ...} when the labels span too few groups to hold any out."""
    folds = grouped_folds(y, groups, seed)
    oof = np.full(len(y), np.nan)
    for train, test in folds:
        oof[test] = make_classifier(c, seed).fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    scored = ~np.isnan(oof)
    out = {"folds": len(folds), "groups": int(len(np.unique(groups))), "validated_windows": int(scored.sum())}
    point = _metrics(y[scored], oof[scored]) if scored.any() else {}
    if not point:
        return {**out, "metrics": {}}
    rng = np.random.default_rng(seed)
    names = np.unique(groups[scored])
    members = {g: np.flatnonzero(scored & (groups == g)) for g in names}
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n_boot):
        pick = np.concatenate([members[g] for g in rng.choice(names, len(names), replace=True)])
        for k, v in _metrics(y[pick], oof[pick]).items():
            draws[k].append(v)
    metrics = {k: [point[k], *(np.percentile(draws[k], [2.5, 97.5]).tolist() if draws[k] else [np.nan, np.nan])]
               for k in point}
    return {**out, "metrics": metrics}


@dataclass(frozen=True)
class Trained:
    classifier_id: str
    pipeline: Pipeline
    threshold: float
    validation: dict


def classifier_id(label: str, description: dict, keys: list[tuple], y: np.ndarray) -> str:
    """Names what was trained: the label, features, windows and settings, and each training window
    with its target. The same inputs give the same id, so a re-run finds its classifier."""
    digest = hashlib.sha256(json.dumps([label, description, [list(map(str, k)) for k in keys], y.tolist()],
                                       sort_keys=True, default=str).encode()).hexdigest()
    return f"{label}-{digest[:12]}"


def train(label: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray, keys: list[tuple], description: dict,
          c: float, seed: int, n_boot: int) -> Trained:
    validation = validate(x, y, groups, c, seed, n_boot)
    pipeline = make_classifier(c, seed).fit(x, y)
    threshold = validation["metrics"].get("threshold", [DEFAULT_THRESHOLD])[0]
    return Trained(classifier_id(label, description, keys, y), pipeline, float(threshold), validation)


def save(pipeline: Pipeline, path: Path, provenance: dict) -> Path:
    """joblib file with the fitted pipeline and what it was trained on, written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    joblib.dump({"pipeline": pipeline, **provenance}, partial)
    partial.replace(path)
    return path


def load(path: Path) -> Pipeline:
    return joblib.load(path)["pipeline"]


def scores(pipeline: Pipeline, x: np.ndarray) -> np.ndarray:
    return pipeline.predict_proba(x)[:, 1] if len(x) else np.zeros(0)
