"""Pipeline flow: recordings to an HTML report in one run, each stage a subflow.

    ingest → pretrain (N chunks) → embed → evaluate (with a label column) → report

Every stage skips what is already done: ingest passes over unchanged files, pretrain over
finished chunks, embed over embedded segments; evaluate is skipped when the stored scorecard was
computed on the same segments and classes, and report when its inputs' digest matches the one
stamped after the last complete report. Killed anywhere, the same run again finishes the job.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.embed import embed
from flows.evaluate import evaluate
from flows.ingest import ingest
from flows.pretrain import pretrain
from flows.report import report
from flows.runtime.names import named_by
from schemas.results import PipelineResult
from schemas.settings import PipelineSettings
from tasks.catalog.embeddings import example_segment
from tasks.catalog.evaluations import scorecard_summary
from tasks.pipeline.plan import (
    embed_settings,
    evaluate_settings,
    evaluate_stage,
    ingest_settings,
    pretrain_settings,
    report_settings,
    report_stage,
)
from tasks.pipeline.summary import StageRow, embed_row, evaluate_row, ingest_row, pipeline_markdown, pretrain_row
from tasks.workspace import Workspace, database


@flow(name="pipeline", flow_run_name=named_by("pipeline", ("site",), "unsited"))
def pipeline(settings: PipelineSettings) -> PipelineResult:
    """Ingest recordings, pretrain wav2vec 2.0, embed every segment, score it against labels and draw the report."""
    log = get_run_logger()
    ws = Workspace.at(settings.workspace)
    settings = settings.model_copy(update={"workspace": str(ws.root)})  # every stage gets the resolved folder

    stages: list[StageRow] = []

    def finished(row: StageRow) -> None:
        """Each stage says what it did as it finishes (a long run shows where it is)."""
        stages.append(row)
        log.info("stage %d/5 %s: %s (%s)", len(stages), row.stage, row.outcome, row.detail)

    ingested = ingest(ingest_settings(settings))
    finished(ingest_row(ingested))
    trained = pretrain(pretrain_settings(settings))
    finished(pretrain_row(trained))
    embedded = embed(embed_settings(settings))
    model_id = embedded.model_id
    finished(embed_row(embedded))

    scorecard = None
    evaluation = evaluate_settings(settings, model_id)
    if evaluation is None:
        finished(StageRow("evaluate", "skipped", "no label column given (--label-column)"))
    else:
        outcome, _ = evaluate_stage(ws, evaluation, evaluate)
        with database.reading(ws) as conn:
            scorecard = scorecard_summary(conn, model_id, evaluation.label_column)
        finished(evaluate_row(outcome, evaluation.label_column, scorecard))

    pages: dict | None = None
    reporting = report_settings(settings, model_id)
    if reporting is None:
        finished(StageRow("report", "skipped", "--no-report"))
    else:
        outcome, pages = report_stage(ws, reporting, settings.run_name, report)
        finished(StageRow("report", outcome, pages["report"], link=pages["report"]))
    for stage in stages:
        if stage.outcome == "up to date":
            log.info("%s of %s is up to date: skipped", stage.stage, model_id)

    with database.reading(ws) as conn:
        segment = example_segment(conn, model_id)
    ingest_counts = {k: v for k, v in ingested.as_dict().items() if k != "workspace_summary"}
    summary = PipelineResult(workspace=str(ws.root), model_id=model_id, report=pages and pages["report"],
                             explorer=pages and pages["explorer"], scorecard=scorecard, example_segment=segment,
                             stages=[s.as_row() for s in stages], ingest=ingest_counts,
                             chunks_trained=trained.chunks_trained, segments_embedded=embedded.segments_embedded)
    create_markdown_artifact(key="pipeline", markdown=pipeline_markdown(summary, stages),
                             description=f"Pipeline over {', '.join(settings.sources[:3])}"
                                         f"{' …' if len(settings.sources) > 3 else ''} into {ws.root}")
    create_table_artifact(key="pipeline-stages", table=[s.as_row() for s in stages],
                          description="What each stage of the pipeline did")
    log.info("pipeline done: %s", "; ".join(f"{s.stage} {s.outcome}" for s in stages))
    return summary

