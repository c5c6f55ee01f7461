"""Discrete units in DuckDB: `unit_models` (k-means per layer), `frame_units` (one unit list per
segment and inventory) and `unit_stats`; and the frame vectors they are fitted on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb
import numpy as np
import pyarrow as pa

from tasks.catalog.embeddings import EmbeddingModel
from tasks.workspace import Workspace
from tasks.workspace.database import WorkspaceError, insert, register_ids, transaction


def frame_matrix(table: pa.Table, column: str, dim: int) -> np.ndarray:
    """(rows, dim) float32 view of a `FLOAT[dim]` (fixed-size list) column: no Python object per
    frame or value; a copy only where the column comes in several chunks."""
    vectors = table.column(column).combine_chunks() if table.num_rows else pa.array([], pa.list_(pa.float32(), dim))
    flat = vectors.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(len(vectors), dim), dtype=np.float32)


def _frame_arrow(conn: duckdb.DuckDBPyConnection, sql: str, params: list, where: str) -> pa.Table:
    """An Arrow result of frame vectors; a frame vector of the wrong length is one line naming the files."""
    try:
        return conn.execute(sql, params).to_arrow_table()
    except duckdb.ConversionException as exc:
        raise WorkspaceError(f"{where}: a frame vector has the wrong length ({str(exc).splitlines()[0]}); "
                             "remove the model's frame files and run `ceta2vec embed` again") from None


def sample_frames(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel, layer: int,
                  frames: int, seed: int) -> np.ndarray:
    """Up to `frames` committed frame vectors of the layer, ranked by a hash of (seed, segment,
    frame): the sample, and its order, are a pure function of those, whatever order the scan
    meets the rows in or however a resumed run split its frame files."""
    table = _frame_arrow(
        conn,
        f"""SELECT f.vector::FLOAT[{int(model.dim)}] AS vector FROM read_parquet(?, filename = true) f
           JOIN embedded_segments e ON e.model_id = ? AND e.layer = f.layer AND e.segment_id = f.segment_id
                AND e.frame_file = regexp_extract(f.filename, ? || '/[^/]+/frames/[^/]+)$', 1)
           WHERE f.layer = ?
           ORDER BY md5(concat(?::VARCHAR, ':', f.segment_id, ':', f.frame)), f.segment_id, f.frame
           LIMIT ?""",
        [workspace.frames_glob(model.slug), model.model_id, "(" + workspace.embeddings_dir.name, layer, seed,
         int(frames)], workspace.frames_glob(model.slug))
    return frame_matrix(table, "vector", model.dim)


def record_unit_model(conn: duckdb.DuckDBPyConnection, model_id: str, layer: int, k: int, fitted_frames: int,
                      inertia: float, centroids_file: str) -> None:
    insert(conn, "unit_models", [{"model_id": model_id, "layer": layer, "k": k, "fitted_frames": fitted_frames,
                                  "inertia": inertia, "centroids": centroids_file,
                                  "created_at": datetime.now(timezone.utc)}], on_conflict="replace")


def centroids_file(conn: duckdb.DuckDBPyConnection, model_id: str, layer: int) -> str | None:
    """Workspace-relative .npy of the layer's k-means centroids, if fitted."""
    row = conn.execute("SELECT centroids FROM unit_models WHERE model_id = ? AND layer = ?", [model_id, layer]).fetchone()
    return row[0] if row else None


def frame_files_without_units(conn: duckdb.DuckDBPyConnection, model_id: str, layer: int) -> list[str]:
    """Frame files holding a segment of the layer that has no k-means units yet."""
    return [r[0] for r in conn.execute(
        """SELECT DISTINCT e.frame_file FROM embedded_segments e
           WHERE e.model_id = ? AND e.layer = ? AND e.frame_file IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM frame_units u WHERE u.model_id = e.model_id AND u.segment_id = e.segment_id
                             AND u.source = 'kmeans' AND u.layer = e.layer)""",
        [model_id, layer],
    ).fetchall()]


def frames_in_file(conn: duckdb.DuckDBPyConnection, path: str, layer: int, dim: int) -> tuple[pa.Array, np.ndarray]:
    """(segment id per frame, (frames, dim) float32 vectors) of one frame file's layer, in segment
    and frame order."""
    table = _frame_arrow(conn, f"""SELECT segment_id, vector::FLOAT[{int(dim)}] AS vector FROM read_parquet(?)
                                   WHERE layer = ? ORDER BY segment_id, frame""", [path, layer], path)
    return table.column("segment_id").combine_chunks(), frame_matrix(table, "vector", dim)


def record_frame_units(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel, layer: int, units: pa.Table) -> int:
    """Upsert k-means units of the layer from an Arrow table (segment_id, units SMALLINT[])."""
    conn.register("new_frame_units", units)
    try:
        with transaction(conn, join=True):
            conn.execute(
                """INSERT OR REPLACE INTO frame_units (model_id, segment_id, source, layer, code_group, frame_seconds, units)
                   SELECT ?, segment_id, 'kmeans', ?, 0, ?, units FROM new_frame_units""",
                [model.model_id, layer, model.frame_seconds])
    finally:
        conn.unregister("new_frame_units")
    return units.num_rows


def inventories(conn: duckdb.DuckDBPyConnection, model_id: str) -> list[tuple[str, int, int]]:
    """(source, layer, code group) of every unit inventory of the model."""
    return conn.execute("SELECT DISTINCT source, layer, code_group FROM frame_units WHERE model_id = ? ORDER BY ALL",
                        [model_id]).fetchall()


def inventory_units(conn: duckdb.DuckDBPyConnection, model_id: str, source: str, layer: int, group: int,
                    segment_ids: list[str] | None = None) -> list[tuple[str, list[int]]]:
    """(segment id, units) of one inventory, for every segment or those given."""
    where = "" if segment_ids is None else "AND segment_id IN (SELECT unnest(?))"
    return conn.execute(
        f"""SELECT segment_id, units FROM frame_units WHERE model_id = ? AND source = ? AND layer = ?
            AND code_group = ? {where}""",
        [model_id, source, layer, group] + ([] if segment_ids is None else [segment_ids])).fetchall()


def replace_unit_stats(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel) -> int:
    """Usage of every unit of every inventory of the model, computed in DuckDB from `frame_units`:
    frames, segments, share of the inventory's frames and mean run length (frames / runs, a run
    being a stretch of one unit inside a segment)."""
    with transaction(conn, join=True):
        conn.execute("DELETE FROM unit_stats WHERE model_id = ?", [model.model_id])
        conn.execute(
            """INSERT INTO unit_stats (model_id, source, layer, code_group, unit, frames, segments, share,
                                       mean_run_frames, mean_run_s)
               WITH frames AS (
                   -- each frame beside the one before it in its segment (NULL for the first)
                   SELECT source, layer, code_group, segment_id, unnest(units) AS unit,
                          unnest(list_prepend(NULL::SMALLINT, units[1:len(units) - 1])) AS previous
                   FROM frame_units WHERE model_id = ?)
               SELECT ?, source, layer, code_group, unit, count(*), count(DISTINCT segment_id),
                      count(*) / sum(count(*)) OVER (PARTITION BY source, layer, code_group),
                      count(*) / count_if(previous IS DISTINCT FROM unit),
                      count(*) / count_if(previous IS DISTINCT FROM unit) * ?
               FROM frames GROUP BY source, layer, code_group, unit""",
            [model.model_id, model.model_id, model.frame_seconds])
    return conn.execute("SELECT count(*) FROM unit_stats WHERE model_id = ?", [model.model_id]).fetchone()[0]


@dataclass(frozen=True)
class UnitInventory:
    source: str  # 'codevector' or 'kmeans'
    layer: int  # -1 for codevectors
    group: int
    size: int  # codes in the inventory (k, or codevectors per group)

    @property
    def key(self) -> str:
        return f"codevector-g{self.group}" if self.source == "codevector" else f"kmeans-layer{self.layer}"

    @property
    def name(self) -> str:
        return (f"quantizer codevectors, group {self.group}" if self.source == "codevector"
                else f"k-means units of layer {self.layer}")


def unit_inventories(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel) -> list[UnitInventory]:
    """Every unit inventory the model has frame units for: codevector groups first, then k-means layers."""
    per_group = None
    row = conn.execute("SELECT model_config FROM models WHERE run = ?", [model.run]).fetchone()
    if row:
        per_group = json.loads(row[0]).get("num_codevectors_per_group")
    k_of = dict(conn.execute("SELECT layer, k FROM unit_models WHERE model_id = ?", [model.model_id]).fetchall())
    out = []
    for source, layer, group, top in conn.execute(
            """SELECT source, layer, code_group, max(unit) FROM unit_stats WHERE model_id = ?
               GROUP BY ALL ORDER BY source, layer, code_group""", [model.model_id]).fetchall():
        size = (per_group if source == "codevector" else k_of.get(layer)) or int(top) + 1
        out.append(UnitInventory(source, int(layer), int(group), int(size)))
    return out


def frame_units(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel, inventory: UnitInventory,
                ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """segment_id -> int16 unit per frame."""
    where = "model_id = ? AND source = ? AND layer = ? AND code_group = ?"
    params = [model.model_id, inventory.source, inventory.layer, inventory.group]
    if ids is None:
        table = conn.execute(f"SELECT segment_id, units FROM frame_units WHERE {where}", params).to_arrow_table()
    else:
        name = register_ids(conn, ids)
        table = conn.execute(f"SELECT u.segment_id, u.units FROM frame_units u JOIN {name} w USING (segment_id) "
                             f"WHERE {where}", params).to_arrow_table()
        conn.unregister(name)
    units = table.column("units").combine_chunks()
    offsets = units.offsets.to_numpy()
    values = units.values.to_numpy(zero_copy_only=False).astype(np.int16)
    return {sid: values[offsets[i]:offsets[i + 1]] for i, sid in enumerate(table.column("segment_id").to_pylist())}


def unit_stats(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel, inventory: UnitInventory) -> list[dict]:
    """Usage of every used unit (frames, segments, share, mean run), most used first."""
    cursor = conn.execute(
        """SELECT unit, frames, segments, share, mean_run_frames, mean_run_s FROM unit_stats
           WHERE model_id = ? AND source = ? AND layer = ? AND code_group = ? ORDER BY frames DESC, unit""",
        [model.model_id, inventory.source, inventory.layer, inventory.group])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r)) for r in cursor.fetchall()]


def kmeans_centroids(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel,
                     layer: int) -> np.ndarray | None:
    row = conn.execute("SELECT centroids FROM unit_models WHERE model_id = ? AND layer = ?",
                       [model.model_id, layer]).fetchone()
    if not row or not (workspace.root / row[0]).exists():
        return None
    return np.load(workspace.root / row[0]).astype(np.float32)


def frame_vectors(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel, layer: int,
                  ids: list[str]) -> dict[str, np.ndarray]:
    """segment_id -> (frames, dim) float32 frame vectors of one layer (committed frame files only);
    segments without frame vectors are left out."""
    name = register_ids(conn, ids)
    files = [r[0] for r in conn.execute(
        f"""SELECT DISTINCT e.frame_file FROM embedded_segments e JOIN {name} w USING (segment_id)
            WHERE e.model_id = ? AND e.layer = ? AND e.frame_file IS NOT NULL ORDER BY 1""",
        [model.model_id, layer]).fetchall()]
    files = [str(workspace.root / f) for f in files if (workspace.root / f).exists()]
    if not files:
        conn.unregister(name)
        return {}
    try:
        table = _frame_arrow(
            conn, f"""SELECT f.segment_id, f.vector::FLOAT[{int(model.dim)}] AS vector FROM read_parquet(?) f
                      JOIN {name} w USING (segment_id) WHERE f.layer = ? ORDER BY w.position, f.frame""",
            [files, layer], ", ".join(files))
    finally:
        conn.unregister(name)
    sids = table.column("segment_id").to_numpy()
    vectors = frame_matrix(table, "vector", model.dim)
    out: dict[str, np.ndarray] = {}
    if len(sids):
        starts = np.flatnonzero(np.r_[True, sids[1:] != sids[:-1]])
        ends = np.r_[starts[1:], len(sids)]
        for a, b in zip(starts, ends):
            out[str(sids[a])] = vectors[a:b]
    return out


def timeline_recording(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel, inventory: UnitInventory,
                       label_column: str | None) -> tuple[str, str] | None:
    """(recording_id, file name) worth a unit timeline: labelled for the column (event labels first),
    then the longest (up to a minute) with non-silent segments that have units."""
    row = conn.execute(
        """WITH candidates AS (
               SELECT s.recording_id, r.file_name, least(sum(s.valid_s), 60) AS seconds
               FROM segments s JOIN recordings r USING (recording_id)
               WHERE NOT s.is_silent AND s.segment_id IN (SELECT segment_id FROM frame_units WHERE model_id = ?
                     AND source = ? AND layer = ? AND code_group = ?)
               GROUP BY ALL),
           labelled AS (
               SELECT recording_id, count(*) AS labels, count(start_s) AS events FROM labels
               WHERE label_column = ? GROUP BY ALL)
           SELECT c.recording_id, c.file_name FROM candidates c LEFT JOIN labelled l USING (recording_id)
           ORDER BY coalesce(l.labels, 0) > 0 DESC, coalesce(l.events, 0) DESC, c.seconds DESC, c.file_name LIMIT 1""",
        [model.model_id, inventory.source, inventory.layer, inventory.group, label_column or ""]).fetchone()
    return (row[0], row[1]) if row else None
