"""Discrete units: k-means over a layer's frame vectors, and statistics of every unit inventory.

The quantizer's codevectors are wav2vec 2.0's own units; k-means units of a layer (as HuBERT
uses) show what a layer's frames group into. Both end up in `frame_units`, one list per segment.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import duckdb
import numpy as np
from sklearn.cluster import MiniBatchKMeans

from tasks.embedding.run import EmbeddingModel
from tasks.workspace import Workspace


def _frames_glob(workspace: Workspace, model: EmbeddingModel) -> str:
    return str(workspace.root / "embeddings" / model.slug / "frames" / "*.parquet")


def fit_kmeans(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel, layer: int, k: int,
               sample_frames: int, seed: int) -> tuple[np.ndarray, float, int]:
    """Centroids fitted on a seeded sample of the layer's frames (committed frames only).

    The sample, and the order k-means sees it in, are a pure function of (seed, segment ids,
    frame numbers): each frame is ranked by a hash of those. A reservoir sample depends on the
    order the scan meets the rows, which differs between runs and between the files a resumed
    run wrote its frames into, so the units of a resumed embed would differ from an uninterrupted one.
    """
    rows = conn.execute(
        """SELECT f.vector FROM read_parquet(?, filename = true) f
           JOIN embedded_segments e ON e.model_id = ? AND e.layer = f.layer AND e.segment_id = f.segment_id
                AND e.frame_file = regexp_extract(f.filename, '(embeddings/[^/]+/frames/[^/]+)$', 1)
           WHERE f.layer = ?
           ORDER BY md5(concat(?::VARCHAR, ':', f.segment_id, ':', f.frame)), f.segment_id, f.frame
           LIMIT ?""",
        [_frames_glob(workspace, model), model.model_id, layer, seed, int(sample_frames)],
    ).fetchall()
    x = np.asarray([r[0] for r in rows], np.float32)
    if len(x) < k:
        raise ValueError(f"layer {layer}: {len(x)} frames are too few for k = {k} units")
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096).fit(x)
    return km.cluster_centers_.astype(np.float32), float(km.inertia_), len(x)


def save_unit_model(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel, layer: int,
                    centroids: np.ndarray, inertia: float, frames: int) -> None:
    path = workspace.root / "embeddings" / model.slug / f"kmeans-layer{layer}-k{len(centroids)}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, centroids)
    conn.execute(
        "INSERT OR REPLACE INTO unit_models VALUES (?, ?, ?, ?, ?, ?, ?)",
        [model.model_id, layer, len(centroids), frames, inertia, workspace.relative(path), datetime.now(timezone.utc)],
    )


def load_unit_model(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model_id: str, layer: int) -> np.ndarray | None:
    row = conn.execute("SELECT centroids FROM unit_models WHERE model_id = ? AND layer = ?", [model_id, layer]).fetchone()
    return np.load(workspace.root / row[0]) if row else None


def nearest_centroid(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    distances = (vectors**2).sum(1, keepdims=True) - 2 * vectors @ centroids.T + (centroids**2).sum(1)
    return distances.argmin(1).astype(np.int16)


def assign_units(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel, layer: int,
                 centroids: np.ndarray) -> int:
    """k-means units for every embedded segment of the layer that has none yet; returns segments done."""
    files = [r[0] for r in conn.execute(
        """SELECT DISTINCT e.frame_file FROM embedded_segments e
           WHERE e.model_id = ? AND e.layer = ? AND e.frame_file IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM frame_units u WHERE u.model_id = e.model_id AND u.segment_id = e.segment_id
                             AND u.source = 'kmeans' AND u.layer = e.layer)""",
        [model.model_id, layer],
    ).fetchall()]
    done = 0
    for file in files:
        frames = conn.execute(
            "SELECT segment_id, frame, vector FROM read_parquet(?) WHERE layer = ? ORDER BY segment_id, frame",
            [str(workspace.root / file), layer],
        ).fetchall()
        if not frames:
            continue
        vectors = np.asarray([f[2] for f in frames], np.float32)
        units = nearest_centroid(vectors, centroids)
        rows, start = [], 0
        ids = [f[0] for f in frames]
        for i in range(1, len(ids) + 1):
            if i == len(ids) or ids[i] != ids[start]:
                rows.append([model.model_id, ids[start], "kmeans", layer, 0, model.frame_seconds, units[start:i].tolist()])
                start = i
        conn.executemany("INSERT OR REPLACE INTO frame_units VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        done += len(rows)
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
    inventories = conn.execute(
        "SELECT DISTINCT source, layer, code_group FROM frame_units WHERE model_id = ?", [model.model_id]
    ).fetchall()
    rows = []
    for source, layer, group in inventories:
        frames: Counter = Counter()
        segments: Counter = Counter()
        run_total: Counter = Counter()
        run_count: Counter = Counter()
        for (units,) in conn.execute(
            "SELECT units FROM frame_units WHERE model_id = ? AND source = ? AND layer = ? AND code_group = ?",
            [model.model_id, source, layer, group],
        ).fetchall():
            frames.update(units)
            segments.update(set(units))
            for unit, length in run_lengths(units):
                run_total[unit] += length
                run_count[unit] += 1
        total = sum(frames.values())
        for unit, count in frames.items():
            mean_run = run_total[unit] / run_count[unit]
            rows.append([model.model_id, source, layer, group, unit, count, segments[unit], count / total,
                         mean_run, mean_run * model.frame_seconds])
    conn.execute("DELETE FROM unit_stats WHERE model_id = ?", [model.model_id])
    if rows:
        conn.executemany("INSERT INTO unit_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows)

