"""Discrete units: k-means over a layer's frame vectors, and statistics of every unit inventory.

The quantizer's codevectors are wav2vec 2.0's own units; k-means units of a layer (as HuBERT
uses) show what a layer's frames group into. Both end up in `frame_units`, one list per segment.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
from sklearn.cluster import MiniBatchKMeans
from threadpoolctl import threadpool_limits

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
    # One BLAS/OpenMP thread: the fit is many small products (k-means++ in chunks, 4096-frame
    # batches), whose threads mostly wait on each other; on a busy 2-core machine one thread fitted
    # 20,000 x 192 frames in 2.1 s against 22.3 s with two, to the same centroids. In float64,
    # k-means++ skips upcasting every chunk of distances: 0.55 s of CPU against 0.80 s in float32.
    with threadpool_limits(1):
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096).fit(x.astype(np.float64))
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


# Frames per matrix product when assigning units: (rows x k) float32 distances stay a few MB.
ASSIGN_ROWS = 16384


def nearest_centroid(vectors: np.ndarray, centroids: np.ndarray, rows: int = ASSIGN_ROWS) -> np.ndarray:
    """Index of the nearest centroid of every vector, in batched matrix products: |c|^2 - 2 v.c
    (|v|^2 is the same for every centroid of a row, so it cannot change the argmin)."""
    vectors = np.asarray(vectors, np.float32)
    centroids = np.asarray(centroids, np.float32)
    norms = (centroids.astype(np.float64) ** 2).sum(1).astype(np.float32)
    out = np.empty(len(vectors), np.int16)
    for start in range(0, len(vectors), rows):
        scores = vectors[start : start + rows] @ centroids.T
        scores *= -2
        scores += norms
        out[start : start + rows] = scores.argmin(1)
    return out


def units_table(segment_ids: pa.Array, units: np.ndarray) -> pa.Table:
    """One row per segment, its units as a SMALLINT[] list, from per-frame segment ids that come
    grouped by segment (segment and frame order)."""
    ids = segment_ids.to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, np.int64)
    offsets = pa.array(np.r_[starts, len(ids)].astype(np.int32))
    return pa.table({"segment_id": segment_ids.take(pa.array(starts)),
                     "units": pa.ListArray.from_arrays(offsets, pa.array(units, pa.int16()))})


def assign_units(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel, layer: int,
                 centroids: np.ndarray) -> int:
    """k-means units for every embedded segment of the layer that has none yet; returns segments done.
    Frame vectors go from Parquet to NumPy through Arrow, units back to DuckDB the same way."""
    done = 0
    for file in units_catalog.frame_files_without_units(conn, model.model_id, layer):
        segment_ids, vectors = units_catalog.frames_in_file(conn, str(workspace.root / file), layer, model.dim)
        if not len(vectors):
            continue
        table = units_table(segment_ids, nearest_centroid(vectors, centroids))
        done += units_catalog.record_frame_units(conn, model, layer, table)
    return done


def refresh_unit_stats(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel) -> int:
    """Usage count, segments, share of frames and mean run duration of every unit (in DuckDB)."""
    return units_catalog.replace_unit_stats(conn, model)
