"""Statistics of unit sequences: runs, bigram transitions, rank-frequency (Zipf) and units x labels."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np


def collapse_runs(seq: np.ndarray) -> np.ndarray:
    """One entry per run of repeated units (a a b b b a -> a b a)."""
    seq = np.asarray(seq)
    if len(seq) == 0:
        return seq
    return seq[np.r_[True, seq[1:] != seq[:-1]]]


def bigram_counts(sequences: Iterable[np.ndarray], n_units: int, collapse: bool = True) -> np.ndarray:
    """(n_units, n_units) counts of unit a followed by unit b. With `collapse`, runs are merged first,
    so the matrix shows transitions between different units rather than units continuing."""
    counts = np.zeros((n_units, n_units), np.int64)
    for seq in sequences:
        s = collapse_runs(seq) if collapse else np.asarray(seq)
        if len(s) > 1:
            np.add.at(counts, (s[:-1].astype(np.int64), s[1:].astype(np.int64)), 1)
    return counts


def self_transition_share(sequences: Iterable[np.ndarray]) -> float:
    """Share of frame-to-frame steps that stay on the same unit."""
    same = steps = 0
    for seq in sequences:
        if len(seq) > 1:
            same += int(np.sum(seq[1:] == seq[:-1]))
            steps += len(seq) - 1
    return same / steps if steps else float("nan")


def rank_frequency(counts: Iterable[int]) -> np.ndarray:
    """Non-zero counts, most frequent first."""
    values = np.asarray([c for c in counts if c > 0], np.float64)
    return np.sort(values)[::-1]


def zipf_slope(frequencies: np.ndarray) -> float:
    """Least-squares slope of log frequency against log rank (-1 for Zipf's law); NaN below 3 ranks."""
    f = np.asarray(frequencies, np.float64)
    f = f[f > 0]
    if len(f) < 3:
        return float("nan")
    ranks = np.arange(1, len(f) + 1)
    return float(np.polyfit(np.log(ranks), np.log(f), 1)[0])


def usage_perplexity(counts: Iterable[int]) -> float:
    """exp(entropy) of the usage distribution: the number of equally used units it is worth."""
    p = np.asarray([c for c in counts if c > 0], np.float64)
    if p.size == 0:
        return float("nan")
    p /= p.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def unit_label_counts(units: dict[str, np.ndarray], labels: dict[str, str], n_units: int,
                      max_labels: int = 10) -> tuple[np.ndarray, list[str]]:
    """(n_units, L) frames of each unit in segments of each label (labelled segments only); the
    `max_labels` - 1 most frequent labels, the rest pooled as "other"."""
    totals: Counter = Counter()
    per_segment = {}
    for segment_id, seq in units.items():
        label = labels.get(segment_id, "")
        if label and len(seq):
            per_segment[segment_id] = label
            totals[label] += len(seq)
    names = [name for name, _ in totals.most_common()]
    if len(names) > max_labels:
        names = names[: max_labels - 1] + ["other"]
    column = {name: i for i, name in enumerate(names)}
    counts = np.zeros((n_units, len(names)), np.int64)
    for segment_id, label in per_segment.items():
        seq = units[segment_id].astype(np.int64)
        np.add.at(counts[:, column.get(label, column.get("other", 0))], seq, 1)
    return counts, names


def purity(counts: np.ndarray) -> tuple[np.ndarray, float]:
    """Per unit, the share of its labelled frames that carry its most frequent label; and the
    frame-weighted purity of the whole inventory."""
    totals = counts.sum(1)
    per_unit = np.where(totals > 0, counts.max(1) / np.maximum(totals, 1), np.nan)
    overall = float(counts.max(1).sum() / totals.sum()) if totals.sum() else float("nan")
    return per_unit, overall
