"""2-D maps of segment vectors (seeded UMAP) and each segment's nearest neighbours (cosine).

The kNN graph is computed once per layer and serves twice: as UMAP's input graph and as the
explorer's neighbour lists. Up to `EXACT_MAX` points it is exact (blocked matrix products); beyond,
it is pynndescent's approximate graph, the one UMAP would have built itself.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from tasks.report.jit_cache import cached_umap

EXACT_MAX = 20_000
BLOCK = 1024


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def exact_cosine_knn(x: np.ndarray, k: int, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances), both (n, k), ascending cosine distance; each point's own row is among
    them (first, unless an exact duplicate ties with it)."""
    u = unit_rows(x)
    n = len(u)
    k = min(k, n)
    indices = np.empty((n, k), np.int32)
    distances = np.empty((n, k), np.float32)
    for start in range(0, n, block):
        sims = u[start:start + block] @ u.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] += 1e-6  # a point ranks first among its exact duplicates
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(sims), 1))
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        indices[start:start + block] = top
        distances[start:start + block] = 1.0 - np.take_along_axis(sims, top, 1)
    distances[indices == np.arange(n)[:, None]] = 0.0
    return indices, np.clip(distances, 0.0, 2.0)


def approximate_cosine_knn(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """pynndescent's kNN graph with UMAP's own settings (trees and iterations grow with n)."""
    umap = cached_umap()
    indices, distances, _ = umap.umap_.nearest_neighbors(unit_rows(x), k, "cosine", {}, True, np.random.RandomState(seed),
                                              low_memory=True, use_pynndescent=True, n_jobs=-1)
    return indices.astype(np.int32), distances.astype(np.float32)


def without_self(indices: np.ndarray, distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest other points of each row (-1 and NaN where the graph has fewer)."""
    n = len(indices)
    is_self = (indices == np.arange(n)[:, None]) | (indices < 0)
    order = np.argsort(is_self, axis=1, kind="stable")  # others first, in distance order
    idx = np.take_along_axis(indices, order, 1)[:, :k]
    dist = np.take_along_axis(distances, order, 1)[:, :k].astype(np.float32)
    bad = np.take_along_axis(is_self, order, 1)[:, :k]
    idx = np.where(bad, -1, idx).astype(np.int32)
    dist = np.where(bad, np.nan, dist).astype(np.float32)
    if idx.shape[1] < k:
        pad = k - idx.shape[1]
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.nan)
    return idx, dist


@dataclass
class LayerMap:
    layer: int
    coords: np.ndarray  # (n, 2) float32
    neighbours: np.ndarray  # (n, k) int32, self excluded, -1 = none
    distances: np.ndarray  # (n, k) float32 cosine distances, NaN where -1
    exact_knn: bool
    method: str  # "umap" or "pca" (too few points for UMAP)
    seconds: dict = field(default_factory=dict)  # knn, umap


def layer_map(x: np.ndarray, layer: int, neighbours: int, umap_neighbors: int = 15, min_dist: float = 0.1,
              seed: int = 0, exact_max: int = EXACT_MAX) -> LayerMap:
    """Seeded UMAP coordinates of the rows of `x` and each row's `neighbours` nearest others."""
    n = len(x)
    if n < 2:
        return LayerMap(layer, np.zeros((n, 2), np.float32), np.full((n, neighbours), -1, np.int32),
                        np.full((n, neighbours), np.nan, np.float32), True, "none")
    graph_k = min(n, max(umap_neighbors, neighbours + 1))
    started = time.perf_counter()
    exact = n <= exact_max
    indices, distances = exact_cosine_knn(x, graph_k) if exact else approximate_cosine_knn(x, graph_k, seed)
    knn_s = time.perf_counter() - started
    nbr, dist = without_self(indices, distances, neighbours)
    started = time.perf_counter()
    n_neighbors = min(umap_neighbors, n - 1)
    if n_neighbors < 2 or n < 10:
        coords, method = _pca2(x), "pca"
    else:
        umap = cached_umap()
        with warnings.catch_warnings():
            # seeded UMAP runs single-threaded (its own warning says so); that is the price of reproducible maps
            warnings.filterwarnings("ignore", message=".*n_jobs value.*")
            warnings.filterwarnings("ignore", message=".*knn_search_index.*")
            warnings.filterwarnings("ignore", category=UserWarning, module="umap")
            reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine", random_state=seed,
                                precomputed_knn=(indices[:, :max(n_neighbors, 1)].copy(),
                                                 distances[:, :max(n_neighbors, 1)].copy()),
                                init="spectral" if n > n_neighbors + 2 else "random")
            coords = reducer.fit_transform(unit_rows(x))
        method = "umap"
    umap_s = time.perf_counter() - started
    return LayerMap(layer, np.asarray(coords, np.float32), nbr, dist, exact, method,
                    {"knn": round(knn_s, 3), "umap": round(umap_s, 3)})


def _pca2(x: np.ndarray) -> np.ndarray:
    u = unit_rows(x)
    centred = u - u.mean(0)
    if len(u) < 2 or not np.any(centred):
        return np.zeros((len(u), 2), np.float32)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = centred @ vt[:2].T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1]))).astype(np.float32)


def neighbour_agreement(neighbours: np.ndarray, labels: list[str]) -> float:
    """Share of labelled points' labelled neighbours that carry the same label (NaN without labels)."""
    lab = np.asarray(labels, dtype=object)
    has = lab != ""
    valid = (neighbours >= 0) & has[:, None]
    valid &= has[np.where(neighbours >= 0, neighbours, 0)]
    if not valid.any():
        return float("nan")
    same = lab[:, None] == lab[np.where(neighbours >= 0, neighbours, 0)]
    return float((same & valid).sum() / valid.sum())


def segment_clusters(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means clusters of the unit-normalised vectors (cosine geometry), numbered by size (0 = largest)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n = len(x)
    if n == 0:
        return np.zeros(0, np.int32)
    k = max(1, min(k, n))
    u = unit_rows(x)
    model = (KMeans(k, random_state=seed, n_init=3) if n <= 20_000
             else MiniBatchKMeans(k, random_state=seed, n_init=3, batch_size=4096))
    labels = model.fit_predict(u)
    sizes = np.bincount(labels, minlength=k)
    rank = np.empty(k, np.int32)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(k)
    return rank[labels]
