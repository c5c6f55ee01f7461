"""Refresh flow: after new audio or a new checkpoint, bring embeddings, scorecards and the report up to date.

    plan → embed (new segments, or all of a new checkpoint) → evaluate each label column → report

Run by the `refresh/after-new-data` deployment whenever a scheduled ingest or pretraining run
completes. Each step is skipped when its inputs have not changed, with the pipeline's own checks:
a scorecard computed on the same segments and classes, a report stamped with the same inputs.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.embed import embed
from flows.evaluate import evaluate
from flows.report import report
from flows.runtime.names import named_by
from schemas.results import RefreshResult
from schemas.settings import EmbedSettings, EvaluateSettings, RefreshSettings, ReportSettings
from tasks.pipeline.plan import evaluate_stage, report_stage
from tasks.pipeline.refresh import plan_refresh
from tasks.workspace import Workspace, database


@flow(name="refresh", flow_run_name=named_by("refresh", ("run",), "latest"))
def refresh(settings: RefreshSettings) -> RefreshResult:
    """Embed what is new, score every label column, redraw the report (subflows embed → evaluate → report)."""
    log = get_run_logger()
    ws = Workspace.at(settings.workspace)
    with database.writing(ws) as conn:
        database.apply_schema(conn, ws)
        plan = plan_refresh(conn, settings.run, settings.label_columns)
    if plan.run is None:
        log.info("no trained checkpoint in %s yet: nothing to embed (run pretraining first)", ws.root)
        return _publish([("plan", "stopped", f"no trained checkpoint in {ws.root} yet")])

    embedded = embed(EmbedSettings(workspace=str(ws.root), run=plan.run))
    model_id, added = embedded.model_id, embedded.segments_embedded
    steps = [("embed", "ran" if added else "nothing new", f"{model_id}: {added} segment(s) embedded")]

    scored = []
    for column in plan.label_columns:
        evaluation = EvaluateSettings(workspace=str(ws.root), label_column=column, model=model_id,
                                      **settings.passed_to(EvaluateSettings))
        # One column that cannot be scored (a single class, say) must not stop the others or the report.
        outcome, state = evaluate_stage(ws, evaluation, lambda e: evaluate(e, return_state=True), settings.force)
        if outcome == "up to date":
            steps.append((f"evaluate {column}", "up to date", "same segments and classes as the stored scorecard"))
            scored.append(column)
        elif state.is_completed():
            scored.append(column)
            steps.append((f"evaluate {column}", "ran", model_id))
        else:
            log.warning("evaluate '%s' of %s ended %s: %s", column, model_id, state.name, state.message)
            steps.append((f"evaluate {column}", state.name.lower(), str(state.message)))

    if settings.report:
        reporting = ReportSettings(workspace=str(ws.root), model=model_id,
                                   label_column=(scored or plan.label_columns or [None])[0],
                                   **settings.passed_to(ReportSettings))
        outcome, pages = report_stage(ws, reporting, plan.run, report, force=settings.force)
        steps.append(("report", outcome, pages["report"]))
    return _publish(steps, model_id)


def _publish(steps: list[tuple[str, str, str]], model_id: str | None = None) -> RefreshResult:
    rows = [{"step": s, "outcome": o, "detail": d} for s, o, d in steps]
    create_table_artifact(key="refresh-summary", table=rows,
                          description=f"What this refresh did{' for ' + model_id if model_id else ''}")
    return RefreshResult(model_id=model_id, steps=rows)

