"""The pipeline's plan: one PipelineSettings projected onto each stage's settings (the fields
`schemas.settings.PIPELINE_FIELDS` gives the stage, and its workspace as the flow resolved it), and the
checks that let a re-run skip the stages whose inputs have not changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import duckdb

from schemas.results import ReportResult
from schemas.settings import (
    EmbedSettings,
    EvaluateSettings,
    IngestSettings,
    PipelineSettings,
    PretrainSettings,
    ReportSettings,
)
from tasks.catalog import embeddings, evaluations
from tasks.catalog.status import report_inputs
from tasks.report.freshness import inputs_digest, stamp_report
from tasks.workspace import Workspace, database


def ingest_settings(settings: PipelineSettings) -> IngestSettings:
    return settings.stage(IngestSettings, workspace=settings.workspace)


def pretrain_settings(settings: PipelineSettings) -> PretrainSettings:
    return settings.stage(PretrainSettings, workspace=settings.workspace, run=settings.run_name)


def embed_settings(settings: PipelineSettings) -> EmbedSettings:
    """The run's latest checkpoint: the one the pretrain stage just finished."""
    return settings.stage(EmbedSettings, workspace=settings.workspace, run=settings.run_name)


def evaluate_settings(settings: PipelineSettings, model_id: str) -> EvaluateSettings | None:
    if not settings.label_column:
        return None
    # labels were stored by the ingest stage; passing the CSV again would re-apply them to every path
    return settings.stage(EvaluateSettings, workspace=settings.workspace, model=model_id)


def report_settings(settings: PipelineSettings, model_id: str) -> ReportSettings | None:
    if not settings.report:
        return None
    return settings.stage(ReportSettings, workspace=settings.workspace, model=model_id)


def evaluation_is_current(conn: duckdb.DuckDBPyConnection, settings: EvaluateSettings) -> bool:
    """Whether the stored scorecard of (label column, model) was computed on exactly the segments
    and classes that would be scored now: no new segments, no changed labels."""
    model_id = str(settings.model)
    stored = evaluations.scored_set(conn, settings.label_column, model_id)
    if stored is None:
        return False
    try:
        labelled = evaluations.labelled_segments(conn, settings.label_column, settings.background)
    except Exception:  # no such column any more: let the evaluate stage say so
        return False
    labelled = labelled.restricted_to(embeddings.segments_embedded(conn, model_id))
    return stored == (len(labelled.segment_ids), labelled.class_counts())


def evaluate_stage(workspace: Workspace, evaluation: EvaluateSettings, run: Callable[[EvaluateSettings], Any],
                   force: bool = False) -> tuple[str, Any]:
    """The evaluate stage of the pipeline and of refresh: ("up to date", None) when the stored
    scorecard was computed on the same segments and classes, else ("ran", what `run` returned)."""
    with database.reading(workspace) as conn:
        current = not force and evaluation_is_current(conn, evaluation)
    return ("up to date", None) if current else ("ran", run(evaluation))


def report_stamp(workspace: Workspace, run: str) -> Path:
    return workspace.reports_dir / f".pipeline-{run}.json"


def current_report(stamp: Path, digest: str) -> dict | None:
    """{"report": index.html, "explorer": explorer.html} drawn from these very inputs by an earlier
    run, if both are still there."""
    try:
        record = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    pages = {k: record.get(k) for k in ("report", "explorer")}
    if record.get("digest") != digest or not all(v and Path(v).exists() for v in pages.values()):
        return None
    return pages


def report_stage(workspace: Workspace, reporting: ReportSettings, run: str, draw: Callable[[ReportSettings], ReportResult],
                 force: bool = False) -> tuple[str, dict]:
    """The report stage of the pipeline and of refresh: ("up to date", pages) when a stamped report
    was drawn from these very inputs, else ("ran", pages) after `draw` (the report flow) and a new
    stamp. One copy, because two hand-written copies drifted apart once."""
    with database.reading(workspace) as conn:
        inputs = report_inputs(conn, reporting)
    digest, stamp = inputs_digest(inputs), report_stamp(workspace, run)
    pages = None if force else current_report(stamp, digest)
    if pages:
        return "up to date", pages
    drawn = draw(reporting)
    pages = {"report": drawn.report, "explorer": drawn.explorer}
    stamp_report(stamp, digest, pages, inputs)
    return "ran", pages
