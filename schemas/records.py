"""Records that cross floors inside tasks/: made by one stage, stored by the catalog.

`LabelRow` is one row of a labels file; `StagedRecording` is everything ingest knows about one recording
once its segments are staged, which the catalog commits in one transaction; `StepMetrics` is one
optimiser step, and `ChunkHealth` the verdict on a chunk. The last two define their DuckDB columns
too (`sql_columns`), so the table, the writer and the reader cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime


@dataclass(frozen=True)
class LabelRow:
    file: str
    label_column: str
    label_value: str
    start_s: float | None
    end_s: float | None


@dataclass
class StagedRecording:
    """Everything needed to commit one recording; small and picklable (no samples)."""

    path: str
    size_bytes: int
    mtime_ns: int
    content_hash: str
    recording_id: str
    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    start_time: datetime | None
    start_time_source: str | None
    site: str
    partition_date: str
    stored_sample_rate: int
    channel_policy: str
    segment_count: int
    audio_seconds: float
    staged_file: str | None
    dataset_file: str  # relative to the workspace
    warnings: list[str] = field(default_factory=list)
    nonfinite_segments: int = 0


def column(sql: str):
    """A record field and its DuckDB column type."""
    return field(metadata={"sql": sql})


def sql_columns(record: type) -> str:
    """The record's fields as the column list of a CREATE TABLE."""
    return ",\n        ".join(f"{f.name} {f.metadata['sql']}" for f in fields(record))


def field_names(record: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(record))


@dataclass
class StepMetrics:
    """One optimiser step of one chunk: what the training loop measures, `train_metrics` stores and
    the report draws."""

    step: int = column("BIGINT NOT NULL")
    chunk: int = column("INTEGER NOT NULL")
    loss: float = column("DOUBLE NOT NULL")
    contrastive_loss: float = column("DOUBLE NOT NULL")
    diversity_loss: float = column("DOUBLE NOT NULL")
    perplexity: list[float] = column("DOUBLE[] NOT NULL")  # per codebook group
    unused_code_share: float = column("DOUBLE NOT NULL")
    accuracy: float = column("DOUBLE NOT NULL")
    grad_norm: float = column("DOUBLE NOT NULL")
    learning_rate: float = column("DOUBLE NOT NULL")
    temperature: float = column("DOUBLE NOT NULL")
    masked_frames: int = column("INTEGER NOT NULL")
    audio_seconds: float = column("DOUBLE NOT NULL")
    audio_seconds_per_second: float = column("DOUBLE NOT NULL")


@dataclass
class ChunkHealth:
    """The training-health verdict on a chunk's last log interval (tasks.model.health), as
    `chunk_health` stores it; None where the interval recorded no such figure."""

    verdict: str = column("VARCHAR NOT NULL")
    accuracy: float | None = column("DOUBLE")
    chance: float = column("DOUBLE NOT NULL")
    perplexity: float | None = column("DOUBLE")
    max_perplexity: float = column("DOUBLE NOT NULL")
    code_usage: float | None = column("DOUBLE")
    loss: float | None = column("DOUBLE")
    loss_at_chance: float = column("DOUBLE NOT NULL")
    sentence: str = column("VARCHAR NOT NULL")


@dataclass(frozen=True)
class CurvePoint:
    """One evaluated checkpoint of a run on the learning curve."""

    chunk: int
    step: int
    hours_seen: float  # audio the run had trained on by this checkpoint
    best_layer: int | None
    best: tuple[float, float, float]  # value, CI low, CI high of the best layer
    all_layers: tuple[float, float, float] | None
    baselines: dict[str, tuple[float, float, float]]  # log-mel and MFCC statistics, random weights (best layer)
