"""Embedded checkpoints: `embedding_models`, each model's vector table, the `embedded_segments`
ledger and the views over them.

`resolve_model` is the one way from a name the user gave (or none) to an embedded model; the
name is a `ModelRef` (`run@chunk`, schemas/model_ref.py) printed and parsed nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np

from schemas.model_ref import ModelRef
from schemas.tables import EMBEDDING_VIEWS, embedding_table_ddl, frame_vectors_view, segment_embeddings_view
from tasks.catalog.recordings import SegmentRef
from tasks.model.frontend import receptive_field
from tasks.workspace import Workspace
from tasks.workspace.database import WorkspaceError, insert, register_ids, transaction


@dataclass(frozen=True)
class EmbeddingModel:
    """One checkpoint as the embed, evaluate and report stages see it."""

    ref: ModelRef
    export_dir: str  # the checkpoint's hf/ export (absolute before embedding, workspace-relative after)
    export_sha256: str
    dim: int
    layers: int  # layers 0..layers-1 (0 = conv encoder output)
    frame_seconds: float
    sample_rate: int
    receptive_field: int  # samples one frame sees: a segment shorter than this has no frame
    table: str  # its vectors' table (schemas.tables.embedding_table)
    embedded_layers: tuple[int, ...] = ()  # layers with mean-pooled segment vectors (known once embedded)

    @property
    def model_id(self) -> str:
        return str(self.ref)

    @property
    def run(self) -> str:
        return self.ref.run

    @property
    def chunk(self) -> int:
        return self.ref.chunk

    @property
    def slug(self) -> str:
        return self.table.removeprefix("segment_embeddings__")

    @property
    def hop(self) -> int:
        return int(round(self.frame_seconds * self.sample_rate))


def _has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])


def embedded_models(conn: duckdb.DuckDBPyConnection) -> list[ModelRef]:
    """Every embedded checkpoint, the most recently embedded first."""
    if not _has_table(conn, "embedding_models"):
        return []
    return [ModelRef.parse(r[0]) for r in conn.execute(
        "SELECT model_id FROM embedding_models ORDER BY created_at DESC, model_id").fetchall()]


def resolve_model(conn: duckdb.DuckDBPyConnection, wanted: ModelRef | str | None) -> EmbeddingModel:
    """The embedded model `wanted` names (`run@chunk`), or the most recently embedded one."""
    known = embedded_models(conn)
    if not known:
        raise WorkspaceError("this workspace has no embeddings: run `ceta2vec pretrain` and `ceta2vec embed` first")
    ref = known[0] if wanted is None else wanted if isinstance(wanted, ModelRef) else ModelRef.parse(wanted)
    row = conn.execute(
        "SELECT checkpoint, export_sha256, dim, layers, frame_seconds, embedding_table FROM embedding_models "
        "WHERE model_id = ?", [str(ref)]).fetchone()
    if row is None:
        raise WorkspaceError(f"no embedding model '{ref}' in this workspace (embedded: "
                             f"{', '.join(map(str, known))}); run `ceta2vec embed --run RUN --chunk N` first")
    export_dir, export_sha256, dim, layers, frame_seconds, table = row
    embedded = tuple(int(r[0]) for r in conn.execute(
        f"SELECT DISTINCT layer FROM {table} WHERE pooling = 'mean' ORDER BY layer").fetchall())
    config = dict(conn.execute("SELECT key, value FROM workspace_config").fetchall())
    sample_rate = int(config.get("sample_rate", round(1 / frame_seconds)))
    hop = int(round(frame_seconds * sample_rate))
    return EmbeddingModel(ref, export_dir, export_sha256, int(dim), int(layers), float(frame_seconds), sample_rate,
                          _receptive_field(conn, ref.run) or int(round(hop * 1.25)), table, embedded)


def _receptive_field(conn: duckdb.DuckDBPyConnection, run: str) -> int | None:
    row = conn.execute("SELECT feature_encoder FROM models WHERE run = ?", [run]).fetchone()
    if not row:
        return None
    plan = json.loads(row[0])
    if "receptive_field_samples" in plan:
        return int(plan["receptive_field_samples"])
    if "strides" in plan and "kernels" in plan:
        return receptive_field(tuple(plan["strides"]), tuple(plan["kernels"]))
    return None


def register(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel) -> None:
    conn.execute(embedding_table_ddl(model.table, model.dim))
    insert(conn, "embedding_models", [{
        "model_id": model.model_id, "run": model.run, "chunk": model.chunk,
        "checkpoint": workspace.relative(Path(model.export_dir)), "export_sha256": model.export_sha256,
        "dim": model.dim, "layers": model.layers, "frame_seconds": model.frame_seconds,
        "embedding_table": model.table, "created_at": datetime.now(timezone.utc)}], on_conflict="ignore")
    refresh_views(conn, workspace)


def refresh_views(conn: duckdb.DuckDBPyConnection, workspace: Workspace | None = None) -> None:
    models = conn.execute("SELECT model_id, embedding_table FROM embedding_models ORDER BY model_id").fetchall()
    conn.execute(segment_embeddings_view(models))
    for ddl in EMBEDDING_VIEWS:
        conn.execute(ddl)
    # read_parquet binds its glob when the view is created: only once frame files exist
    if workspace is not None and any(workspace.embeddings_dir.glob("*/frames/*.parquet")):
        conn.execute(frame_vectors_view(workspace.frames_glob()))


def pending_segments(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel,
                     layers: list[int]) -> list[SegmentRef]:
    """Segments missing any requested layer for this model (new since the last run, usually).
    Segments shorter than one receptive field (a final segment of a few milliseconds) have no
    frame to embed and are passed over."""
    rows = conn.execute(
        """
        SELECT s.segment_id, s.parquet_path, p.file_row_number, round(s.valid_s * s.sample_rate)::BIGINT
        FROM segments s
        JOIN read_parquet(?, file_row_number = true) p ON p.segment_id = s.segment_id
        WHERE (SELECT count(*) FROM embedded_segments e
               WHERE e.model_id = ? AND e.segment_id = s.segment_id AND list_contains(?, e.layer)) < ?
          AND round(s.valid_s * s.sample_rate) >= ?
        ORDER BY s.parquet_path, p.file_row_number
        """,
        [workspace.segments_glob, model.model_id, layers, len(layers), model.receptive_field],
    ).fetchall()
    return [SegmentRef(sid, workspace.segment_file(path), int(row), int(valid)) for sid, path, row, valid in rows]


def record_batch(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel, results_file: str,
                 frames_dataset_file: str | None, layers: list[int]) -> None:
    """Load a batch's pooled vectors and quantizer codes, and its ledger rows, in one transaction;
    rows for the same keys are replaced, so a batch re-embedded after a crash never doubles."""
    with transaction(conn):
        conn.execute(
            f"""INSERT OR REPLACE INTO {model.table} (segment_id, layer, pooling, vector)
                SELECT segment_id, layer, pooling, vector::FLOAT[{model.dim}] FROM read_parquet(?) WHERE layer >= 0""",
            [results_file],
        )
        conn.execute(
            """INSERT OR REPLACE INTO frame_units (model_id, segment_id, source, layer, code_group, frame_seconds, units)
                SELECT ?, segment_id, 'codevector', -1, g.code_group, ?, g.units
                FROM read_parquet(?) r,
                     LATERAL (SELECT unnest(range(len(r.codevectors)))::SMALLINT AS code_group,
                                     unnest(r.codevectors) AS units) g
                WHERE r.layer = -1""",
            [model.model_id, model.frame_seconds, results_file],
        )
        conn.execute(
            """INSERT OR REPLACE INTO embedded_segments (model_id, segment_id, layer, frames, frame_file, embedded_at)
               SELECT DISTINCT ?, segment_id, l.layer, frames, ?, now()
               FROM read_parquet(?) r, (SELECT unnest(?::SMALLINT[]) AS layer) l WHERE r.layer = -1""",
            [model.model_id, frames_dataset_file, results_file, layers],
        )


def claimed_frame_files(conn: duckdb.DuckDBPyConnection) -> set[str]:
    """Workspace-relative frame files some ledger row points at."""
    return {r[0] for r in conn.execute(
        "SELECT DISTINCT frame_file FROM embedded_segments WHERE frame_file IS NOT NULL").fetchall()}


def segments_embedded(conn: duckdb.DuckDBPyConnection, model_id: str) -> set[str]:
    """Segments with any vector of the model."""
    return {r[0] for r in conn.execute(
        "SELECT DISTINCT segment_id FROM embedded_segments WHERE model_id = ?", [model_id]).fetchall()}


def layers_embedded(conn: duckdb.DuckDBPyConnection, model_id: str) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT DISTINCT layer FROM segment_embeddings WHERE model_id = ? ORDER BY layer", [model_id]).fetchall()]


def poolings_embedded(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel, layer: int) -> list[str]:
    """The poolings (mean, std, max) stored for one layer of a model."""
    return [r[0] for r in conn.execute(
        f"SELECT DISTINCT pooling FROM {model.table} WHERE layer = ? ORDER BY pooling", [layer]).fetchall()]


def vector_totals(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel) -> tuple[int, int]:
    """(segments, vectors) in the model's table."""
    segments, vectors = conn.execute(f"SELECT count(DISTINCT segment_id), count(*) FROM {model.table}").fetchone()
    return int(segments), int(vectors)


def export_sha256(conn: duckdb.DuckDBPyConnection, model_id: str) -> str | None:
    row = conn.execute("SELECT export_sha256 FROM embedding_models WHERE model_id = ?", [model_id]).fetchone()
    return row[0] if row else None


def embedded_segment_ids(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel, layers: list[int]) -> list[str]:
    """Segments with a mean-pooled vector at every one of `layers`, sorted."""
    return [r[0] for r in conn.execute(
        f"""SELECT segment_id FROM {model.table} WHERE pooling = 'mean' AND list_contains(?, layer)
            GROUP BY segment_id HAVING count(DISTINCT layer) = ? ORDER BY segment_id""",
        [list(layers), len(set(layers))]).fetchall()]


def segment_vectors(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel, layer: int, ids: list[str],
                    pooling: str = "mean") -> np.ndarray:
    """(len(ids), dim) float32 vectors of one layer, in the order of `ids`; every one must exist."""
    name = register_ids(conn, ids)
    table = conn.execute(
        f"""SELECT e.vector FROM {name} w JOIN {model.table} e USING (segment_id)
            WHERE e.layer = ? AND e.pooling = ? ORDER BY w.position""", [layer, pooling]).to_arrow_table()
    conn.unregister(name)
    if table.num_rows != len(ids):
        raise WorkspaceError(f"{model.model_id} layer {layer}: {len(ids) - table.num_rows} of {len(ids)} segments "
                             f"have no {pooling}-pooled vector; run `ceta2vec embed` for this layer")
    values = table.column("vector").combine_chunks().flatten().to_numpy()
    return np.ascontiguousarray(values.reshape(len(ids), model.dim), dtype=np.float32)


def sample_ids(ids: list[str], max_points: int, seed: int) -> list[str]:
    """A seeded sample of `max_points` ids (all of them when fewer), in the given order."""
    if len(ids) <= max_points:
        return list(ids)
    keep = np.sort(np.random.default_rng(seed).choice(len(ids), max_points, replace=False))
    return [ids[i] for i in keep]


def example_segment(conn: duckdb.DuckDBPyConnection, model_id: str | None) -> str | None:
    """A segment with vectors in the model (loudest first, so the example is not silence)."""
    row = conn.execute(
        """SELECT s.segment_id FROM segments s
           WHERE s.segment_id IN (SELECT segment_id FROM embedded_segments WHERE model_id = ?)
           ORDER BY s.is_silent, s.rms_dbfs DESC, s.segment_id LIMIT 1""", [model_id]).fetchone()
    return row[0] if row else None
