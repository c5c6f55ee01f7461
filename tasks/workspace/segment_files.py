"""Writing a recording's segments to one Parquet file, made visible atomically."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.arrow import SEGMENT_METADATA_COLUMNS, SEGMENT_SCHEMA, SegmentRow
from tasks.workspace.durable import fsync_dir, fsync_file
from tasks.workspace.staging import owned_path

ROW_GROUP_BYTES = 16 << 20

# Float audio compresses well only once its bytes are split by significance (BYTE_STREAM_SPLIT);
# dictionary encoding of samples is useless and costs time.
WRITE_OPTIONS = dict(
    compression="zstd",
    compression_level=3,
    use_dictionary=["recording_id"],
    use_byte_stream_split=["audio.list.element"],
    write_statistics=list(SEGMENT_METADATA_COLUMNS),
)


class SegmentFileWriter:
    """Streams rows into `staging/` in row groups; `close()` returns the finished staged file.

    Nothing is visible in the dataset until `publish` moves the file into place.
    """

    def __init__(self, staging_dir: Path, stem: str):
        staging_dir.mkdir(parents=True, exist_ok=True)
        self.path = owned_path(staging_dir, f"{stem}-{uuid.uuid4().hex[:8]}.parquet.partial")
        self._writer: pq.ParquetWriter | None = None
        self._rows: list[SegmentRow] = []
        self._audio: list[np.ndarray] = []
        self._pending_bytes = 0
        self.rows_written = 0

    def add(self, row: SegmentRow, audio: np.ndarray) -> None:
        self._rows.append(row)
        self._audio.append(audio)
        self._pending_bytes += audio.nbytes
        if self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        lengths = np.fromiter((len(a) for a in self._audio), dtype=np.int32, count=len(self._audio))
        offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int32)))
        audio = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(self._audio)))
        columns = {
            name: pa.array([getattr(r, name) for r in self._rows], type=SEGMENT_SCHEMA.field(name).type)
            for name in SEGMENT_METADATA_COLUMNS
        }
        columns["audio"] = audio
        batch = pa.RecordBatch.from_pydict(columns, schema=SEGMENT_SCHEMA)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, SEGMENT_SCHEMA, **WRITE_OPTIONS)
        self._writer.write_batch(batch)
        self.rows_written += len(self._rows)
        self._rows, self._audio, self._pending_bytes = [], [], 0

    def close(self) -> Path | None:
        """Finish the file and flush it to disk; None when no row was written."""
        self._flush()
        if self._writer is None:
            return None
        self._writer.close()
        fsync_file(self.path)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.path.unlink(missing_ok=True)


def publish(staged: Path, final: Path) -> None:
    """Move a finished file into the dataset in one rename (readers see all of it or nothing)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    fsync_dir(final.parent)
