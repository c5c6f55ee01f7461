"""An optional HNSW index (DuckDB vss) for large embedding tables, with its recall measured.

Exact search stays the default and the reference: HNSW answers only unfiltered top-k queries
(under a WHERE filter it returns wrong answers), and each index lives in its own DuckDB file
under `indexes/`, built aside and renamed into place, since vss's persistence is experimental.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np

from tasks.workspace import Workspace
from tasks.workspace.database import insert

RECALL_QUERIES = 100


def vss_extension() -> Path:
    """The vss extension shipped in the `duckdb-extension-vss` wheel (no download at run time)."""
    import duckdb_extension_vss

    found = sorted(Path(duckdb_extension_vss.__file__).parent.rglob("vss.duckdb_extension"))
    if not found:
        raise RuntimeError("duckdb-extension-vss is installed without its vss.duckdb_extension file")
    return found[-1]


def load_vss(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(f"LOAD '{vss_extension()}'")


@dataclass(frozen=True)
class IndexInfo:
    path: Path
    rows: int
    build_seconds: float
    recall_at_10: float
    queries: int


def index_path(workspace: Workspace, table: str, layer: int, pooling: str) -> Path:
    return workspace.indexes_dir / f"{table.removeprefix('segment_embeddings__')}-layer{layer}-{pooling}.duckdb"


def build_hnsw(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model_id: str, layer: int,
               pooling: str = "mean", seed: int = 0) -> IndexInfo:
    """Build the index from the workspace's vectors and measure its recall@10 against exact search."""
    table, dim = conn.execute("SELECT embedding_table, dim FROM embedding_models WHERE model_id = ?", [model_id]).fetchone()
    vectors = conn.execute(
        f"SELECT segment_id, vector FROM {table} WHERE layer = ? AND pooling = ? ORDER BY segment_id", [layer, pooling]
    ).to_arrow_table()
    if vectors.num_rows < 11:
        raise ValueError(f"{model_id} layer {layer}: {vectors.num_rows} vectors are too few for an index")
    final = index_path(workspace, table, layer, pooling)
    final.parent.mkdir(parents=True, exist_ok=True)
    building = final.with_suffix(".building")
    building.unlink(missing_ok=True)
    index = duckdb.connect(str(building))
    try:
        load_vss(index)
        index.execute("SET hnsw_enable_experimental_persistence = true")
        index.register("incoming", vectors)
        index.execute(f"CREATE TABLE vectors AS SELECT segment_id, vector::FLOAT[{dim}] AS vector FROM incoming")
        index.unregister("incoming")
        started = time.perf_counter()
        index.execute("CREATE INDEX hnsw ON vectors USING HNSW (vector) WITH (metric = 'cosine')")
        build_seconds = time.perf_counter() - started
        recall, queries = _recall_at_10(index, vectors, dim, seed)
        index.execute("CHECKPOINT")
    finally:
        index.close()
    os.replace(building, final)
    insert(conn, "vector_indexes", [{
        "model_id": model_id, "layer": layer, "pooling": pooling, "path": workspace.relative(final),
        "rows": vectors.num_rows, "build_seconds": build_seconds, "recall_at_10": recall, "queries": queries,
        "built_at": datetime.now(timezone.utc)}], on_conflict="replace")
    return IndexInfo(final, vectors.num_rows, build_seconds, recall, queries)


def _recall_at_10(index: duckdb.DuckDBPyConnection, vectors, dim: int, seed: int) -> tuple[float, int]:
    ids = vectors.column("segment_id").to_pylist()
    x = np.asarray(vectors.column("vector").to_pylist(), np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    picks = np.random.default_rng(seed).choice(len(ids), size=min(RECALL_QUERIES, len(ids)), replace=False)
    recalls = []
    for i in picks:
        exact = set(np.argsort(1 - x @ x[i], kind="stable")[:10].tolist())
        found = index.execute(
            f"SELECT segment_id FROM vectors ORDER BY array_cosine_distance(vector, ?::FLOAT[{dim}]) LIMIT 10",
            [x[i].astype(np.float32).tolist()],
        ).fetchall()
        position = {sid: j for j, sid in enumerate(ids)}
        recalls.append(len(exact & {position[f[0]] for f in found}) / 10)
    return float(np.mean(recalls)), len(picks)


def hnsw_neighbours(workspace: Workspace, relative_path: str, dim: int, segment_id: str, k: int) -> list[tuple[str, float]]:
    """Approximate top-k by the index (unfiltered queries only)."""
    index = duckdb.connect(str(workspace.root / relative_path), read_only=True)
    try:
        load_vss(index)
        if index.execute("SELECT count(*) FROM vectors WHERE segment_id = ?", [segment_id]).fetchone()[0] == 0:
            raise ValueError(f"segment {segment_id!r} is not in the index {relative_path}; rebuild it with `ceta2vec index`")
        # the query vector stays inside DuckDB: binding it from Python costs more than the search
        index.execute("SET VARIABLE query_vector = (SELECT vector FROM vectors WHERE segment_id = ?)", [segment_id])
        return index.execute(
            """SELECT segment_id, array_cosine_distance(vector, getvariable('query_vector')) AS distance FROM vectors
               ORDER BY array_cosine_distance(vector, getvariable('query_vector')) LIMIT ?""",
            [k],
        ).fetchall()
    finally:
        index.close()

