"""What a workspace holds and how far each stage got: the queries behind `ceta2vec status`, the
flows' summary artifacts and the pipeline's "is this stage current?" checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

import duckdb

from schemas.settings import ReportSettings
from schemas.tables import INGEST_RUN_STATUSES, TABLES, VIEWS
from tasks.catalog.rows import typed_rows
from tasks.workspace import Workspace
from tasks.workspace.database import reading
from tasks.workspace.staging import owner_alive


def summary_of(workspace: Workspace) -> dict:
    """`workspace_summary` of a workspace, all zeros where there is none yet (nothing created)."""
    if workspace.exists():
        with reading(workspace) as conn:
            return workspace_summary(conn)
    with duckdb.connect() as conn:
        for ddl in TABLES + VIEWS:
            conn.execute(ddl)
        return workspace_summary(conn)


def workspace_summary(conn: duckdb.DuckDBPyConnection) -> dict:
    """What the workspace holds, for `ceta2vec status` and the flow's summary artifact."""
    recordings, hours, stored, sites = conn.execute(
        "SELECT count(*), coalesce(sum(duration_s), 0) / 3600, coalesce(sum(stored_bytes), 0), count(DISTINCT site) FROM recordings"
    ).fetchone()
    segments, flagged_silent, flagged_nonfinite, stored_hours = conn.execute(
        """SELECT count(*), count(*) FILTER (is_silent), count(*) FILTER (nonfinite_count > 0),
                  coalesce(sum(valid_s), 0) / 3600 FROM segments"""
    ).fetchone()
    errors, warnings = conn.execute(
        "SELECT count(*) FILTER (severity = 'error'), count(*) FILTER (severity = 'warning') FROM ingest_errors"
    ).fetchone()
    duplicates = conn.execute("SELECT count(*) FROM source_files WHERE status = 'duplicate'").fetchone()[0]
    labelled = conn.execute("SELECT count(DISTINCT recording_id) FROM labels").fetchone()[0]
    config = {k: v for k, v in conn.execute("SELECT key, value FROM workspace_config").fetchall()}
    return {
        "recordings": recordings,
        "recording_hours": float(hours),
        "sites": sites,
        "segments": segments,
        "segment_audio_hours": float(stored_hours),
        "silent_segments": flagged_silent,
        "nonfinite_segments": flagged_nonfinite,
        "stored_bytes": int(stored),
        "bytes_per_audio_hour": float(stored / stored_hours) if stored_hours else 0.0,
        "duplicates": duplicates,
        "labelled_recordings": labelled,
        "errors": errors,
        "warnings": warnings,
        "config": config,
    }


@dataclass(frozen=True)
class SiteSummary:
    site: str
    recordings: int
    hours: float
    segments: int
    first_start: datetime | None
    last_start: datetime | None


def sites(conn: duckdb.DuckDBPyConnection) -> list[SiteSummary]:
    """Recordings, hours, segments and first and last start per site."""
    return typed_rows(conn.execute(
        """SELECT r.site, count(DISTINCT r.recording_id) AS recordings, round(sum(r.duration_s) / 3600, 4) AS hours,
                  (SELECT count(*) FROM segments s WHERE s.site = r.site) AS segments,
                  min(r.start_time) AS first_start, max(r.start_time) AS last_start
           FROM recordings r GROUP BY r.site ORDER BY r.site"""), SiteSummary)


@dataclass(frozen=True)
class IngestFailure:
    path: str
    stage: str
    reason: str


def recent_errors(conn: duckdb.DuckDBPyConnection, limit: int = 20) -> list[IngestFailure]:
    """The latest files that could not be ingested."""
    return typed_rows(conn.execute(
        "SELECT path, stage, reason FROM ingest_errors WHERE severity = 'error' ORDER BY occurred_at DESC LIMIT ?",
        [limit]), IngestFailure)


def ingest_runs(conn: duckdb.DuckDBPyConnection, workspace: Workspace) -> dict:
    """Ingest runs by how they ended, and the latest. A run still marked 'running' whose process is
    gone counts as interrupted already (the next ingest marks it so; `status` only reads)."""
    rows = conn.execute("SELECT run_id, status, writer_tag, started_at, finished_at FROM ingest_runs "
                        "ORDER BY started_at").fetchall()
    runs = {state: 0 for state in INGEST_RUN_STATUSES}
    latest = None
    for run_id, state, tag, started, finished in rows:
        if state == "running" and not (tag and owner_alive(workspace.staging_dir, tag)):
            state = "interrupted"
        runs[state] += 1
        latest = {"run_id": run_id, "status": state, "started_at": str(started),
                  "finished_at": None if finished is None else str(finished)}
    return {**runs, "latest": latest}


@dataclass(frozen=True)
class TrainingRun:
    run: str
    preset: str
    params_m: float | None  # parameters in millions
    chunks_planned: int | None
    chunks_done: int
    steps_done: int
    last_chunk_loss: float | None  # mean loss of the last chunk
    latest_checkpoint: str | None


def training_runs(conn: duckdb.DuckDBPyConnection) -> list[TrainingRun]:
    """Every run, the most recently updated first."""
    return typed_rows(conn.execute(
        """SELECT m.run, m.preset, round(m.parameters / 1e6, 2) AS params_m,
                  json_extract(m.settings, '$.chunks')::INTEGER AS chunks_planned, m.chunks_done, m.steps_done,
                  (SELECT round(avg(loss), 4) FROM train_metrics t WHERE t.run = m.run
                     AND t.chunk = m.chunks_done) AS last_chunk_loss,
                  m.latest_checkpoint
           FROM models m ORDER BY m.updated_at DESC"""), TrainingRun)


def runs_with_checkpoints(conn: duckdb.DuckDBPyConnection) -> list[dict]:
    """`training_runs` under the names `status` shows, with the chunks whose checkpoints are kept (pruned
    ones left out)."""
    kept = dict(conn.execute(
        "SELECT run, list(chunk ORDER BY chunk) FROM checkpoints WHERE kept GROUP BY run").fetchall())
    return [{"run": r.run, "preset": r.preset, "params (M)": r.params_m, "chunks planned": r.chunks_planned,
             "chunks done": r.chunks_done, "steps": r.steps_done, "last chunk loss": r.last_chunk_loss,
             "checkpoints kept": kept.get(r.run, []), "latest checkpoint": r.latest_checkpoint}
            for r in training_runs(conn)]


def embedded_models(conn: duckdb.DuckDBPyConnection, workspace: Workspace) -> list[dict]:
    """Each embedded checkpoint, the most recent first: its segments and layers, the layers with
    k-means units, its latest evaluation (the stored scorecard of the label column last evaluated:
    the best layer against the best baseline) and its report's index.html, when there is one."""
    from tasks.catalog.evaluations import scorecard_summary

    rows = conn.execute(
        """SELECT m.model_id, m.run, m.chunk,
                  (SELECT count(DISTINCT e.segment_id) FROM embedded_segments e WHERE e.model_id = m.model_id),
                  (SELECT list(DISTINCT e.layer ORDER BY e.layer) FROM embedded_segments e WHERE e.model_id = m.model_id),
                  (SELECT list(u.layer ORDER BY u.layer) FROM unit_models u WHERE u.model_id = m.model_id),
                  (SELECT any_value(u.k) FROM unit_models u WHERE u.model_id = m.model_id),
                  (SELECT arg_max(v.label_column, v.created_at) FROM evaluations v WHERE v.model_id = m.model_id),
                  (SELECT max(v.created_at) FROM evaluations v WHERE v.model_id = m.model_id)
           FROM embedding_models m ORDER BY m.created_at DESC, m.model_id"""
    ).fetchall()
    models = []
    for model_id, run, chunk, segments, layers, unit_layers, k, label_column, evaluated_at in rows:
        evaluation = None
        card = scorecard_summary(conn, model_id, label_column) if label_column else None
        if card:
            beaten = card["best_baseline"] is not None and card["score"] > card["baseline_score"]
            evaluation = {"label_column": label_column, "evaluated_at": str(evaluated_at), **card,
                          "beats_baselines": beaten}
        index = workspace.report_dir(model_id) / "index.html"
        models.append({"model_id": model_id, "run": run, "chunk": chunk, "segments": segments,
                       "layers": list(layers or []), "kmeans_layers": list(unit_layers or []), "units_k": k,
                       "evaluation": evaluation, "report": str(index) if index.is_file() else None})
    return models


def workspace_status(conn: duckdb.DuckDBPyConnection, workspace: Workspace) -> dict:
    """Everything `ceta2vec status` shows, with named fields (its JSON form)."""
    return {"workspace": str(workspace.root), **workspace_summary(conn),
            "sites": [asdict(s) for s in sites(conn)],
            "recent_errors": [asdict(e) for e in recent_errors(conn)],
            "ingest_runs": ingest_runs(conn, workspace),
            "runs": runs_with_checkpoints(conn), "models": embedded_models(conn, workspace)}


def report_inputs(conn: duckdb.DuckDBPyConnection, report: ReportSettings) -> dict:
    """What a report is drawn from: the model's checkpoint and segments, its scorecards and units,
    the labels, and the report's own settings. Equal inputs give an equal report."""
    model = str(report.model)  # the report's resolved model, as its model_id column names it
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
