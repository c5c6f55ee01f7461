"""Classify flow: labels → a detector per label on a model layer (or a baseline) → validated by
groups → scores of every window not yet scored → `detections`, in one transaction per label.

    labels (annotations, labels table) → labelled windows → features → grouped validation → fit
        → classifiers/<id>.joblib + classifiers row → score new windows → detections
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.runtime.names import named_by
from schemas.names import artifact_key
from schemas.results import ClassifyResult
from schemas.settings import ClassifySettings
from tasks.catalog import detections as detections_catalog
from tasks.catalog import recordings
from tasks.detection import run
from tasks.detection.features import resolve_features
from tasks.ingest.labels import read_labels
from tasks.workspace import Workspace, database


# Not cached: what is done is in the workspace (a classifier found by its id, windows already scored).
@task(name="train-classifier", task_run_name="train {target.label}", cache_policy=NO_CACHE)
def train_task(ws_root: str, target: run.Target, plan: run.WindowPlan, settings: ClassifySettings) -> run.Prepared:
    return run.prepare(Workspace.at(ws_root), target, plan, settings.split_by, settings.regularization,
                       settings.seed, settings.bootstrap)


@task(name="score-windows", task_run_name="score new windows for {prepared.record[label]}", cache_policy=NO_CACHE)
def score_task(ws_root: str, prepared: run.Prepared, plan: run.WindowPlan) -> int:
    ws = Workspace.at(ws_root)
    return run.commit(ws, prepared, run.score_batches(ws, prepared, plan))


@flow(name="classify", flow_run_name=named_by("classify", ("label_column", "label"), "annotations"))
def classify(settings: ClassifySettings) -> ClassifyResult:
    """Train (or find) a detector per label and score every window it has not scored yet."""
    log = get_run_logger()
    ws = Workspace.at(settings.workspace)
    with database.writing(ws) as conn:
        database.apply_schema(conn, ws)
        if settings.labels:
            stored, labelled, unmatched = recordings.apply_labels_file(conn, settings.labels,
                                                                       read_labels(Path(settings.labels)))
            log.info("labels: %d rows for %d recordings from %s (%d unmatched)", stored, labelled, settings.labels,
                     len(unmatched))
        targets = run.targets(conn, settings.label, settings.label_column, settings.background)
        spec, why = resolve_features(conn, settings.features, settings.granularity, settings.label_column)
    plan = run.WindowPlan(spec, settings.window_seconds, settings.hop_seconds)
    log.info("features: %s (%s), %s of %g s every %g s", spec.name, why, spec.granularity, plan.window_s, plan.hop_s)
    results = []
    for target in targets:
        prepared = train_task(str(ws.root), target, plan, settings)
        record = prepared.record
        scored = score_task(str(ws.root), prepared, plan)
        results.append(run.trained_row(prepared, spec.name, scored))
        log.info("'%s' (%s): %d positive / %d negative windows; held out by %s: ROC-AUC %s, AP %s, F1-optimal "
                 "threshold %s; %d new windows scored", target.label, record["classifier_id"], record["positives"],
                 record["negatives"], settings.split_by, results[-1]["roc_auc"], results[-1]["average_precision"],
                 results[-1]["threshold"], scored)
    create_table_artifact(
        key=artifact_key("classify", spec.name),
        table=[{k: r[k] for k in ("label", "classifier_id", "positives", "negatives", "roc_auc", "average_precision",
                                  "threshold", "windows_scored")} for r in results],
        description=f"Detectors on {spec.name}, validated by {settings.split_by} (95% bootstrap intervals)")
    return ClassifyResult(features=spec.name, why=why, split_by=settings.split_by, classifiers=results)


@flow(name="score-new", flow_run_name=named_by("score-new", ("label",), "all-labels"))
def classify_new(settings: ClassifySettings) -> ClassifyResult:
    """Score, with each label's current classifier (those of `settings.label`, or all), the windows it has
    not scored yet: newly ingested and embedded audio. Nothing is trained; a workspace without a
    classifier is left as it is. The served deployment `score-new/classify-new` runs this whenever an
    embed run completes."""
    log = get_run_logger()
    ws = Workspace.at(settings.workspace)
    with database.reading(ws) as conn:
        labels = settings.label if settings.label is not None else detections_catalog.classifier_labels(conn)
    if not labels:
        log.info("no classifier in %s yet: nothing to score (run `ceta2vec classify` first)", ws.root)
        return ClassifyResult(features="", why="no classifier yet", split_by="", classifiers=[])
    results = []
    for prepared, plan in run.current(ws, labels):
        record = prepared.record
        scored = score_task(str(ws.root), prepared, plan)
        results.append({"label": record["label"], "classifier_id": record["classifier_id"], "new": False,
                        "features": plan.spec.name, "split_by": record["split_by"],
                        "threshold_used": record["threshold"], "windows_scored": scored})
        log.info("'%s' (%s, %s): %d new windows scored", record["label"], record["classifier_id"], plan.spec.name, scored)
    create_table_artifact(
        key=artifact_key("score-new", "detections"),
        table=[{k: r[k] for k in ("label", "classifier_id", "features", "windows_scored")} for r in results],
        description="New windows scored by each label's current classifier")
    return ClassifyResult(features=", ".join(sorted({r["features"] for r in results})),
                          why="each label's current classifier",
                          split_by=", ".join(sorted({r["split_by"] for r in results})), classifiers=results)
