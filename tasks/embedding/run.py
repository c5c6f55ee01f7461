"""Extraction of embeddings and units for every segment, incremental and crash-safe.

Work is cut into batches of segments. A batch writes two Parquet files into `staging/`: its
frame vectors (published into `embeddings/<model>/frames/`) and its segment-level results
(pooled vectors, quantizer codes), which the single writer loads into DuckDB in one transaction
together with the ledger rows that mark the (model, segment, layer)s done. A crash between the
two leaves an unclaimed file, which the next run removes, and re-embeds that batch.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from schemas.arrow import FRAME_SCHEMA, SEGMENT_RESULT_SCHEMA
from tasks.catalog import embeddings
from tasks.catalog.embeddings import EmbeddingModel
from tasks.catalog.recordings import SegmentRef
from tasks.embedding.encode import embed_batch, load_model, pool
from tasks.workspace import Workspace
from tasks.workspace.segment_files import publish
from tasks.workspace.staging import owned_path
from tasks.workspace.storage import open_parquet


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
        # layer by layer, one row group each: what reads one layer (k-means units) skips the others
        parts = [(emb.segment_id, layer, emb.layers[layer]) for layer in layers for emb in results if emb.frames]
        counts = np.array([len(p[2]) for p in parts], np.int64)
        flat = np.concatenate([p[2] for p in parts]).astype(dtype) if parts else np.zeros((0, model.dim), dtype)
        frame_index = np.concatenate([np.arange(n) for n in counts]) if parts else np.zeros(0, np.int64)
        offsets = np.arange(0, flat.size + 1, model.dim, dtype=np.int32)
        columns = {
            # a segment's id repeated per frame by Arrow's take: no Python string per frame
            "segment_id": pa.array([p[0] for p in parts], pa.string()).take(
                pa.array(np.repeat(np.arange(len(parts), dtype=np.int64), counts))),
            "layer": pa.array(np.repeat(np.array([p[1] for p in parts], np.int16), counts), pa.int16()),
            "frame": pa.array(frame_index.astype(np.int32), pa.int32()),
            "time_s": pa.array(frame_index * model.frame_seconds, pa.float64()),
            "vector": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.reshape(-1))),
        }
        vector_type = pa.float16() if frame_dtype == "float16" else pa.float32()
        schema = FRAME_SCHEMA.set(FRAME_SCHEMA.get_field_index("vector"), pa.field("vector", pa.list_(vector_type), nullable=False))
        frames_file = owned_path(workspace.staging_dir, f"embed-{model.slug}-{tag}.frames.parquet")
        pq.write_table(pa.table(columns, schema=schema), frames_file, compression="zstd",
                       row_group_size=max(1, len(flat) // max(1, len(layers))),  # every layer has as many frames
                       use_dictionary=["segment_id"], use_byte_stream_split=["vector.list.element"])
        frames_dataset = workspace.frames_file(model.slug, tag)
    seconds = sum(len(a) for a in audio) / model.sample_rate
    return StagedBatch(str(results_file), str(frames_file) if frames_file else None, frames_dataset,
                       len(results), total_frames, seconds)


def commit_batch(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: EmbeddingModel, batch: StagedBatch,
                 layers: list[int]) -> None:
    """Publish the frame file, then record the batch (vectors, codes, ledger) in one transaction."""
    if batch.frames_file:
        publish(Path(batch.frames_file), workspace.root / batch.frames_dataset_file)
    embeddings.record_batch(conn, model, batch.results_file, batch.frames_dataset_file, layers)
    Path(batch.results_file).unlink(missing_ok=True)


def remove_unclaimed_frames(conn: duckdb.DuckDBPyConnection, workspace: Workspace) -> list[Path]:
    """Frame files a crash published but never committed."""
    claimed = embeddings.claimed_frame_files(conn)
    removed = []
    for file in workspace.embeddings_dir.rglob("*.parquet") if workspace.embeddings_dir.exists() else []:
        if workspace.relative(file) not in claimed and "/frames/" in workspace.relative(file):
            file.unlink()
            removed.append(file)
    return removed


def all_layers(model: EmbeddingModel) -> list[int]:
    return list(range(model.layers))

