"""Which windows to label next (active learning): the ones the classifier is least sure of, spread
out so that a batch of k is not k copies of one sound from one recording.

Margin sampling takes the unlabelled windows scored nearest the threshold (a pool of `pool_factor`
x k); k-means on their features (scikit-learn) cuts the pool into k clusters, and each cluster gives
its most uncertain window, no recording giving more than its share while others have candidates.

For the call density estimate the windows to review are a different sample: `density_sample`
draws them at random within each score bin, so that each bin's share of calls can be measured.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
from sklearn.cluster import KMeans

from tasks.catalog import annotations as annotations_catalog
from tasks.catalog import detections as detections_catalog
from tasks.detection.density import QUANTILE_BOUNDS, score_bins
from tasks.detection.features import FeatureSpec, window_features
from tasks.detection.windows import Windows
from tasks.workspace import Workspace


@dataclass(frozen=True)
class Suggestion:
    file_name: str
    recording_id: str
    segment_id: str
    start_s: float
    end_s: float
    score: float


def suggest(conn: duckdb.DuckDBPyConnection, workspace: Workspace, classifier: dict, k: int, threshold: float,
            seed: int = 0, pool_factor: int = 5) -> list[Suggestion]:
    rows = detections_catalog.scored_windows(conn, classifier["classifier_id"])
    free = _not_looked_at(conn, classifier, rows)
    if not free:
        return []
    margin = np.abs(np.array([r[5] for r in free]) - threshold)
    pool = [free[i] for i in np.argsort(margin, kind="stable")[: max(k, pool_factor * k)]]
    pool_margin = np.abs(np.array([r[5] for r in pool]) - threshold)
    clusters = _clusters(conn, workspace, classifier, pool, min(k, len(pool)), seed)
    share = max(1, math.ceil(k / len({r[1] for r in pool})))
    order = np.argsort(pool_margin, kind="stable")
    chosen: list[int] = []
    taken_from: dict[str, int] = {}
    for relax in (False, True):  # first within each recording's share, then whatever is left
        for cluster in np.unique(clusters):
            if len(chosen) >= k:
                break
            if any(clusters[i] == cluster for i in chosen):
                continue
            for i in order:
                if clusters[i] == cluster and i not in chosen and (relax or taken_from.get(pool[i][1], 0) < share):
                    chosen.append(int(i))
                    taken_from[pool[i][1]] = taken_from.get(pool[i][1], 0) + 1
                    break
    for i in order:  # fewer clusters than k could be filled: the next most uncertain
        if len(chosen) >= k:
            break
        if i not in chosen:
            chosen.append(int(i))
    names = detections_catalog.file_names(conn, sorted({pool[i][1] for i in chosen}))
    picked = sorted(chosen, key=lambda i: pool_margin[i])
    return [Suggestion(names[pool[i][1]], pool[i][1], pool[i][0], pool[i][3], pool[i][4], pool[i][5]) for i in picked]


def _not_looked_at(conn, classifier: dict, rows: list[tuple]) -> list[tuple]:
    """The scored windows no annotation of the label overlaps (those have been looked at already)."""
    by_recording: dict[str, list] = {}
    for a in annotations_catalog.annotations_of(conn, [classifier["label"]]):
        by_recording.setdefault(a.recording_id, []).append(a)
    return [r for r in rows if not any(a.start_s < r[4] and r[3] < a.end_s for a in by_recording.get(r[1], []))]


def density_sample(conn: duckdb.DuckDBPyConnection, classifier: dict, k: int, seed: int = 0) -> list[Suggestion]:
    """Windows to review for the call density estimate: k spread evenly over the score bins of
    tasks/detection/density.py, drawn at random (seeded) within each among the windows nobody has
    looked at, so each bin's reviews are a fair sample of it."""
    rows = detections_catalog.scored_windows(conn, classifier["classifier_id"])
    if not rows:
        return []
    _, bins = score_bins(np.array([r[5] for r in rows]))
    free = {id(r) for r in _not_looked_at(conn, classifier, rows)}
    rng = np.random.default_rng(seed)
    count = len(QUANTILE_BOUNDS) - 1
    chosen: list[tuple] = []
    for b in range(count):
        members = [r for r, rb in zip(rows, bins) if rb == b and id(r) in free]
        want = k // count + (1 if b < k % count else 0)
        chosen += [members[i] for i in sorted(rng.choice(len(members), min(want, len(members)), replace=False))]
    names = detections_catalog.file_names(conn, sorted({r[1] for r in chosen}))
    return [Suggestion(names[r[1]], r[1], r[0], r[3], r[4], r[5]) for r in sorted(chosen, key=lambda r: r[5])]


def _clusters(conn, workspace: Workspace, classifier: dict, pool: list[tuple], k: int, seed: int) -> np.ndarray:
    if k <= 1:
        return np.zeros(len(pool), int)
    segment_start = {s.segment_id: s.start_s for s in detections_catalog.segments_to_score(
        conn, recording_ids=sorted({r[1] for r in pool}))}
    windows = Windows(segment_id=[r[0] for r in pool], recording_id=[r[1] for r in pool],
                      channel=[r[2] for r in pool], start_s=[r[3] for r in pool], end_s=[r[4] for r in pool],
                      segment_start_s=[segment_start[r[0]] for r in pool], utc_start=[None] * len(pool),
                      site=[r[6] for r in pool])
    spec = FeatureSpec("model" if classifier["model_id"] else classifier["features"], classifier["granularity"],
                       classifier["model_id"], classifier["layer"])
    x = window_features(conn, workspace, windows, spec)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x)


def write_suggestions(suggestions: list[Suggestion], label: str, path: Path) -> Path:
    """A CSV `ceta2vec label` reads back once its `positive` column says yes, no or skip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "start_s", "end_s", "label", "positive", "score", "segment_id", "recording_id"])
        for s in suggestions:
            writer.writerow([s.file_name, f"{s.start_s:.3f}", f"{s.end_s:.3f}", label, "", f"{s.score:.4f}",
                             s.segment_id, s.recording_id])
    return path
