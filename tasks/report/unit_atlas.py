"""What each discrete unit sounds like: the average log-mel window around the frames assigned to it and
its contrast against the average of every frame, with the cells that stand out beyond a shifted-label
null; its most typical occurrences (exemplars); how much it is used, how long its runs last, and where
it is over-represented (lift over the base rate of each label, site and hour).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tasks.catalog.units import UnitInventory
from tasks.report.spectrograms import MelConfig, frame_windows


@dataclass
class Exemplar:
    segment_id: str
    frame: int
    distance: float  # to the unit's centre (k-means: layer space; codevectors: dB from the mean window)
    window: np.ndarray  # (n_mels, 2*half_width+1) dB
    in_unit: np.ndarray | None = None  # (2*half_width+1,) bool: window columns whose frame has this unit


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
    contrast: np.ndarray | None = None  # mean_window minus the mean window of every frame (dB)
    significant: np.ndarray | None = None  # cells whose |contrast| exceeds the null's 95th percentile
    distinctness: float = 0.0  # RMS of the significant contrast (dB): 0 for a unit of background
    group: int = 0  # near-duplicate group: units with nearly the same contrast share it
    run_lengths: np.ndarray | None = None  # frames per run in the sample
    lift: dict[str, list[tuple[str, float, int]]] = field(default_factory=dict)  # facet -> (value, lift, frames)


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
    global_window: np.ndarray | None = None  # mean window of every sampled frame (dB)
    null: str = ""  # how significance was judged

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


@dataclass
class _Laid:
    """The sample's spectrograms end to end, each segment fenced by half_width NaN columns so that no
    window reaches into its neighbour; seq holds each column's unit (-1: none)."""

    spec: np.ndarray  # (n_mels, L) float32, 0 where NaN
    valid: np.ndarray  # (L,) float32, 1 where the column has audio
    seq: np.ndarray  # (L,) int64
    blocks: list[tuple[int, int]]  # (first column, frames) of each segment's unit sequence


def _lay_out(specs: dict[str, np.ndarray], units: dict[str, np.ndarray], half_width: int) -> _Laid:
    n_mels = next(iter(specs.values())).shape[0]
    parts, seqs, blocks, at = [], [], [], 0
    fence = np.full((n_mels, half_width), np.nan, np.float32)
    for segment_id, seq in units.items():
        spec = specs[segment_id].astype(np.float32)
        if spec.shape[1] < len(seq):
            spec = np.pad(spec, ((0, 0), (0, len(seq) - spec.shape[1])), constant_values=np.nan)
        column = np.full(spec.shape[1] + half_width, -1, np.int64)
        column[half_width:half_width + len(seq)] = seq
        parts += [fence, spec]
        seqs.append(column)
        blocks.append((at + half_width, len(seq)))
        at += spec.shape[1] + half_width
    parts.append(fence)
    seqs.append(np.full(half_width, -1, np.int64))
    laid = np.concatenate(parts, axis=1)
    valid = np.isfinite(laid[0]).astype(np.float32)
    return _Laid(np.nan_to_num(laid, nan=0.0), valid, np.concatenate(seqs), blocks)


def _laid_means(laid: _Laid, seq: np.ndarray, wanted: list[int], half_width: int) -> np.ndarray:
    """(len(wanted) + 1, n_mels, W) mean windows of the frames of each wanted unit under `seq`, and
    last of every frame with a unit."""
    length = len(seq)
    inner = slice(half_width, length - half_width)
    onehot = (seq[inner, None] == np.asarray(wanted, np.int64)[None, :]).astype(np.float32)
    onehot = np.c_[onehot, (seq[inner] >= 0).astype(np.float32)]
    width = 2 * half_width + 1
    sums = np.empty((onehot.shape[1], laid.spec.shape[0], width), np.float32)
    counts = np.empty((onehot.shape[1], width), np.float32)
    for o in range(width):
        cols = slice(o, length - 2 * half_width + o)
        sums[:, :, o] = (laid.spec[:, cols] @ onehot).T
        counts[:, o] = laid.valid[cols] @ onehot
    return sums / np.where(counts > 0, counts, np.nan)[:, None, :]


def contrast_significance(specs: dict[str, np.ndarray], units: dict[str, np.ndarray], wanted: list[int],
                          half_width: int, shifts: int = 19, seed: int = 0, quantile: float = 95.0
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(contrast, significant, global mean window): each wanted unit's mean window minus the mean window
    of every frame, and which cells stand beyond chance. The null shifts the sample's whole unit
    sequence (segments end to end) by a random whole number of frames, circularly, `shifts` times: the
    units keep their counts, run lengths and order but lose their alignment with the sound, within a
    segment and across segments (a unit of one whole recording moves onto others), so a cell counts
    only where the real |contrast| exceeds the `quantile` percentile of the shifted ones. Shifting
    rather than shuffling frames keeps runs whole: neighbouring frames share audio, and a shuffle would
    make the null too narrow."""
    laid = _lay_out(specs, units, half_width)
    means = _laid_means(laid, laid.seq, wanted, half_width)
    overall = means[-1]
    contrast = means[:-1] - overall[None]
    rng = np.random.default_rng(seed)
    null = np.empty((shifts,) + contrast.shape, np.float32)
    frames = np.concatenate([np.arange(first, first + n) for first, n in laid.blocks])
    for p in range(shifts):
        shifted = laid.seq.copy()
        shifted[frames] = np.roll(laid.seq[frames], int(rng.integers(1, max(2, len(frames)))))
        shuffled = _laid_means(laid, shifted, wanted, half_width)
        null[p] = np.abs(shuffled[:-1] - shuffled[-1][None])
    threshold = np.nanpercentile(null, quantile, axis=0) if shifts else np.zeros_like(contrast)
    significant = np.isfinite(contrast) & (np.abs(contrast) > np.nan_to_num(threshold, nan=np.inf))
    return contrast, significant, overall


def run_lengths(units: dict[str, np.ndarray], unit: int) -> np.ndarray:
    """Frames in each run of `unit` across the sequences."""
    lengths = []
    for seq in units.values():
        hits = np.r_[False, seq == unit, False]
        edges = np.flatnonzero(np.diff(hits.astype(np.int8)))
        lengths.append(edges[1::2] - edges[::2])
    return np.concatenate(lengths) if lengths else np.zeros(0, np.int64)


def unit_lift(units: dict[str, np.ndarray], facet: dict[str, str], wanted: list[int],
              min_frames: int = 5) -> dict[int, list[tuple[str, float, int]]]:
    """Per unit, each facet value's lift: P(value | unit) / P(value), over frames of segments that have a
    value; 1 is the base rate, 2 twice as common as overall. Values with fewer than `min_frames` of the
    unit's frames are left out; highest lift first."""
    names = sorted({v for v in facet.values() if v})
    if not names:
        return {}
    index = {name: i for i, name in enumerate(names)}
    top = max([max(wanted, default=0)] + [int(s.max()) for s in units.values() if len(s)]) + 1
    table = np.zeros((top, len(names)), np.int64)
    for segment_id, seq in units.items():
        value = facet.get(segment_id, "")
        if value and len(seq):
            table[:, index[value]] += np.bincount(seq.astype(np.int64), minlength=top)[:top]
    base = table.sum(0) / max(1, table.sum())
    out = {}
    for u in wanted:
        total = table[u].sum()
        rows = [(names[c], float(table[u, c] / total / base[c]), int(table[u, c])) for c in range(len(names))
                if total and table[u, c] >= min_frames and base[c] > 0]
        out[u] = sorted(rows, key=lambda r: -r[1])
    return out


def distinct_first(contrast: np.ndarray, significant: np.ndarray, wanted: list[int], similar: float = 0.85
                   ) -> tuple[list[int], dict[int, int], dict[int, float]]:
    """(order, group of each unit, distinctness): units whose significant contrast correlates above
    `similar` form a near-duplicate group; groups with the most distinct member come first, the members
    of a group together, most distinct first; units with nothing significant last."""
    from scipy.cluster.hierarchy import fcluster, linkage

    shown = np.where(significant, np.nan_to_num(contrast), 0.0).reshape(len(wanted), -1)
    distinct = {u: float(np.sqrt(np.mean(shown[i] ** 2))) for i, u in enumerate(wanted)}
    flat = np.where(np.isfinite(contrast), contrast, 0.0).reshape(len(wanted), -1)
    if len(wanted) >= 2:
        x = flat - flat.mean(1, keepdims=True) + 1e-9 * np.arange(flat.shape[1])
        labels = fcluster(linkage(x, method="average", metric="correlation"), 1 - similar, criterion="distance")
    else:
        labels = np.ones(len(wanted), int)
    group = {u: int(g) for u, g in zip(wanted, labels)}
    best = {}
    for u in wanted:
        best[group[u]] = max(best.get(group[u], 0.0), distinct[u])
    order = sorted(wanted, key=lambda u: (distinct[u] == 0, -best[group[u]], group[u], -distinct[u], u))
    numbered, renumber = {}, {}
    for u in order:
        renumber.setdefault(group[u], len(renumber) + 1)
        numbered[u] = renumber[group[u]]
    return order, numbered, distinct


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
    distances: dict[str, np.ndarray] | None = None,
    facets: dict[str, dict[str, str]] | None = None,
    facet_units: dict[str, np.ndarray] | None = None,
    shifts: int = 19,
    seed: int = 0,
) -> UnitAtlas:
    """The atlas of one unit inventory, from the spectrograms (`log_mel`, column j = model frame j) and
    frame units of a sample of segments. Exemplars are the frames nearest the unit's centre, at most
    one per segment: the k-means centroid in layer space when `centroids` and `frame_vectors` (or the
    frames' `distances` to their centroids, from `centroid_distances`) are given, else the unit's mean
    window (RMS dB difference). The units shown are the `top` most used,
    the most distinct first and near-duplicates together (`distinct_first`); `facets` (e.g. label, site,
    hour -> value of each segment) give each unit's lift, over `facet_units` (a larger sample) when given."""
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
    use_centroids = (centroids is not None and (frame_vectors is not None or distances is not None)
                     and len(centroids) >= n_units)
    if use_centroids and distances is None:
        distances = centroid_distances(units, centroids, frame_vectors, vector_batch)
    if use_centroids:
        keyed = [u for u in range(len(centroids)) if u in set(with_data) | chosen]
        order = [keyed[i] for i in leaf_order(centroids[keyed])]
    else:
        flat = means[with_data].reshape(len(with_data), -1)
        order = [with_data[i] for i in leaf_order(flat - np.nanmean(flat, axis=1, keepdims=True), "euclidean")]
    order += [u for u in sorted(chosen) if u not in order]

    exemplars = _exemplars(chosen, specs, units, means, half_width, n_exemplars, distances if use_centroids else None)
    label_counts: dict[int, Counter] = {u: Counter() for u in chosen}
    for segment_id, seq in units.items():
        label = (labels or {}).get(segment_id, "")
        if not label:
            continue
        for u, c in zip(*np.unique(seq, return_counts=True)):
            if int(u) in label_counts:
                label_counts[int(u)][label] += int(c)

    shown = [u for u in order if u in chosen]
    if shown:
        contrast, significant, overall = contrast_significance(specs, units, shown, half_width, shifts, seed)
        shown, groups, distinct = distinct_first(contrast, significant, shown)
        where = {u: i for i, u in enumerate(u for u in order if u in chosen)}
    else:
        overall, groups, distinct = None, {}, {}
    lifts = {name: unit_lift(facet_units if facet_units is not None else units, values, shown)
             for name, values in (facets or {}).items()}

    atlas_units = []
    for u in shown:
        row = by_unit.get(u)
        runs = run_lengths(units, u)
        counted = label_counts[u]
        labelled = sum(counted.values())
        atlas_units.append(AtlasUnit(
            unit=u,
            frames=int(row["frames"]) if row else int(sample_usage[u]),
            share=float(row["share"]) if row else sample_usage[u] / total,
            mean_run_s=float(row["mean_run_s"]) if row else float(np.mean(runs) if len(runs) else 0) * mel.frame_seconds,
            occurrences=int(occurrences[u]),
            mean_window=means[u].astype(np.float32),
            exemplars=exemplars.get(u, []),
            labels=[(name, c / labelled) for name, c in counted.most_common(3)] if labelled else [],
            contrast=contrast[where[u]], significant=significant[where[u]], distinctness=distinct[u],
            group=groups[u], run_lengths=runs,
            lift={name: by_unit_lift.get(u, []) for name, by_unit_lift in lifts.items()},
        ))
    return UnitAtlas(inventory, atlas_units, order, half_width, mel, len(units), int(total),
                     "nearest the k-means centroid (layer space)" if use_centroids
                     else "nearest the unit's mean spectrogram window", overall,
                     f"beyond the 95th percentile of {shifts} random time shifts of the unit sequence")


def _marks(seq: np.ndarray, frame: int, half_width: int, unit: int) -> np.ndarray:
    padded = np.pad(seq.astype(np.int64), half_width, constant_values=-1)
    return padded[frame:frame + 2 * half_width + 1] == unit


def centroid_distances(units: dict[str, np.ndarray], centroids: np.ndarray,
                       frame_vectors: Callable[[list[str]], dict[str, np.ndarray]],
                       vector_batch: int = 64) -> dict[str, np.ndarray]:
    """segment_id -> each frame's distance (layer space) to the centroid of its unit, the frame vectors
    read `vector_batch` segments at a time so memory holds one batch; segments without vectors for
    every frame, or with units beyond the centroids, are left out."""
    out: dict[str, np.ndarray] = {}
    ids = list(units)
    for start in range(0, len(ids), vector_batch):
        batch = ids[start:start + vector_batch]
        vectors = frame_vectors(batch)
        for segment_id in batch:
            seq, v = units[segment_id], vectors.get(segment_id)
            if v is None or len(v) < len(seq) or (len(seq) and int(seq.max()) >= len(centroids)):
                continue
            out[segment_id] = np.linalg.norm(v[:len(seq)] - centroids[seq.astype(np.int64)], axis=1)
    return out


def _exemplars(chosen: set[int], specs: dict[str, np.ndarray], units: dict[str, np.ndarray], means: np.ndarray,
               half_width: int, n: int, distances: dict[str, np.ndarray] | None) -> dict[int, list[Exemplar]]:
    """Per unit, the n frames nearest its centre, at most one per segment: by `distances` to the centroids
    when given, else by RMS dB difference from the unit's mean window."""
    best: dict[int, list[tuple[float, str, int]]] = {u: [] for u in chosen}
    for segment_id, seq in units.items():
        if distances is not None:
            distance = distances.get(segment_id)
            if distance is None:
                continue
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
        out[u] = [Exemplar(sid, frame, dist, frame_windows(specs[sid], np.array([frame]), half_width)[0],
                           _marks(units[sid], frame, half_width, u))
                  for dist, sid, frame in candidates[:n]]
    return out
