"""Calibrated call density: the share of a classifier's windows that hold a call, with a 95% interval,
from windows people reviewed after it was trained, as perch-hoplite's `agile/call_density.py`
estimates it.

The scores of every window are cut into quantile bins (finer towards the top, where the calls are);
each bin's share of calls is a Beta posterior from the reviewed windows in it, and the density is
the sum over bins of (share of windows in the bin) x (share of calls in the bin), sampled to give a
95% interval. A bin nobody reviewed keeps the prior, so its uncertainty shows in the interval
instead of counting as no calls. The estimate is unbiased when each bin's reviewed windows are a
random sample of it: `density_sample` draws one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np

from tasks.catalog import detections as detections_catalog
from tasks.detection.windows import covers

QUANTILE_BOUNDS = (0.0, 0.5, 0.75, 0.875, 0.9375, 1.0)  # hoplite's default: halving towards the top scores
BETA_PRIOR = 0.1
BETA_SAMPLES = 10_000


def score_bins(scores: np.ndarray, values: np.ndarray | None = None,
               quantile_bounds: tuple[float, ...] = QUANTILE_BOUNDS) -> tuple[np.ndarray, np.ndarray]:
    """(bin edges from `scores`' quantiles, the bin of each of `values` (default: of `scores`)); as in hoplite,
    values beyond the outer edges join the end bins."""
    scores = np.asarray(scores, np.float64)
    edges = np.quantile(scores, quantile_bounds)
    values = scores if values is None else np.asarray(values, np.float64)
    return edges, np.clip(np.digitize(values, edges[1:-1], right=False), 0, len(quantile_bounds) - 2)


@dataclass
class CallDensity:
    """The share of windows that hold a call, with its 95% interval, and the bins it came from."""

    estimate: float
    low: float
    high: float
    reviewed: int
    positives: int
    bins: list[dict] = field(default_factory=list)  # score range, share of windows, reviewed +/-


def call_density(scores: np.ndarray, reviewed_scores: np.ndarray, reviewed_positive: np.ndarray,
                 quantile_bounds: tuple[float, ...] = QUANTILE_BOUNDS, prior: float = BETA_PRIOR,
                 samples: int = BETA_SAMPLES, seed: int = 0) -> CallDensity:
    """Calibrated call density of windows scored `scores`, from reviewed windows (their scores and verdicts)."""
    edges, which = score_bins(scores, reviewed_scores, quantile_bounds)
    weights = np.diff(quantile_bounds)
    positive = np.asarray(reviewed_positive, bool)
    pos = np.bincount(which[positive], minlength=len(weights))
    neg = np.bincount(which[~positive], minlength=len(weights))
    rng = np.random.default_rng(seed)
    draws = rng.beta(pos[:, None] + prior, neg[:, None] + prior, size=(len(weights), samples))
    density = (weights[:, None] * draws).sum(0)
    estimate = float((weights * (pos + prior) / (pos + neg + 2 * prior)).sum())
    low, high = np.percentile(density, [2.5, 97.5])
    bins = [{"scores": f"{edges[b]:.3f} to {edges[b + 1]:.3f}", "share of windows": round(float(weights[b]), 4),
             "reviewed yes": int(pos[b]), "reviewed no": int(neg[b])} for b in range(len(weights))]
    return CallDensity(estimate, float(low), float(high), int(len(positive)), int(positive.sum()), bins)


def reviewed_windows(conn: duckdb.DuckDBPyConnection, classifier: dict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(site, score, positive) of the classifier's windows that annotations imported after its training
    reviewed: each annotation gives its verdict to the one window it overlaps most (the window itself, for
    a review of suggested windows), when they cover half of each other as in training; a window that
    reviews contradict is left out."""
    spans = detections_catalog.reviewed_after(conn, classifier)
    if not spans:
        return [], np.zeros(0), np.zeros(0, bool)
    rows = detections_catalog.windows_of_recordings(conn, classifier["classifier_id"], sorted({s[0] for s in spans}))
    recording = np.array([r[0] for r in rows])
    start, end = np.array([r[1] for r in rows], float), np.array([r[2] for r in rows], float)
    verdicts: dict[int, set[bool]] = {}
    for rec, a, b, positive in spans:
        mine = np.flatnonzero((recording == rec) & covers(a, b, start, end))
        if len(mine):
            overlap = np.minimum(b, end[mine]) - np.maximum(a, start[mine])
            verdicts.setdefault(int(mine[np.argmax(overlap)]), set()).add(bool(positive))
    kept = sorted(i for i, v in verdicts.items() if len(v) == 1)
    return ([rows[i][4] for i in kept], np.array([rows[i][3] for i in kept], float),
            np.array([verdicts[i].pop() for i in kept], bool))


def densities(conn: duckdb.DuckDBPyConnection, classifier: dict, seed: int = 0) -> dict[str, CallDensity]:
    """{site: call density} and "all sites", each from its own windows and the reviewed windows among them."""
    scores = detections_catalog.scores_by_site(conn, classifier["classifier_id"])
    sites, reviewed, positive = reviewed_windows(conn, classifier)
    sites = np.array(sites)
    out = {}
    for site, values in scores.items():
        mine = sites == site
        out[site] = call_density(values, reviewed[mine], positive[mine], seed=seed)
    if len(scores) > 1:
        out["all sites"] = call_density(np.concatenate(list(scores.values())), reviewed, positive, seed=seed)
    return out
