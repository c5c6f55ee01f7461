"""What each flow returns: one typed result per flow, read by the CLI and the pipeline by attribute.

The nested parts (a chunk's summary row, a scorecard row) stay the plain rows the flows also publish as
Prefect table artifacts; the fields here are the ones a caller reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class Result:
    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (`ceta2vec embed` prints it; artifacts show it)."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class IngestResult(Result):
    run_id: str | None  # None: nothing was ingested, and no workspace was made for it
    workspace: str
    files_seen: int
    ingested: int
    skipped: int  # unchanged since an earlier run
    duplicates: int
    failed: int
    warnings: int
    segments_added: int
    audio_seconds_added: float
    bytes_added: int
    bytes_per_audio_hour: int
    recordings_found: int
    failures: list[tuple[str, str, str]]  # (path, stage, reason)
    label_warnings: list[str]
    workspace_summary: dict[str, Any]


@dataclass(frozen=True)
class PretrainResult(Result):
    run: str
    run_dir: str
    chunks_trained: int  # by this call
    chunks_done: int  # by the run, in all
    summaries: list[dict[str, Any]]  # one row per chunk trained (the run's table artifact)
    frontend: str  # the feature encoder's plan, in words


@dataclass(frozen=True)
class EmbedResult(Result):
    model_id: str
    checkpoint: str
    layers: list[int]
    dim: int
    segments_embedded: int  # by this call
    segments_in_model: int
    vectors_in_model: int
    audio_seconds: float
    real_time_factor: float | None
    kmeans_units_assigned: dict[int, Any]
    unit_stats_rows: int


@dataclass(frozen=True)
class ModelScores:
    rows: list[dict[str, Any]]  # one scorecard row per layer, unit source and baseline
    best_layer: int | None
    figure: list[str]


@dataclass(frozen=True)
class EvaluateResult(Result):
    evaluation_id: str
    label_column: str
    model_id: str
    segments: int
    recordings: int
    class_counts: dict[str, dict[str, int]]
    ambiguous: int
    models: dict[str, ModelScores] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportResult(Result):
    report: str  # index.html
    explorer: str
    out_dir: str
    model_id: str
    figures: int
    clips: int
    unit_pages: int
    segments: int
    sections: list[str]
    flow_run_id: str
    published: str | None  # where the report was copied (`--publish`), if anywhere


@dataclass(frozen=True)
class PipelineResult(Result):
    workspace: str
    model_id: str
    report: str | None
    explorer: str | None
    scorecard: dict[str, Any] | None
    example_segment: str | None
    stages: list[dict[str, str]]
    ingest: dict[str, Any]
    chunks_trained: int
    segments_embedded: int


@dataclass(frozen=True)
class RefreshResult(Result):
    model_id: str | None
    steps: list[dict[str, str]]


@dataclass(frozen=True)
class ClassifyResult(Result):
    features: str  # the feature set the detectors use (a model layer, `logmel` or `mfcc`)
    why: str  # why those features: given, or the best evaluated layer
    split_by: str  # what validation held out whole: recording, site or day
    classifiers: list[dict[str, Any]]  # one row per label: its id, validation with intervals, windows scored
