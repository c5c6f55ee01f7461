"""Is a pretraining run learning? A verdict from the last log interval's metrics.

wav2vec 2.0 picks the true quantized frame among it and K distractors, so a model that has learnt
nothing scores accuracy 1/(K+1) and contrastive loss ln(K+1) per masked frame. A collapsed
codebook (a handful of codes for every frame) makes distractors equal to the target, which the
loss and the accuracy then skip: the task turns trivial and accuracy climbs while nothing is
learnt, so collapse is judged first, from the codebook perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

# Accuracy below this many times chance is not told apart from chance: at K = 100 the chance line
# is 0.0099, and a run that has learnt something clears 0.02 within a few hundred steps.
CHANCE_MARGIN = 2.0
# A group using fewer codes than this (perplexity, as a share of its codes, and at least 2) is
# collapsed; the same line as the collapse warning of the pretrain flow.
COLLAPSE_SHARE = 0.02

VERDICTS = ("learning", "at chance", "collapsed", "diverged", "unknown")


def _as_dict(metrics: Any) -> Mapping[str, Any]:
    if is_dataclass(metrics) and not isinstance(metrics, type):
        return asdict(metrics)
    return metrics


def interval_means(steps: Iterable[Any], last: int = 10) -> dict[str, Any]:
    """Means of the last `last` steps' metrics (StepMetrics or dicts), perplexity per group."""
    tail = [_as_dict(s) for s in steps][-last:]
    if not tail:
        return {}
    means: dict[str, Any] = {}
    for key in ("loss", "contrastive_loss", "diversity_loss", "accuracy", "unused_code_share"):
        values = [float(s[key]) for s in tail if s.get(key) is not None]
        if values:
            means[key] = sum(values) / len(values)
    groups = [list(s["perplexity"]) for s in tail if s.get("perplexity") is not None]
    if groups:
        means["perplexity"] = [sum(g[i] for g in groups) / len(groups) for i in range(len(groups[0]))]
    return means


def training_health(metrics: Mapping[str, Any], num_negatives: int, codes_per_group: int, groups: int,
                    label: str | None = None, loss_at_chance: float | None = None,
                    loss_name: str = "contrastive loss", chance_note: str = "ln(K+1) at chance") -> dict[str, Any]:
    """The verdict on one interval's mean metrics.

    `metrics`: accuracy, contrastive_loss (else loss), perplexity (per group list, or their sum),
    unused_code_share. Returns verdict (one of VERDICTS), the figures it rests on, and `sentence`,
    a plain statement ("tiny@3 is at chance: masked-prediction accuracy 0.057 vs chance 0.048").
    """
    metrics = _as_dict(metrics) or {}
    chance = 1.0 / (num_negatives + 1)
    loss_at_chance = math.log(num_negatives + 1) if loss_at_chance is None else float(loss_at_chance)
    max_perplexity = float(groups * codes_per_group)

    accuracy = metrics.get("accuracy")
    loss = metrics.get("contrastive_loss", metrics.get("loss"))
    raw = metrics.get("perplexity")
    per_group = list(raw) if isinstance(raw, (list, tuple)) else None
    perplexity = float(sum(per_group)) if per_group is not None else (float(raw) if raw is not None else None)
    lowest_group = min(per_group) if per_group else (perplexity / groups if perplexity is not None else None)
    unused = metrics.get("unused_code_share")
    code_usage = None if unused is None else 1.0 - float(unused)

    if accuracy is None or loss is None:
        verdict = "unknown"
    elif not (math.isfinite(float(loss)) and math.isfinite(float(accuracy))):
        verdict = "diverged"
    elif lowest_group is not None and lowest_group < max(2.0, COLLAPSE_SHARE * codes_per_group):
        verdict = "collapsed"
    elif float(accuracy) < CHANCE_MARGIN * chance:
        verdict = "at chance"
    else:
        verdict = "learning"

    def fmt(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    if verdict == "collapsed":
        detail = (f"codebook perplexity {fmt(perplexity, '.1f')} of {max_perplexity:.0f} codes "
                  f"(accuracy {fmt(accuracy, '.3f')} vs chance {chance:.3f} means little with so few codes)")
    elif verdict == "unknown":
        detail = "no accuracy or loss was recorded"
    else:
        detail = (f"masked-prediction accuracy {fmt(accuracy, '.3f')} vs chance {chance:.3f}, "
                  f"{loss_name} {fmt(loss, '.2f')} vs {loss_at_chance:.2f} at chance, "
                  f"codebook perplexity {fmt(perplexity, '.1f')} of {max_perplexity:.0f}")
    subject = f"{label} is " if label else ""
    return {
        "verdict": verdict,
        "accuracy": None if accuracy is None else float(accuracy),
        "chance": chance,
        "perplexity": perplexity,
        "max_perplexity": max_perplexity,
        "code_usage": code_usage,
        "loss": None if loss is None else float(loss),
        "loss_at_chance": loss_at_chance,
        "loss_name": loss_name,
        "chance_note": chance_note,
        "sentence": f"{subject}{verdict}: {detail}",
    }
