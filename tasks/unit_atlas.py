"""What each discrete unit sounds like: the average log-mel window around the frames assigned to it,
its most typical occurrences (exemplars), how much it is used and which labels it co-occurs with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tasks.report_data import UnitInventory
from tasks.spectrograms import MelConfig, frame_windows


@dataclass
class Exemplar:
    segment_id: str
    frame: int
    distance: float  # to the unit's centre (k-means: layer space; codevectors: dB from the mean window)
    window: np.ndarray  # (n_mels, 2*half_width+1) dB


@dataclass
class AtlasUnit:
    unit: int
    frames: int  # frames assigned in the whole workspace (unit_stats), or in the sample without stats
    share: float
    mean_run_s: float
    occurrences: int  # frames of the sample averaged into mean_window
    mean_window: np.ndarray  # (n_mels, 2*half_width+1) dB, NaN where no frame had audio
    exemplars: list[Exemplar] = field(default_factory=list)
    labels: list[tuple[str, float]] = field(default_factory=list)  # (label, share of its labelled frames)


@dataclass
class UnitAtlas:
    inventory: UnitInventory
    units: list[AtlasUnit]  # the most used units, similar ones next to each other
    order: list[int]  # every unit with data, in similarity (leaf) order: the colour order of timelines
    half_width: int
    mel: MelConfig
    sample_segments: int
    sample_frames: int
    centre: str  # how exemplars were chosen

    @property
    def window_seconds(self) -> float:
        return (2 * self.half_width + 1) * self.mel.frame_seconds


def window_sums(specs: dict[str, np.ndarray], units: dict[str, np.ndarray], n_units: int,
                half_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of the windows centred on every frame of each unit, (n_units, n_mels, W), and the count of
    frames that had audio at each window offset, (n_units, W)."""
    n_mels = next(iter(specs.values())).shape[0] if specs else 0
    width = 2 * half_width + 1
    sums = np.zeros((n_units, n_mels * width), np.float64)
    counts = np.zeros((n_units, width), np.float64)
    for segment_id, seq in units.items():
        spec = specs.get(segment_id)
        if spec is None or len(seq) == 0:
            continue
        frames = np.arange(len(seq))
        windows = frame_windows(spec, frames, half_width)  # (T, n_mels, W)
        valid = ~np.isnan(windows[:, 0, :])
        onehot = np.zeros((n_units, len(seq)), np.float32)
        onehot[seq.astype(np.int64), frames] = 1.0
        sums += onehot @ np.nan_to_num(windows, nan=0.0).reshape(len(seq), -1)
        counts += onehot @ valid.astype(np.float32)
    means = sums.reshape(n_units, n_mels, width) / np.where(counts > 0, counts, np.nan)[:, None, :]
    return means, counts


def leaf_order(vectors: np.ndarray, metric: str = "cosine") -> list[int]:
    """Row order of an optimally ordered average-linkage tree: similar rows end up next to each other."""
    from scipy.cluster.hierarchy import leaves_list, linkage

    if len(vectors) < 3:
        return list(range(len(vectors)))
    x = np.asarray(vectors, np.float64)
    x = np.nan_to_num(x, nan=float(np.nanmean(x)) if np.isfinite(x).any() else 0.0)
    x = x + 1e-9 * np.arange(x.shape[1])  # constant rows have no cosine/correlation distance otherwise
    tree = linkage(x, method="average", metric=metric, optimal_ordering=len(x) <= 400)
    return [int(i) for i in leaves_list(tree)]


def build_unit_atlas(
    inventory: UnitInventory,
    specs: dict[str, np.ndarray],
    units: dict[str, np.ndarray],
    mel: MelConfig,
    stats: list[dict] | None = None,
    labels: dict[str, str] | None = None,
    top: int = 24,
    n_exemplars: int = 5,
    half_width: int = 15,
    centroids: np.ndarray | None = None,
    frame_vectors: Callable[[list[str]], dict[str, np.ndarray]] | None = None,
    vector_batch: int = 64,
) -> UnitAtlas:
    """The atlas of one unit inventory, from the spectrograms (`log_mel`, column j = model frame j) and
    frame units of a sample of segments. Exemplars are the frames nearest the unit's centre, at most
    one per segment: the k-means centroid in layer space when `centroids` and `frame_vectors` are
    given, else the unit's mean window (RMS dB difference)."""
    units = {s: u for s, u in units.items() if s in specs and len(u)}
    n_units = max([inventory.size] + [int(u.max()) + 1 for u in units.values()])
    means, counts = window_sums(specs, units, n_units, half_width)
    occurrences = counts[:, half_width].astype(int)
    sample_usage = Counter()
    for seq in units.values():
        sample_usage.update(seq.tolist())
    by_unit = {int(r["unit"]): r for r in (stats or [])}
    total = sum(sample_usage.values()) or 1
    usage = ({u: int(r["frames"]) for u, r in by_unit.items()} if by_unit else dict(sample_usage))
    ranked = [u for u, _ in sorted(usage.items(), key=lambda kv: (-kv[1], kv[0]))
              if 0 <= u < n_units and (occurrences[u] > 0 or by_unit)]
    chosen = set(ranked[:top])

    with_data = [u for u in range(n_units) if occurrences[u] > 0]
    use_centroids = centroids is not None and frame_vectors is not None and len(centroids) >= n_units
    if use_centroids:
        keyed = [u for u in range(len(centroids)) if u in set(with_data) | chosen]
        order = [keyed[i] for i in leaf_order(centroids[keyed])]
    else:
        flat = means[with_data].reshape(len(with_data), -1)
        order = [with_data[i] for i in leaf_order(flat - np.nanmean(flat, axis=1, keepdims=True), "euclidean")]
    order += [u for u in sorted(chosen) if u not in order]

    exemplars = _exemplars(chosen, specs, units, means, half_width, n_exemplars,
                           centroids if use_centroids else None, frame_vectors if use_centroids else None,
                           vector_batch)
    label_counts: dict[int, Counter] = {u: Counter() for u in chosen}
    for segment_id, seq in units.items():
        label = (labels or {}).get(segment_id, "")
        if not label:
            continue
        for u, c in zip(*np.unique(seq, return_counts=True)):
            if int(u) in label_counts:
                label_counts[int(u)][label] += int(c)

    atlas_units = []
    for u in order:
        if u not in chosen:
            continue
        row = by_unit.get(u)
        counted = label_counts[u]
        labelled = sum(counted.values())
        atlas_units.append(AtlasUnit(
            unit=u,
            frames=int(row["frames"]) if row else int(sample_usage[u]),
            share=float(row["share"]) if row else sample_usage[u] / total,
            mean_run_s=float(row["mean_run_s"]) if row else _mean_run(units, u) * mel.frame_seconds,
            occurrences=int(occurrences[u]),
            mean_window=means[u].astype(np.float32),
            exemplars=exemplars.get(u, []),
            labels=[(name, c / labelled) for name, c in counted.most_common(3)] if labelled else [],
        ))
    return UnitAtlas(inventory, atlas_units, order, half_width, mel, len(units), int(total),
                     "nearest the k-means centroid (layer space)" if use_centroids
                     else "nearest the unit's mean spectrogram window")


def _mean_run(units: dict[str, np.ndarray], unit: int) -> float:
    lengths = []
    for seq in units.values():
        hits = np.r_[False, seq == unit, False]
        edges = np.flatnonzero(np.diff(hits.astype(np.int8)))
        lengths += list(edges[1::2] - edges[::2])
    return float(np.mean(lengths)) if lengths else 0.0


def _exemplars(chosen: set[int], specs: dict[str, np.ndarray], units: dict[str, np.ndarray], means: np.ndarray,
               half_width: int, n: int, centroids: np.ndarray | None,
               frame_vectors: Callable[[list[str]], dict[str, np.ndarray]] | None,
               vector_batch: int) -> dict[int, list[Exemplar]]:
    """Per unit, the n frames nearest its centre, at most one per segment."""
    best: dict[int, list[tuple[float, str, int]]] = {u: [] for u in chosen}
    ids = list(units)
    for start in range(0, len(ids), vector_batch if centroids is not None else len(ids) or 1):
        batch = ids[start:start + vector_batch] if centroids is not None else ids
        vectors = frame_vectors(batch) if frame_vectors is not None else {}
        for segment_id in batch:
            seq = units[segment_id]
            if centroids is not None:
                v = vectors.get(segment_id)
                if v is None or len(v) < len(seq):
                    continue
                distance = np.linalg.norm(v[:len(seq)] - centroids[seq.astype(np.int64)], axis=1)
            else:
                windows = frame_windows(specs[segment_id], np.arange(len(seq)), half_width)
                diff = windows - means[seq.astype(np.int64)]
                distance = np.sqrt(np.nanmean(diff.reshape(len(seq), -1) ** 2, axis=1))
            for u in np.unique(seq):
                u = int(u)
                if u not in best:
                    continue
                frames = np.flatnonzero(seq == u)
                d = distance[frames]
                if not np.isfinite(d).any():
                    continue
                i = int(np.nanargmin(d))
                best[u].append((float(d[i]), segment_id, int(frames[i])))
    out = {}
    for u, candidates in best.items():
        candidates.sort()
        out[u] = [Exemplar(sid, frame, dist, frame_windows(specs[sid], np.array([frame]), half_width)[0])
                  for dist, sid, frame in candidates[:n]]
    return out
