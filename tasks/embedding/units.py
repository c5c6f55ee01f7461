"""Discrete units: k-means over a layer's frame vectors, and statistics of every unit inventory.

The quantizer's codevectors are wav2vec 2.0's own units; k-means units of a layer (as HuBERT
uses) show what a layer's frames group into. Both end up in `frame_units`, one list per segment.
"""

from __future__ import annotations

from collections import Counter

import duckdb
import numpy as np
from sklearn.cluster import MiniBatchKMeans

from tasks.catalog import units as units_catalog
from tasks.catalog.embeddings import EmbeddingModel
from tasks.workspace import Workspace


def fit_kmeans(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel, layer: int, k: int,
               sample_frames: int, seed: int) -> tuple[np.ndarray, float, int]:
    """Centroids fitted on a seeded sample of the layer's frames (committed frames only).

    The sample, and the order k-means sees it in, are a pure function of (seed, segment ids,
    frame numbers) (`catalog.units.sample_frames`): a reservoir sample would depend on the order
    the scan meets the rows, so the units of a resumed embed would differ from an uninterrupted one.
    """
    x = units_catalog.sample_frames(conn, workspace, model, layer, sample_frames, seed)
    if len(x) < k:
        raise ValueError(f"layer {layer}: {len(x)} frames are too few for k = {k} units")
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096).fit(x)
    return km.cluster_centers_.astype(np.float32), float(km.inertia_), len(x)


def save_unit_model(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel, layer: int,
                    centroids: np.ndarray, inertia: float, frames: int) -> None:
    path = workspace.model_dir(model.slug) / f"kmeans-layer{layer}-k{len(centroids)}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, centroids)
    units_catalog.record_unit_model(conn, model.model_id, layer, len(centroids), frames, inertia, workspace.relative(path))


def load_unit_model(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model_id: str, layer: int) -> np.ndarray | None:
    relative = units_catalog.centroids_file(conn, model_id, layer)
    return np.load(workspace.root / relative) if relative else None


def nearest_centroid(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    distances = (vectors**2).sum(1, keepdims=True) - 2 * vectors @ centroids.T + (centroids**2).sum(1)
    return distances.argmin(1).astype(np.int16)


def assign_units(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel, layer: int,
                 centroids: np.ndarray) -> int:
    """k-means units for every embedded segment of the layer that has none yet; returns segments done."""
    done = 0
    for file in units_catalog.frame_files_without_units(conn, model.model_id, layer):
        frames = units_catalog.frames_in_file(conn, str(workspace.root / file), layer)
        if not frames:
            continue
        vectors = np.asarray([f[2] for f in frames], np.float32)
        units = nearest_centroid(vectors, centroids)
        rows, start = [], 0
        ids = [f[0] for f in frames]
        for i in range(1, len(ids) + 1):
            if i == len(ids) or ids[i] != ids[start]:
                rows.append({"model_id": model.model_id, "segment_id": ids[start], "source": "kmeans", "layer": layer,
                             "code_group": 0, "frame_seconds": model.frame_seconds,
                             "units": units[start:i].tolist()})
                start = i
        done += units_catalog.record_frame_units(conn, rows)
    return done


def run_lengths(units: list[int]) -> list[tuple[int, int]]:
    """(unit, length) of each run of repeated units."""
    runs: list[tuple[int, int]] = []
    for unit in units:
        if runs and runs[-1][0] == unit:
            runs[-1] = (unit, runs[-1][1] + 1)
        else:
            runs.append((unit, 1))
    return runs


def refresh_unit_stats(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel) -> int:
    """Usage count, segments, share of frames and mean run duration of every unit."""
    rows = []
    for source, layer, group in units_catalog.inventories(conn, model.model_id):
        frames: Counter = Counter()
        segments: Counter = Counter()
        run_total: Counter = Counter()
        run_count: Counter = Counter()
        for _, units in units_catalog.inventory_units(conn, model.model_id, source, layer, group):
            frames.update(units)
            segments.update(set(units))
            for unit, length in run_lengths(units):
                run_total[unit] += length
                run_count[unit] += 1
        total = sum(frames.values())
        for unit, count in frames.items():
            mean_run = run_total[unit] / run_count[unit]
            rows.append({"model_id": model.model_id, "source": source, "layer": layer, "code_group": group,
                         "unit": unit, "frames": count, "segments": segments[unit], "share": count / total,
                         "mean_run_frames": mean_run, "mean_run_s": mean_run * model.frame_seconds})
    return units_catalog.replace_unit_stats(conn, model.model_id, rows)
