"""Nearest-neighbour search over segment embeddings, and export for other tools.

Exact cosine search (the `similar_segments` macro) is the default: correct under any filter.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np

from tasks.catalog.embeddings import resolve_model
from tasks.catalog.queries import QueryResult
from tasks.workspace import Workspace
from tasks.workspace.database import WorkspaceError


def default_layer(layers: int) -> int:
    """The middle transformer layer: wav2vec 2.0's last layers specialise in its own training task.
    (The segment itself is listed first: float rounding can put a near-twin a hair closer.)"""
    return max(1, layers // 2)


def similar(conn: duckdb.DuckDBPyConnection, segment_id: str, k: int, layer: int | None, model_id: str | None,
            pooling: str = "mean", where: str | None = None, approximate: bool = False,
            workspace: Workspace | None = None) -> QueryResult:
    resolved = resolve_model(conn, model_id)
    model, layers = resolved.model_id, resolved.layers
    layer = default_layer(layers) if layer is None else layer
    if approximate:
        return _similar_hnsw(conn, workspace, segment_id, k, layer, model, pooling, where)
    if where:
        from tasks.catalog.queries import check_read_only

        # One SELECT with the filter in parentheses: a filter cannot close the query and start another.
        check_read_only(f"SELECT 1 WHERE ({where})")
    exists = conn.execute("SELECT count(*) FROM segment_embeddings WHERE model_id = ? AND segment_id = ? AND layer = ?",
                          [model, segment_id, layer]).fetchone()[0]
    if not exists:
        raise WorkspaceError(f"segment {segment_id!r} has no layer-{layer} embedding from {model}")
    params = [segment_id, model, layer, pooling]
    keep = f"JOIN (SELECT DISTINCT segment_id FROM candidates WHERE ({where})) USING (segment_id)" if where else ""
    try:
        cursor = conn.execute(
            f"""{NEIGHBOURS_WITH_LABELS}
                SELECT n.segment_id, n.file_name, round(n.start_s, 3) AS offset_s, n.site,
                       (SELECT string_agg(DISTINCT l.label_column || '=' || l.label_value, ', ')
                        FROM segment_labels l WHERE l.segment_id = n.segment_id) AS labels,
                       round(n.distance, 6) AS distance
                FROM neighbours n {keep}
                ORDER BY n.segment_id <> ?, n.distance, n.segment_id LIMIT ?""",
            [*params, segment_id, k],
        )
    except duckdb.BinderException as exc:
        if "Referenced column" not in str(exc):  # any other binder error is DuckDB's to explain
            raise
        raise WorkspaceError(f"--where {where!r}: {_first_line(exc)}; the filter can use the columns "
                             f"{', '.join(where_columns(conn, params))}") from None
    return QueryResult([d[0] for d in cursor.description], cursor.fetchall())


# The neighbours of the query segment (every embedded segment, by distance), and one row per
# neighbour and label it takes (a neighbour without labels: one row, label columns NULL), which
# is what `--where` filters: "label_value = 'humpback'" keeps neighbours with that label.
NEIGHBOURS_WITH_LABELS = """
    WITH neighbours AS MATERIALIZED (SELECT * FROM similar_segments(?, ?, ?, use_pooling := ?)),
    candidates AS (
        SELECT n.*, l.label_column, l.label_value, l.span_start_s, l.span_end_s
        FROM neighbours n LEFT JOIN segment_labels l ON l.segment_id = n.segment_id
    )"""


def where_columns(conn: duckdb.DuckDBPyConnection, params: list) -> list[str]:
    """The columns a `--where` filter of `similar` can name."""
    cursor = conn.execute(f"{NEIGHBOURS_WITH_LABELS} SELECT * FROM candidates LIMIT 0", params)
    return [d[0] for d in cursor.description]


def _first_line(exc: Exception) -> str:
    return str(exc).split("\n", 1)[0].removeprefix("Binder Error: ").strip().rstrip("!")


def _similar_hnsw(conn, workspace, segment_id: str, k: int, layer: int, model: str, pooling: str,
                  where: str | None) -> QueryResult:
    from tasks.catalog.vector_index import hnsw_neighbours

    if where:
        raise WorkspaceError("--hnsw answers unfiltered queries only (an HNSW index gives wrong answers under a "
                             "filter); drop --hnsw for an exact filtered search")
    row = conn.execute("SELECT v.path, m.dim FROM vector_indexes v JOIN embedding_models m USING (model_id) "
                       "WHERE v.model_id = ? AND v.layer = ? AND v.pooling = ?", [model, layer, pooling]).fetchone()
    if not row:
        raise WorkspaceError(f"no HNSW index for {model} layer {layer} ({pooling}); build one with "
                             f"`ceta2vec index --model {model} --layer {layer}`")
    found = hnsw_neighbours(workspace, row[0], row[1], segment_id, k)
    order = {sid: i for i, (sid, _) in enumerate(found)}
    cursor = conn.execute(
        """SELECT s.segment_id, r.file_name, round(s.start_s, 3) AS offset_s, s.site,
                  (SELECT string_agg(DISTINCT l.label_column || '=' || l.label_value, ', ')
                   FROM segment_labels l WHERE l.segment_id = s.segment_id) AS labels
           FROM segments s JOIN recordings r USING (recording_id) WHERE s.segment_id IN (SELECT unnest(?))""",
        [list(order)],
    )
    distance = dict(found)
    rows = sorted((tuple(r) + (round(distance[r[0]], 6),) for r in cursor.fetchall()),
                  key=lambda r: (r[0] != segment_id, order[r[0]]))
    return QueryResult([d[0] for d in cursor.description] + ["distance"], rows)


def export_embeddings(conn: duckdb.DuckDBPyConnection, model_id: str | None, layer: int | None, pooling: str,
                      fmt: str, output: Path) -> tuple[int, Path]:
    """Write segment vectors with their ids (and recording, offset) as Parquet, CSV or NumPy."""
    resolved = resolve_model(conn, model_id)
    model = resolved.model_id
    layers_wanted = "TRUE" if layer is None else f"e.layer = {int(layer)}"
    query = f"""SELECT e.model_id, e.segment_id, s.recording_id, r.file_name, s.start_s, s.site, e.layer, e.pooling, e.vector
                FROM segment_embeddings e JOIN segments s USING (segment_id) JOIN recordings r USING (recording_id)
                WHERE e.model_id = $model AND e.pooling = $pooling AND {layers_wanted}
                ORDER BY e.layer, e.segment_id"""
    params = {"model": model, "pooling": pooling}
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("parquet", "csv"):
        rel = conn.execute(query, params).to_arrow_table()
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(rel, output)
        else:
            import pyarrow as pa
            import pyarrow.csv as pacsv

            vectors = rel.column("vector").to_pylist()
            rel = rel.drop(["vector"]).append_column("vector", pa.array([" ".join(f"{v:.7g}" for v in vec) for vec in vectors]))
            pacsv.write_csv(rel, output)
        return rel.num_rows, output
    if fmt == "npy":
        rows = conn.execute(query, params).fetchall()
        np.save(output, np.asarray([r[-1] for r in rows], np.float32))
        ids = output.with_suffix(".ids.csv")
        with open(ids, "w") as handle:
            handle.write("row,model_id,segment_id,recording_id,file_name,start_s,site,layer,pooling\n")
            for i, r in enumerate(rows):
                handle.write(",".join(str(v).replace(",", " ") for v in (i, *r[:-1])) + "\n")
        return len(rows), output
    raise ValueError(f"unknown export format {fmt!r} (parquet, csv, npy)")
