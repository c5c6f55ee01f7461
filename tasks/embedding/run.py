"""Extraction of embeddings and units for every segment, incremental and crash-safe.

Work is cut into batches of segments. A batch writes two Parquet files into `staging/`: its
frame vectors (published into `embeddings/<model>/frames/`) and its segment-level results
(pooled vectors, quantizer codes), which the single writer loads into DuckDB in one transaction
together with the ledger rows that mark the (model, segment, layer)s done. A crash between the
two leaves an unclaimed file, which the next run removes, and re-embeds that batch.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from schemas.arrow import FRAME_SCHEMA, SEGMENT_RESULT_SCHEMA
from schemas.tables import (
    EMBEDDING_VIEWS,
    embedding_table,
    embedding_table_ddl,
    frame_vectors_view,
    segment_embeddings_view,
)
from tasks.embedding.encode import embed_batch, load_model, pool
from tasks.training import checkpoints
from tasks.training.frontend import receptive_field
from tasks.workspace import Workspace
from tasks.workspace.database import WorkspaceError, transaction
from tasks.workspace.segment_files import publish
from tasks.workspace.staging import owned_path
from tasks.workspace.storage import open_parquet


@dataclass(frozen=True)
class EmbeddingModel:
    model_id: str  # "<run>@<chunk>"
    run: str
    chunk: int
    export_dir: str  # absolute path of the checkpoint's hf/ export
    export_sha256: str
    dim: int
    layers: int
    frame_seconds: float
    sample_rate: int
    receptive_field: int  # samples: a segment shorter than this has no frame and is not embedded
    table: str

    @property
    def slug(self) -> str:
        return self.table.removeprefix("segment_embeddings__")


def resolve_checkpoint(conn: duckdb.DuckDBPyConnection, workspace: Workspace, run: str | None, chunk: int | None) -> EmbeddingModel:
    """The checkpoint to embed with: by default the latest of the most recently trained run."""
    if run is None:
        row = conn.execute("SELECT model_id FROM models WHERE chunks_done > 0 ORDER BY updated_at DESC LIMIT 1").fetchone()
        if not row:
            raise WorkspaceError(f"no trained model in {workspace.root}: run `ceta2vec pretrain` first")
        run = row[0]
    kept = {i.chunk: i for i in checkpoints.complete(workspace.checkpoints_dir / run)}
    if not kept:
        raise WorkspaceError(f"run '{run}' has no checkpoint in {workspace.checkpoints_dir / run}")
    chunk = chunk or max(kept)
    if chunk not in kept:
        raise WorkspaceError(f"run '{run}' keeps checkpoints of chunks {sorted(kept)}, not {chunk}")
    info = kept[chunk]
    config = json.loads((info.path / "hf" / "config.json").read_text())
    hop = int(np.prod(config["conv_stride"]))
    model_id = f"{run}@{chunk}"
    return EmbeddingModel(
        model_id=model_id, run=run, chunk=chunk, export_dir=str(info.path / "hf"), export_sha256=info.export_sha256,
        dim=config["hidden_size"], layers=config["num_hidden_layers"] + 1,
        frame_seconds=hop / config["sampling_rate"], sample_rate=config["sampling_rate"],
        receptive_field=receptive_field(tuple(config["conv_stride"]), tuple(config["conv_kernel"])),
        table=embedding_table(model_id),
    )


def register(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel) -> None:
    conn.execute(embedding_table_ddl(model.table, model.dim))
    conn.execute(
        "INSERT OR IGNORE INTO embedding_models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [model.model_id, model.run, model.chunk, workspace.relative(Path(model.export_dir)), model.export_sha256,
         model.dim, model.layers, model.frame_seconds, model.table, datetime.now(timezone.utc)],
    )
    refresh_views(conn, workspace)


def refresh_views(conn: duckdb.DuckDBPyConnection, workspace: Workspace | None = None) -> None:
    models = conn.execute("SELECT model_id, embedding_table FROM embedding_models ORDER BY model_id").fetchall()
    conn.execute(segment_embeddings_view(models))
    for ddl in EMBEDDING_VIEWS:
        conn.execute(ddl)
    # read_parquet binds its glob when the view is created: only once frame files exist
    if workspace is not None and any((workspace.root / "embeddings").glob("*/frames/*.parquet")):
        conn.execute(frame_vectors_view(str(workspace.root / "embeddings" / "*" / "frames" / "*.parquet")))


@dataclass(frozen=True)
class SegmentRef:
    segment_id: str
    file: str  # Parquet path or URL (Workspace.segment_file)
    row: int  # row number in the file
    valid_samples: int


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


def plan_batches(refs: list[SegmentRef], batch_size: int) -> list[list[SegmentRef]]:
    """Batches of neighbouring segments (same files, read once), similar lengths together."""
    batches: list[list[SegmentRef]] = []
    for start in range(0, len(refs), batch_size):
        batches.append(refs[start : start + batch_size])
    return batches


def read_audio(refs: list[SegmentRef]) -> list[np.ndarray]:
    """The valid samples of each segment, reading only the row groups that hold them."""
    by_file: dict[str, list[SegmentRef]] = {}
    for ref in refs:
        by_file.setdefault(ref.file, []).append(ref)
    audio: dict[str, np.ndarray] = {}
    for file, wanted in by_file.items():
        parquet = open_parquet(file)
        starts = np.cumsum([0] + [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)])
        groups = sorted({int(np.searchsorted(starts, r.row, side="right") - 1) for r in wanted})
        for group in groups:
            table = parquet.read_row_group(group, columns=["segment_id", "audio"])
            position = {sid: i for i, sid in enumerate(table.column("segment_id").to_pylist())}
            column = table.column("audio")
            for ref in wanted:
                if ref.segment_id in position:
                    samples = column[position[ref.segment_id]].values.to_numpy(zero_copy_only=False)
                    audio[ref.segment_id] = np.asarray(samples[: ref.valid_samples], np.float32)
    return [audio[r.segment_id] for r in refs]


@dataclass(frozen=True)
class StagedBatch:
    results_file: str  # staging: segment-level results
    frames_file: str | None  # staging: frame vectors
    frames_dataset_file: str | None  # where the frame file goes, relative to the workspace
    segments: int
    frames: int
    audio_seconds: float


def embed_segments(
    workspace: Workspace, model: EmbeddingModel, refs: list[SegmentRef], layers: list[int], poolings: list[str],
    device: torch.device, frame_dtype: str = "float32", write_frames: bool = True, forward_batch: int = 8,
    _cache: dict = {},  # noqa: B006 - one loaded model per process and checkpoint
) -> StagedBatch:
    """Embed a group of segments, `forward_batch` per forward pass, into staged Parquet files
    (nothing visible until committed)."""
    key = (model.export_dir, str(device))
    if key not in _cache:
        _cache.clear()
        _cache[key] = load_model(Path(model.export_dir), device)
    net = _cache[key]
    audio = read_audio(refs)
    results = []
    for start in range(0, len(refs), forward_batch):
        results += embed_batch(net, [r.segment_id for r in refs[start : start + forward_batch]],
                               audio[start : start + forward_batch], layers, model.frame_seconds, device)
    workspace.staging_dir.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    seg_rows: dict[str, list] = {name: [] for name in SEGMENT_RESULT_SCHEMA.names}
    for emb in results:
        for layer in layers:
            for how in poolings:
                seg_rows["segment_id"].append(emb.segment_id)
                seg_rows["layer"].append(layer)
                seg_rows["pooling"].append(how)
                seg_rows["vector"].append(pool(emb.layers[layer], how).astype(np.float32))
                seg_rows["frames"].append(emb.frames)
                seg_rows["codevectors"].append(None)
        # the quantizer's codes ride on a layer -1 row, one list per group
        seg_rows["segment_id"].append(emb.segment_id)
        seg_rows["layer"].append(-1)
        seg_rows["pooling"].append("codes")
        seg_rows["vector"].append(None)
        seg_rows["frames"].append(emb.frames)
        seg_rows["codevectors"].append(emb.codevectors.T.tolist())
    results_file = owned_path(workspace.staging_dir, f"embed-{model.slug}-{tag}.results.parquet")
    pq.write_table(pa.table(seg_rows, schema=SEGMENT_RESULT_SCHEMA), results_file)
    frames_file = frames_dataset = None
    total_frames = sum(e.frames for e in results)
    if write_frames:
        # columnar from the start: a Python list per frame vector was most of this task's overhead
        dtype = np.float16 if frame_dtype == "float16" else np.float32
        parts = [(emb.segment_id, layer, emb.layers[layer]) for emb in results for layer in layers if emb.frames]
        counts = np.array([len(p[2]) for p in parts], np.int64)
        flat = np.concatenate([p[2] for p in parts]).astype(dtype) if parts else np.zeros((0, model.dim), dtype)
        frame_index = np.concatenate([np.arange(n) for n in counts]) if parts else np.zeros(0, np.int64)
        offsets = np.arange(0, flat.size + 1, model.dim, dtype=np.int32)
        columns = {
            "segment_id": pa.array(np.repeat([p[0] for p in parts], counts).tolist() if parts else [], pa.string()),
            "layer": pa.array(np.repeat([p[1] for p in parts], counts).astype(np.int16) if parts else [], pa.int16()),
            "frame": pa.array(frame_index.astype(np.int32), pa.int32()),
            "time_s": pa.array(frame_index * model.frame_seconds, pa.float64()),
            "vector": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.reshape(-1))),
        }
        vector_type = pa.float16() if frame_dtype == "float16" else pa.float32()
        schema = FRAME_SCHEMA.set(FRAME_SCHEMA.get_field_index("vector"), pa.field("vector", pa.list_(vector_type), nullable=False))
        frames_file = owned_path(workspace.staging_dir, f"embed-{model.slug}-{tag}.frames.parquet")
        pq.write_table(pa.table(columns, schema=schema), frames_file, compression="zstd",
                       use_dictionary=["segment_id"], use_byte_stream_split=["vector.list.element"])
        frames_dataset = f"embeddings/{model.slug}/frames/part-{tag}.parquet"
    seconds = sum(len(a) for a in audio) / model.sample_rate
    return StagedBatch(str(results_file), str(frames_file) if frames_file else None, frames_dataset,
                       len(results), total_frames, seconds)


def commit_batch(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel, batch: StagedBatch,
                 layers: list[int]) -> None:
    """Publish the frame file, then load the batch's results and ledger rows in one transaction.
    Existing rows for the same keys are replaced, so a batch re-embedded after a crash never doubles."""
    if batch.frames_file:
        publish(Path(batch.frames_file), workspace.root / batch.frames_dataset_file)
    results = batch.results_file
    with transaction(conn):
        conn.execute(
            f"""INSERT OR REPLACE INTO {model.table}
                SELECT segment_id, layer, pooling, vector::FLOAT[{model.dim}] FROM read_parquet(?) WHERE layer >= 0""",
            [results],
        )
        conn.execute(
            """INSERT OR REPLACE INTO frame_units
                SELECT ?, segment_id, 'codevector', -1, g.code_group, ?, g.units
                FROM read_parquet(?) r,
                     LATERAL (SELECT unnest(range(len(r.codevectors)))::SMALLINT AS code_group,
                                     unnest(r.codevectors) AS units) g
                WHERE r.layer = -1""",
            [model.model_id, model.frame_seconds, results],
        )
        conn.execute(
            """INSERT OR REPLACE INTO embedded_segments
               SELECT DISTINCT ?, segment_id, l.layer, frames, ?, now()
               FROM read_parquet(?) r, (SELECT unnest(?::SMALLINT[]) AS layer) l WHERE r.layer = -1""",
            [model.model_id, batch.frames_dataset_file, results, layers],
        )
    Path(results).unlink(missing_ok=True)


def remove_unclaimed_frames(conn: duckdb.DuckDBPyConnection, workspace: Workspace) -> list[Path]:
    """Frame files a crash published but never committed."""
    claimed = {r[0] for r in conn.execute("SELECT DISTINCT frame_file FROM embedded_segments WHERE frame_file IS NOT NULL").fetchall()}
    removed = []
    for file in (workspace.root / "embeddings").rglob("*.parquet") if (workspace.root / "embeddings").exists() else []:
        if workspace.relative(file) not in claimed and "/frames/" in workspace.relative(file):
            file.unlink()
            removed.append(file)
    return removed


def all_layers(model: EmbeddingModel) -> list[int]:
    return list(range(model.layers))

