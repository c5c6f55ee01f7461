"""Is more training paying off? The headline metric of every evaluated checkpoint against hours of audio seen.

Drawn from `ceta2vec evaluate --all-checkpoints` (the evaluations of each run@chunk), with the
baselines scored beside each checkpoint as bands (their 95 % intervals): a user sees whether the
network is still rising, and roughly where a straight line through its points would cross log-mel
statistics. The extrapolation is said to be one, and is left out when the curve is flat or falling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from schemas.records import CurvePoint

CURVE_METRIC = "probe_pooled_macro_f1"  # the probe that chooses its pooling in the training folds
FALLBACK_METRIC = "knn5_macro_f1"  # evaluations written before the pooled probe existed
METRIC_NAMES = {CURVE_METRIC: "probe macro-F1 (pooling chosen in folds)", FALLBACK_METRIC: "5-NN macro-F1"}
BANDS = ("log-mel stats", "MFCC stats", "random weights (best layer)")


@dataclass(frozen=True)
class CurveSummary:
    slope_per_hour: float  # least-squares slope of the best layer's metric per hour of audio seen
    gap: float  # log-mel statistics minus the best layer at the last checkpoint
    hours_to_cross: float | None  # a straight line's extrapolation, when rising and still below
    text: str


def slope_per_hour(points: list[CurvePoint]) -> float:
    if len(points) < 2 or len({p.hours_seen for p in points}) < 2:
        return float("nan")
    return float(np.polyfit([p.hours_seen for p in points], [p.best[0] for p in points], 1)[0])


def summarise(points: list[CurvePoint], metric: str) -> CurveSummary:
    """One honest sentence on the curve: its slope, and where a straight line would meet log-mel."""
    slope = slope_per_hour(points)
    last = points[-1]
    logmel = last.baselines.get("log-mel stats", (math.nan,))[0]
    gap = logmel - last.best[0]
    name = METRIC_NAMES.get(metric, metric)
    if len(points) < 2:
        return CurveSummary(slope, gap, None, f"One checkpoint evaluated: run `ceta2vec evaluate --all-checkpoints` "
                                              f"to see a curve ({name} {last.best[0]:.3f}, log-mel {logmel:.3f}).")
    crossing = gap / slope if gap > 0 and slope > 0 else None
    text = (f"Over {last.hours_seen:.2f} h of audio seen, the best layer's {name} moved {slope:+.3f} per hour "
            f"(least squares over {len(points)} checkpoints); it ends at {last.best[0]:.3f}, log-mel statistics "
            f"at {logmel:.3f}. ")
    if gap <= 0:
        text += "The network is level with or above log-mel statistics here."
    elif crossing is None:
        text += "It is below log-mel statistics and not rising: more of the same training is not paying off."
    else:
        text += (f"A straight line through the points would reach log-mel statistics after about "
                 f"{last.hours_seen + crossing:.1f} h of audio seen: an extrapolation, not a promise.")
    return CurveSummary(slope, gap, crossing, text)


def learning_curve_figure(points: list[CurvePoint], metric: str, run: str, label_column: str):
    """The figure: the best layer (with its interval) and all layers against hours seen, baselines as bands."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    hours = np.array([p.hours_seen for p in points])
    best = np.array([p.best for p in points])
    colours = {"log-mel stats": "#d95f02", "MFCC stats": "#7570b3", "random weights (best layer)": "#999999"}
    span = (hours.min(), hours.max()) if len(hours) > 1 and hours.max() > hours.min() else (0.0, max(1e-3, hours.max()))
    for name in BANDS:
        values = [p.baselines[name] for p in points if name in p.baselines]
        if not values:
            continue
        value, low, high = values[-1]
        ax.axhline(value, color=colours[name], lw=1.2, ls="--", label=name)
        if math.isfinite(low) and math.isfinite(high):
            ax.axhspan(low, high, color=colours[name], alpha=0.12)
    errors = np.vstack([best[:, 0] - best[:, 1], best[:, 2] - best[:, 0]])
    errors = np.where(np.isfinite(errors), errors, 0.0)
    ax.errorbar(hours, best[:, 0], yerr=np.clip(errors, 0, None), marker="o", color="#1b9e77", capsize=3,
                label="best layer (95 % interval)")
    for p in points:
        ax.annotate(f"L{p.best_layer}", (p.hours_seen, p.best[0]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    together = [(p.hours_seen, p.all_layers[0]) for p in points if p.all_layers is not None]
    if together:
        ax.plot(*zip(*together), marker="s", color="#66a61e", alpha=0.7, lw=1, label="all layers")
    ax.set_xlim(span[0] - 0.05 * (span[1] - span[0] + 1e-6), span[1] + 0.05 * (span[1] - span[0] + 1e-6))
    ax.set_xlabel("hours of audio seen in training")
    ax.set_ylabel(METRIC_NAMES.get(metric, metric))
    ax.set_title(f"{run}: learning curve for '{label_column}'", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
