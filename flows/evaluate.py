"""Evaluate flow: per-layer scorecard of a model's embeddings and units, beside baselines computed
in the same run on the same segments (log-mel and MFCC statistics, the architecture with random weights).

    labels → labelled segments → [embed each checkpoint] → score layers, units, baselines → DuckDB, figure, artifact
"""

from __future__ import annotations

import uuid
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from flows.embed import embed
from flows.runtime import policies as policy
from flows.runtime.names import named_by
from schemas.model_ref import ModelRef
from schemas.names import artifact_key
from schemas.results import EvaluateResult, ModelScores
from schemas.settings import EmbedSettings, EvaluateSettings, ReportSettings
from tasks.catalog import embeddings, recordings
from tasks.catalog.evaluations import LabelledSet, labelled_segments, write_evaluations
from tasks.catalog.recordings import segment_refs
from tasks.embedding.run import read_audio
from tasks.evaluation.run import (
    all_layers_options,
    baseline_pooling_options,
    best_layer,
    model_pooling_options,
    random_model_options,
    score_features,
    unit_scores,
)
from tasks.ingest.labels import read_labels
from tasks.model import checkpoints
from tasks.report.figures import evaluation_figure
from tasks.workspace import Workspace, database

# The scorecard tasks are pure: cached on the content they read (flows/runtime/policies.py), so an
# unchanged model, segment set and labels are not scored twice; retried on a lock held past the wait.
SCORING = dict(cache_expiration=policy.CACHE_EXPIRATION, retries=policy.DB_RETRIES,
               retry_delay_seconds=policy.DB_RETRY_DELAYS, retry_condition_fn=policy.retry_transient,
               timeout_seconds=policy.LONG_READ_TIMEOUT_S)


@task(name="score-layer", task_run_name="score {model_id} layer {layer}", cache_key_fn=policy.layer_scores_key,
      **SCORING)
def score_layer(ws_root: str, model_id: str, layer: int, labelled: LabelledSet, seed: int, n_boot: int) -> dict:
    with database.reading(Workspace.at(ws_root)) as conn:
        options = model_pooling_options(conn, model_id, layer, labelled.segment_ids)
    return {"kind": "model", "features": f"layer {layer}", "layer": layer,
            "metrics": score_features(options["mean"], labelled, seed, n_boot, options)}


@task(name="score-all-layers", task_run_name="score {model_id} all layers", cache_key_fn=policy.layer_scores_key,
      **SCORING)
def score_all_layers(ws_root: str, model_id: str, layers: list[int], labelled: LabelledSet, seed: int,
                     n_boot: int) -> dict:
    """Every layer side by side (a probe may combine what different depths know)."""
    with database.reading(Workspace.at(ws_root)) as conn:
        options = all_layers_options([model_pooling_options(conn, model_id, layer, labelled.segment_ids)
                                      for layer in layers])
    return {"kind": "model", "features": "all layers", "layer": None,
            "metrics": score_features(options["mean"], labelled, seed, n_boot, options)}


@task(name="score-units", task_run_name="score units of {model_id}", cache_key_fn=policy.unit_scores_key, **SCORING)
def score_units(ws_root: str, model_id: str, labelled: LabelledSet) -> list[dict]:
    with database.reading(Workspace.at(ws_root)) as conn:
        return [{"kind": "model", **row} for row in unit_scores(conn, model_id, labelled)]


@task(name="score-baselines", task_run_name="score baselines", cache_key_fn=policy.baseline_scores_key, **SCORING)
def score_baselines(ws_root: str, model_id: str, labelled: LabelledSet, seed: int, n_boot: int) -> list[dict]:
    ws = Workspace.at(ws_root)
    with database.reading(ws) as conn:
        refs = segment_refs(conn, ws, labelled.segment_ids)
        model = embeddings.resolve_model(conn, model_id)
    audio = read_audio(refs)
    rows = [{"kind": "baseline", "features": name, "layer": None,
             "metrics": score_features(options["mean+std"], labelled, seed, n_boot, options)}
            for name, options in baseline_pooling_options(audio, model.sample_rate).items()]
    from transformers import Wav2Vec2Config

    config = Wav2Vec2Config.from_pretrained(ws.root / model.export_dir).to_dict()
    random_rows = [{"kind": "baseline", "features": f"random weights layer {layer}", "layer": layer,
                    "metrics": score_features(options["mean"], labelled, seed, n_boot, options)}
                   for layer, options in random_model_options(config, audio, model.frame_seconds, seed).items()]
    best = max(random_rows, key=lambda r: r["metrics"]["knn5_macro_f1"][0])
    rows.append({**best, "features": "random weights (best layer)", "layer": None})
    return rows + random_rows


def scorecard_stem(ws: Workspace, model_id: str, label_column: str) -> Path:
    """Inside the model's report folder, under the name the report links it by, so the figure travels
    with the report."""
    from flows.report import report_folder
    from tasks.report.verdict import scorecard_key

    return report_folder(ws, ReportSettings(workspace=str(ws.root)), model_id) / "figures" / scorecard_key(label_column)


@flow(name="evaluate", flow_run_name=named_by("evaluate", ("label_column",), "labels"))
def evaluate(settings: EvaluateSettings) -> EvaluateResult:
    """Score every layer and unit inventory of a model against labels, beside baselines."""
    log = get_run_logger()
    ws = Workspace.at(settings.workspace)
    with database.writing(ws) as conn:
        database.apply_schema(conn, ws)
        if settings.labels:
            stored, labelled_recordings, unmatched = recordings.apply_labels_file(conn, settings.labels, read_labels(Path(settings.labels)))
            log.info("labels: %d rows for %d recordings from %s (%d unmatched)", stored, labelled_recordings, settings.labels,
                     len(unmatched))
        labelled = labelled_segments(conn, settings.label_column, settings.background)
        model = embeddings.resolve_model(conn, settings.model)
        model_id = model.model_id
        embedded = embeddings.segments_embedded(conn, model_id)
        if len(embedded & set(labelled.segment_ids)) < len(labelled.segment_ids):
            log.info("%d labelled segments have no embedding (shorter than a frame, or not yet embedded): left out",
                     len(set(labelled.segment_ids) - embedded))
            labelled = labelled.restricted_to(embedded)
    log.info("'%s': %d segments from %d recordings (%d ambiguous left out); classes %s", settings.label_column,
             len(labelled.segment_ids), len(set(labelled.recordings)), labelled.ambiguous, labelled.class_counts())

    model_ids = [model_id]
    if settings.all_checkpoints:
        chunks = [i.chunk for i in checkpoints.complete(ws.checkpoints_dir / model.run)]
        for other in chunks:
            if other != model.chunk:
                embed(EmbedSettings(workspace=str(ws.root), run=model.run, chunk=other, poolings=["mean"],
                                    frame_vectors=False))
        model_ids = [str(ModelRef(model.run, c)) for c in chunks]

    # Steps: the baselines, then each model's layers and units (bootstrapped probes take minutes on real data).
    steps = 1 + len(model_ids)
    progress = create_progress_artifact(progress=0.0, description=f"'{settings.label_column}': baselines, then "
                                        f"the layers of {', '.join(model_ids)} scored")
    baselines = score_baselines(str(ws.root), model_id, labelled, settings.seed, settings.bootstrap)
    update_progress_artifact(progress, progress=100.0 / steps)
    evaluation_id = f"eval-{uuid.uuid4().hex[:12]}"
    results = {}
    for done, mid in enumerate(model_ids, start=1):
        with database.reading(ws) as conn:
            layers = embeddings.layers_embedded(conn, mid)
        rows = []
        for scored, layer in enumerate(layers, start=1):
            rows.append(score_layer(str(ws.root), mid, layer, labelled, settings.seed, settings.bootstrap))
            update_progress_artifact(progress, progress=100.0 * (done + scored / (len(layers) + 1)) / steps)
        if len(layers) > 1:
            rows.append(score_all_layers(str(ws.root), mid, layers, labelled, settings.seed, settings.bootstrap))
        rows += score_units(str(ws.root), mid, labelled) + baselines
        update_progress_artifact(progress, progress=100.0 * (done + 1) / steps)
        with database.writing(ws) as conn:
            write_evaluations(conn, evaluation_id, settings.label_column, mid, rows, labelled)
        figure = evaluation_figure(rows, settings.label_column, mid, scorecard_stem(ws, mid, settings.label_column))
        best = best_layer(rows)
        results[mid] = ModelScores(rows=rows, best_layer=best["layer"] if best else None, figure=[str(p) for p in figure])
        create_table_artifact(
            key=artifact_key("evaluate", settings.label_column, mid),
            table=[{"features": r["features"], **{m: None if v[0] != v[0] else round(v[0], 3)
                                                  for m, v in r["metrics"].items()}} for r in rows],
            description=f"Scorecard of {mid} for '{settings.label_column}' (best layer: "
                        f"{best['layer'] if best else 'n/a'}); intervals in table evaluations",
        )
        log.info("%s: best layer for '%s' is %s", mid, settings.label_column, best["layer"] if best else None)
    return EvaluateResult(evaluation_id=evaluation_id, label_column=settings.label_column, model_id=model_id,
                          segments=len(labelled.segment_ids), recordings=len(set(labelled.recordings)),
                          class_counts=labelled.class_counts(), ambiguous=labelled.ambiguous, models=results)
