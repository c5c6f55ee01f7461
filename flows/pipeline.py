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
from flows.runtime.names import named_by
from schemas.settings import PipelineSettings, ReportSettings
from tasks.pipeline.plan import (
    embed_settings,
    evaluate_settings,
    evaluation_is_current,
    ingest_settings,
    pretrain_settings,
    report_settings,
    report_stage,
    scorecard_summary,
    workspace_root,
)
from tasks.pipeline.summary import StageRow, example_segment, pipeline_markdown
from tasks.workspace import Workspace, database


@flow(name="pipeline", flow_run_name=named_by("pipeline", ("site",), "unsited"))
def pipeline(settings: PipelineSettings) -> dict:
    """Ingest recordings, pretrain wav2vec 2.0, embed every segment, score it against labels and draw the report."""
    log = get_run_logger()
    ws = Workspace.at(workspace_root(settings))
    stages: list[StageRow] = []

    ingested = ingest(ingest_settings(settings))
    stages.append(StageRow(
        "ingest", "ran" if ingested["ingested"] or ingested["failed"] else "nothing new",
        f"{ingested['ingested']} ingested, {ingested['skipped']} unchanged, {ingested['duplicates']} duplicates, "
        f"{ingested['failed']} failed; {ingested['segments_added']} segments added, "
        f"{ingested['workspace_summary']['segments']} in the workspace"))

    trained = pretrain(pretrain_settings(settings))
    model_run = trained["model_id"]
    last = trained["summaries"][-1] if trained["summaries"] else None
    stages.append(StageRow(
        "pretrain", "ran" if trained["chunks_trained"] else "nothing new",
        f"run {model_run}: {trained['chunks_trained']} chunk(s) trained, {trained['chunks_done']} done"
        + (f"; last chunk mean loss {last['mean_loss']}, accuracy {last['accuracy']}" if last else "")))

    embedded = embed(embed_settings(settings))
    model_id = embedded["model_id"]
    stages.append(StageRow(
        "embed", "ran" if embedded["segments_embedded"] else "nothing new",
        f"model {model_id}: {embedded['segments_embedded']} segment(s) embedded, {embedded['segments_in_model']} "
        f"in the model, {len(embedded['layers'])} layers of {embedded['dim']} dimensions"))

    scorecard = None
    evaluation = evaluate_settings(settings, model_id)
    if evaluation is None:
        stages.append(StageRow("evaluate", "skipped", "no label column given (--label-column)"))
    else:
        with database.reading(ws) as conn:
            current = evaluation_is_current(conn, evaluation)
        if current:
            log.info("the scorecard of %s for '%s' is up to date: evaluate skipped", model_id, evaluation.label_column)
        else:
            evaluate(evaluation)
        with database.reading(ws) as conn:
            scorecard = scorecard_summary(conn, model_id, evaluation.label_column)
        detail = (f"'{evaluation.label_column}' on {scorecard['segments']} segments / {scorecard['recordings']} "
                  f"recordings: best layer {scorecard['best_layer']} ({scorecard['metric']} {scorecard['score']}); "
                  f"best baseline {scorecard['best_baseline']} {scorecard['baseline_score']}") if scorecard else \
            f"'{evaluation.label_column}': no layer could be scored"
        stages.append(StageRow("evaluate", "up to date" if current else "ran", detail))

    pages: dict | None = None
    reporting = report_settings(settings, model_id)
    if reporting is None:
        stages.append(StageRow("report", "skipped", "--no-report"))
    else:
        outcome, pages = report_stage(ws, reporting, settings.run_name, _draw_report)
        if outcome == "up to date":
            log.info("the report of %s is up to date: %s", model_id, pages["report"])
        stages.append(StageRow("report", outcome, pages["report"], link=pages["report"]))

    with database.reading(ws) as conn:
        segment = example_segment(conn, model_id)
    summary = {"workspace": str(ws.root), "model_id": model_id, "report": pages and pages["report"],
               "explorer": pages and pages["explorer"], "scorecard": scorecard,
               "example_segment": segment, "stages": [s.as_row() for s in stages],
               "ingest": {k: v for k, v in ingested.items() if k != "workspace_summary"},
               "chunks_trained": trained["chunks_trained"], "segments_embedded": embedded["segments_embedded"]}
    create_markdown_artifact(key="pipeline", markdown=pipeline_markdown(summary, stages),
                             description=f"Pipeline over {', '.join(settings.sources[:3])}"
                                         f"{' …' if len(settings.sources) > 3 else ''} into {ws.root}")
    create_table_artifact(key="pipeline-stages", table=[s.as_row() for s in stages],
                          description="What each stage of the pipeline did")
    log.info("pipeline done: %s", "; ".join(f"{s.stage} {s.outcome}" for s in stages))
    return summary


def _draw_report(reporting: ReportSettings) -> dict:
    from flows.report import report  # UMAP and figures: imported only when a report is drawn

    return report(reporting)
