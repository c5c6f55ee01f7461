"""Labels and scorecards: the labelled segments an evaluation scores, and the `evaluations`
table it writes (one row per label column, model, features and metric)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb
import numpy as np

from schemas.records import CurvePoint
from tasks.catalog.embeddings import EmbeddingModel
from tasks.workspace.database import WorkspaceError, insert, transaction


@dataclass(frozen=True)
class LabelledSet:
    segment_ids: list[str]
    labels: np.ndarray
    recordings: np.ndarray
    ambiguous: int  # segments left out because two values of the column cover them

    def restricted_to(self, keep: set[str]) -> "LabelledSet":
        mask = np.array([s in keep for s in self.segment_ids])
        return LabelledSet([s for s, k in zip(self.segment_ids, mask) if k], self.labels[mask], self.recordings[mask],
                           self.ambiguous)

    def class_counts(self) -> dict[str, dict[str, int]]:
        counts = {}
        for value in np.unique(self.labels):
            members = self.labels == value
            counts[str(value)] = {"segments": int(members.sum()), "recordings": len(set(self.recordings[members]))}
        return counts


def labelled_segments(conn: duckdb.DuckDBPyConnection, label_column: str, background: str | None) -> LabelledSet:
    """Segments with exactly one value of `label_column`; with `background`, the segments of
    recordings that have event labels of the column but overlap none of them take that value."""
    rows = conn.execute(
        """SELECT sl.segment_id, s.recording_id, list(DISTINCT sl.label_value) AS values
           FROM segment_labels sl JOIN segments s USING (segment_id)
           WHERE sl.label_column = ? GROUP BY ALL ORDER BY sl.segment_id""",
        [label_column],
    ).fetchall()
    if background:
        rows += conn.execute(
            """SELECT s.segment_id, s.recording_id, [?] FROM segments s
               WHERE s.recording_id IN (SELECT recording_id FROM labels WHERE label_column = ? AND start_s IS NOT NULL)
                 AND s.segment_id NOT IN (SELECT segment_id FROM segment_labels WHERE label_column = ?)
               ORDER BY s.segment_id""",
            [background, label_column, label_column],
        ).fetchall()
    kept = [r for r in rows if len(r[2]) == 1]
    if not kept:
        known = [r[0] for r in conn.execute("SELECT DISTINCT label_column FROM labels").fetchall()]
        raise ValueError(f"no segment has a '{label_column}' label (label columns: {', '.join(known) or 'none'})")
    return LabelledSet([r[0] for r in kept], np.array([r[2][0] for r in kept]), np.array([r[1] for r in kept]),
                       ambiguous=len(rows) - len(kept))


def write_evaluations(conn: duckdb.DuckDBPyConnection, evaluation_id: str, label_column: str, model_id: str,
                      rows: list[dict], labelled: LabelledSet) -> int:
    """Replace this (label column, model) scorecard; returns rows written."""
    now = datetime.now(timezone.utc)
    counts = json.dumps(labelled.class_counts())
    values = []
    for row in rows:
        for metric, (value, low, high) in row["metrics"].items():
            values.append([evaluation_id, label_column, model_id, row["kind"], row["features"], row.get("layer"),
                           metric, _finite(value), _finite(low), _finite(high), len(labelled.segment_ids),
                           len(set(labelled.recordings)), counts, now])
    columns = ("evaluation_id", "label_column", "model_id", "kind", "features", "layer", "metric", "value", "ci_low",
               "ci_high", "segments", "recordings", "class_counts", "created_at")
    with transaction(conn):
        conn.execute("DELETE FROM evaluations WHERE label_column = ? AND model_id = ?", [label_column, model_id])
        insert(conn, "evaluations", [dict(zip(columns, v)) for v in values])
    return len(values)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


# The evaluation metric that picks the default layer (the one `ceta2vec evaluate` names best).
LAYER_METRIC = "knn5_macro_f1"


def label_columns(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Label columns that label at least one segment: evaluated ones first (most recent first), then by name."""
    columns = [r[0] for r in conn.execute(
        "SELECT DISTINCT label_column FROM segment_labels ORDER BY label_column").fetchall()]
    evaluated = [r[0] for r in conn.execute(
        "SELECT label_column FROM evaluations GROUP BY label_column ORDER BY max(created_at) DESC").fetchall()]
    return [c for c in evaluated if c in columns] + [c for c in columns if c not in evaluated]


def resolve_label_column(conn: duckdb.DuckDBPyConnection, wanted: str | None) -> str | None:
    columns = label_columns(conn)
    if wanted is None:
        return columns[0] if columns else None
    if wanted not in columns:
        raise WorkspaceError(f"no segment has a '{wanted}' label (label columns: {', '.join(columns) or 'none'}); "
                             "add labels with `ceta2vec ingest --labels CSV` or `ceta2vec evaluate --labels CSV`")
    return wanted


def resolve_layer(conn: duckdb.DuckDBPyConnection, model: EmbeddingModel, label_column: str | None,
                  wanted: int | None) -> tuple[int, str]:
    """(layer, why): `wanted`, else the best evaluated layer for the label column, else the middle layer."""
    if wanted is not None:
        if wanted not in model.embedded_layers:
            raise WorkspaceError(f"{model.model_id} has segment vectors for layers "
                                 f"{', '.join(map(str, model.embedded_layers))}, not layer {wanted}")
        return wanted, "chosen"
    if label_column is not None:
        row = conn.execute(
            """SELECT layer, value FROM evaluations WHERE model_id = ? AND label_column = ? AND kind = 'model'
               AND features LIKE 'layer %' AND metric = ? AND value IS NOT NULL ORDER BY value DESC, layer LIMIT 1""",
            [model.model_id, label_column, LAYER_METRIC]).fetchone()
        if row and row[0] in model.embedded_layers:
            return int(row[0]), f"best 5-NN macro-F1 for '{label_column}' in `ceta2vec evaluate` ({row[1]:.3f})"
    middle = model.embedded_layers[len(model.embedded_layers) // 2]
    return middle, "middle layer (no evaluation of this model)"


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


def scored_set(conn: duckdb.DuckDBPyConnection, label_column: str, model_id: str) -> tuple[int, dict] | None:
    """(segments, class counts) the stored scorecard of (label column, model) was computed on."""
    row = conn.execute(
        "SELECT any_value(segments), any_value(class_counts) FROM evaluations WHERE label_column = ? AND model_id = ?",
        [label_column, model_id]).fetchone()
    if not row or row[0] is None:
        return None
    return row[0], json.loads(row[1])


def read_scorecard(conn: duckdb.DuckDBPyConnection, model_id: str, label_column: str | None
                   ) -> tuple[str, list[dict], dict] | None:
    """(label column, rows as the evaluate flow makes them, class counts) of the model's latest scorecard:
    for `label_column` when evaluated, else the most recently evaluated column. None without one."""
    columns = [r[0] for r in conn.execute(
        "SELECT label_column FROM evaluations WHERE model_id = ? GROUP BY ALL ORDER BY max(created_at) DESC",
        [model_id]).fetchall()]
    if not columns:
        return None
    column = label_column if label_column in columns else columns[0]
    rows: dict[str, dict] = {}
    counts = "{}"
    for kind, features, layer, metric, value, low, high, class_counts in conn.execute(
            """SELECT kind, features, layer, metric, value, ci_low, ci_high, class_counts FROM evaluations
               WHERE model_id = ? AND label_column = ? ORDER BY kind DESC, layer, features""",
            [model_id, column]).fetchall():
        row = rows.setdefault(features, {"kind": kind, "features": features, "layer": layer, "metrics": {}})
        row["metrics"][metric] = tuple(float("nan") if v is None else float(v) for v in (value, low, high))
        counts = class_counts
    parsed = json.loads(counts) if isinstance(counts, str) else (counts or {})
    return column, list(rows.values()), {k: int(v["segments"] if isinstance(v, dict) else v) for k, v in parsed.items()}


def learning_curve(conn: duckdb.DuckDBPyConnection, run: str, label_column: str, metric: str) -> list[CurvePoint]:
    """Every checkpoint of `run` evaluated for `label_column` (`ceta2vec evaluate --all-checkpoints`),
    by step: its best layer on `metric`, all layers together, and the baselines scored beside it,
    with hours of audio seen summed from train_metrics."""
    rows = conn.execute(
        """WITH seen AS (
             SELECT c.chunk, c.step, coalesce(sum(t.audio_seconds), 0) / 3600.0 AS hours
             FROM checkpoints c LEFT JOIN train_metrics t ON t.run = c.run AND t.step < c.step
             WHERE c.run = ? GROUP BY c.chunk, c.step)
           SELECT s.chunk, s.step, s.hours, e.kind, e.features, e.layer, e.value, e.ci_low, e.ci_high
           FROM seen s JOIN evaluations e ON e.model_id = ? || '@' || s.chunk
           WHERE e.label_column = ? AND e.metric = ? AND e.value IS NOT NULL
           ORDER BY s.step, e.features""", [run, run, label_column, metric]).fetchall()
    by_chunk: dict[int, dict] = {}
    for chunk, step, hours, kind, features, layer, value, low, high in rows:
        point = by_chunk.setdefault(chunk, {"step": step, "hours": hours, "layers": {}, "all": None, "baselines": {}})
        cell = tuple(float("nan") if v is None else float(v) for v in (value, low, high))
        if kind == "model" and features.startswith("layer "):
            point["layers"][layer] = cell
        elif features == "all layers":
            point["all"] = cell
        elif kind == "baseline" and not features.startswith("random weights layer"):
            point["baselines"][features] = cell
    curve = []
    for chunk, point in sorted(by_chunk.items(), key=lambda item: item[1]["step"]):
        if not point["layers"]:
            continue
        layer = max(point["layers"], key=lambda k: point["layers"][k][0])
        curve.append(CurvePoint(chunk, int(point["step"]), float(point["hours"]), layer, point["layers"][layer],
                                point["all"], point["baselines"]))
    return curve
