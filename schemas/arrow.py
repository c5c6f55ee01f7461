"""Arrow schemas of the Parquet datasets in a workspace.

The segment dataset is hive-partitioned as ``segments/site=<slug>/date=<YYYY-MM-DD|unknown>/``;
``site`` and ``date`` live in the path only, so they are not part of the file schema.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

import pyarrow as pa

SEGMENT_DATASET_VERSION = 1

# Audio is stored as float32 so that quiet 24-bit / float recordings keep their dynamic range
# and loud float recordings (|x| > 1) are not clipped.
SEGMENT_SCHEMA = pa.schema(
    [
        pa.field("segment_id", pa.string(), nullable=False),
        pa.field("recording_id", pa.string(), nullable=False),
        # -1 is the mono mixdown of all channels; 0.. is a channel index of the source file.
        pa.field("channel", pa.int16(), nullable=False),
        pa.field("segment_index", pa.int32(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        # Seconds of real audio in the segment; the rest (final segment only) is zero padding.
        pa.field("valid_s", pa.float64(), nullable=False),
        pa.field("start_time", pa.timestamp("ms", tz="UTC")),
        pa.field("end_time", pa.timestamp("ms", tz="UTC")),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("rms_dbfs", pa.float32(), nullable=False),
        pa.field("peak_dbfs", pa.float32(), nullable=False),
        pa.field("clipped_fraction", pa.float32(), nullable=False),
        pa.field("dc_offset", pa.float32(), nullable=False),
        pa.field("dropout_fraction", pa.float32(), nullable=False),
        pa.field("is_silent", pa.bool_(), nullable=False),
        pa.field("nonfinite_count", pa.int32(), nullable=False),
        pa.field("audio", pa.list_(pa.float32()), nullable=False),
    ],
    metadata={"ceta2vec.dataset": "segments", "ceta2vec.version": str(SEGMENT_DATASET_VERSION)},
)

# DuckDB's name for each Arrow type the datasets use.
_DUCKDB_TYPES = {
    pa.string(): "VARCHAR", pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
    pa.float32(): "REAL", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN", pa.timestamp("ms", tz="UTC"): "TIMESTAMPTZ",
}


def duckdb_columns(schema: pa.Schema, skip: tuple[str, ...] = (), primary_key: str | None = None) -> str:
    """The schema's fields as the column list of a CREATE TABLE: a table that copies a dataset's
    columns is defined by the dataset's schema, not beside it."""
    lines = []
    for f in schema:
        if f.name in skip:
            continue
        constraint = " PRIMARY KEY" if f.name == primary_key else ("" if f.nullable else " NOT NULL")
        lines.append(f"{f.name} {_DUCKDB_TYPES[f.type]}{constraint}")
    return ",\n        ".join(lines)


# Every column of SEGMENT_SCHEMA except the samples: what DuckDB's `segments` table copies.
SEGMENT_METADATA_COLUMNS: tuple[str, ...] = tuple(n for n in SEGMENT_SCHEMA.names if n != "audio")


@dataclass(frozen=True)
class SegmentRow:
    """One segment as ingest writes it: every column of SEGMENT_SCHEMA but the samples, which the writer
    takes beside it as an array (checked below: a column added to the schema fails at import until
    the row has it too)."""

    segment_id: str
    recording_id: str
    channel: int
    segment_index: int
    start_s: float
    end_s: float
    valid_s: float
    start_time: datetime | None
    end_time: datetime | None
    sample_rate: int
    rms_dbfs: float
    peak_dbfs: float
    clipped_fraction: float
    dc_offset: float
    dropout_fraction: float
    is_silent: bool
    nonfinite_count: int


def check_row(record: type, columns: tuple[str, ...], schema_name: str) -> None:
    """A record written into a dataset has the dataset's columns, in order."""
    names = tuple(f.name for f in fields(record))
    if names != columns:
        raise TypeError(f"{record.__name__}'s fields {list(names)} are not {schema_name}'s columns {list(columns)}: "
                        "change both together")


check_row(SegmentRow, SEGMENT_METADATA_COLUMNS, "SEGMENT_SCHEMA (audio aside)")


# Frame vectors of one embedding model: embeddings/<model>/frames/part-*.parquet. float16 vectors
# are an option (`--frame-dtype float16`); the schema's float32 is the default.
FRAME_SCHEMA = pa.schema(
    [
        pa.field("segment_id", pa.string(), nullable=False),
        pa.field("layer", pa.int16(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("time_s", pa.float64(), nullable=False),  # from the segment's start
        pa.field("vector", pa.list_(pa.float32()), nullable=False),
    ],
    metadata={"ceta2vec.dataset": "frames", "ceta2vec.version": "1"},
)

# A staged batch of segment-level results, loaded into DuckDB on commit. Rows with layer >= 0
# carry a pooled vector; the row with layer -1 carries the quantizer's codes, one list per group.
SEGMENT_RESULT_SCHEMA = pa.schema(
    [
        pa.field("segment_id", pa.string(), nullable=False),
        pa.field("layer", pa.int16(), nullable=False),
        pa.field("pooling", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32())),
        pa.field("frames", pa.int32(), nullable=False),
        pa.field("codevectors", pa.list_(pa.list_(pa.int16()))),
    ]
)
