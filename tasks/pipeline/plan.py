"""The pipeline's plan: one PipelineSettings mapped onto each stage's settings, and the checks that
let a re-run skip the stages whose inputs have not changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import duckdb

from schemas.settings import (
    EmbedSettings,
    EvaluateSettings,
    IngestSettings,
    PipelineSettings,
    PretrainSettings,
    ReportSettings,
)
from tasks.workspace import Workspace, database


def workspace_root(settings: PipelineSettings) -> str:
    return str(Workspace.at(settings.workspace).root)


def ingest_settings(settings: PipelineSettings) -> IngestSettings:
    return IngestSettings(sources=settings.sources, workspace=workspace_root(settings), site=settings.site,
                          labels=settings.labels, sample_rate=settings.sample_rate,
                          segment_seconds=settings.segment_seconds, workers=settings.workers,
                          task_runner=settings.task_runner, dask_address=settings.dask_address,
                          dask_workers=settings.dask_workers, storage=settings.storage)


def pretrain_settings(settings: PipelineSettings) -> PretrainSettings:
    return PretrainSettings(workspace=workspace_root(settings), run=settings.run_name, preset=settings.preset,
                            chunks=settings.chunks, steps_per_chunk=settings.steps_per_chunk,
                            batch_size=settings.batch_size, crop_seconds=settings.crop_seconds,
                            model_overrides=settings.model_overrides, seed=settings.seed, device=settings.device,
                            nproc=settings.nproc)


def embed_settings(settings: PipelineSettings) -> EmbedSettings:
    """The run's latest checkpoint: the one the pretrain stage just finished."""
    return EmbedSettings(workspace=workspace_root(settings), run=settings.run_name, units_k=settings.units_k,
                         kmeans_sample_frames=settings.kmeans_sample_frames, seed=settings.seed,
                         device=settings.device, task_runner=settings.task_runner,
                         dask_address=settings.dask_address, dask_workers=settings.dask_workers)


def evaluate_settings(settings: PipelineSettings, model_id: str) -> EvaluateSettings | None:
    if not settings.label_column:
        return None
    # labels were stored by the ingest stage; passing the CSV again would re-apply them to every path
    return EvaluateSettings(workspace=workspace_root(settings), label_column=settings.label_column,
                            background=settings.background, model=model_id, bootstrap=settings.bootstrap,
                            seed=settings.seed)


def report_settings(settings: PipelineSettings, model_id: str) -> ReportSettings | None:
    if not settings.report:
        return None
    return ReportSettings(workspace=workspace_root(settings), model=model_id, label_column=settings.label_column,
                          atlas_units=settings.atlas_units, exemplars=settings.exemplars,
                          media_points=settings.media_points, seed=settings.seed)


def evaluation_is_current(conn: duckdb.DuckDBPyConnection, settings: EvaluateSettings) -> bool:
    """Whether the stored scorecard of (label column, model) was computed on exactly the segments
    and classes that would be scored now: no new segments, no changed labels."""
    from tasks.evaluation.run import labelled_segments  # scikit-learn: only when a label column is given

    stored = conn.execute(
        "SELECT any_value(segments), any_value(class_counts) FROM evaluations WHERE label_column = ? AND model_id = ?",
        [settings.label_column, settings.model]).fetchone()
    if not stored or stored[0] is None:
        return False
    try:
        labelled = labelled_segments(conn, settings.label_column, settings.background)
    except Exception:  # no such column any more: let the evaluate stage say so
        return False
    embedded = {r[0] for r in conn.execute(
        "SELECT DISTINCT segment_id FROM embedded_segments WHERE model_id = ?", [settings.model]).fetchall()}
    labelled = labelled.restricted_to(embedded)
    return stored[0] == len(labelled.segment_ids) and json.loads(stored[1]) == labelled.class_counts()


def scorecard_summary(conn: duckdb.DuckDBPyConnection, model_id: str, label_column: str,
                      metric: str = "knn5_macro_f1") -> dict | None:
    """Best layer and its score, with the best baseline's score, from the stored scorecard."""
    rows = conn.execute(
        """SELECT kind, features, layer, value FROM evaluations
           WHERE model_id = ? AND label_column = ? AND metric = ? AND value IS NOT NULL""",
        [model_id, label_column, metric]).fetchall()
    layers = [r for r in rows if r[0] == "model" and r[1].startswith("layer ")]
    if not layers:
        return None
    best = max(layers, key=lambda r: r[3])
    baselines = [r for r in rows if r[0] == "baseline" and not r[1].startswith("random weights layer")]
    top = max(baselines, key=lambda r: r[3], default=None)
    counts = conn.execute("SELECT any_value(segments), any_value(recordings) FROM evaluations "
                          "WHERE model_id = ? AND label_column = ?", [model_id, label_column]).fetchone()
    return {"metric": metric, "best_layer": best[2], "score": round(best[3], 4),
            "best_baseline": top[1] if top else None, "baseline_score": round(top[3], 4) if top else None,
            "segments": counts[0], "recordings": counts[1]}


def report_inputs(conn: duckdb.DuckDBPyConnection, report: ReportSettings) -> dict:
    """What a report is drawn from: the model's checkpoint and segments, its scorecards and units,
    the labels, and the report's own settings. Equal inputs give an equal report."""
    model = report.model
    export = conn.execute("SELECT export_sha256 FROM embedding_models WHERE model_id = ?", [model]).fetchone()
    segments, frames = conn.execute(
        "SELECT count(DISTINCT segment_id), coalesce(sum(frames), 0) FROM embedded_segments WHERE model_id = ?",
        [model]).fetchone()
    evaluations = conn.execute(
        "SELECT label_column, count(*), max(created_at)::VARCHAR FROM evaluations WHERE model_id = ? "
        "GROUP BY ALL ORDER BY ALL", [model]).fetchall()
    units = conn.execute("SELECT layer, k, inertia FROM unit_models WHERE model_id = ? ORDER BY layer",
                         [model]).fetchall()
    labels = conn.execute("SELECT count(*), md5(coalesce(string_agg(recording_id || label_column || label_value || "
                          "coalesce(start_s::VARCHAR, '') || coalesce(end_s::VARCHAR, ''), ',' ORDER BY ALL), ''))"
                          " FROM labels").fetchone()
    return {"model": model, "export_sha256": export[0] if export else None, "segments": segments, "frames": frames,
            "evaluations": [list(map(str, r)) for r in evaluations], "units": [list(map(str, r)) for r in units],
            "labels": list(labels), "settings": report.model_dump(mode="json")}


def inputs_digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


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


def stamp_report(stamp: Path, digest: str, pages: dict, inputs: dict) -> None:
    """Written after the report flow returned: a report killed half-way has no stamp and is redrawn."""
    stamp.parent.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_name(stamp.name + ".partial")
    tmp.write_text(json.dumps({"digest": digest, **pages, "inputs": inputs}, indent=2, default=str))
    tmp.replace(stamp)


def report_stage(workspace: Workspace, reporting: ReportSettings, run: str, draw: Callable[[ReportSettings], dict],
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
    pages = {"report": str(drawn["report"]), "explorer": str(drawn["explorer"])}
    stamp_report(stamp, digest, pages, inputs)
    return "ran", pages
