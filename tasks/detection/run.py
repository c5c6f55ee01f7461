"""One classify run, as plain functions the `classify` flow calls: which labels to learn, the
labelled windows of each, training (or finding the classifier these inputs trained before), and
scores of every window not yet scored, committed in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from tasks.catalog import annotations as annotations_catalog
from tasks.catalog import detections as detections_catalog
from tasks.detection import classifier as clf
from tasks.detection.features import FeatureSpec, window_features
from tasks.detection.windows import Span, Windows, window_targets, windows_of
from tasks.workspace import Workspace, database

SCORE_BATCH_SEGMENTS = 256  # segments whose features are in memory at once while scoring


@dataclass
class Target:
    """A label to learn and the spans that say where it is and is not."""

    label: str
    spans: list[Span] = field(default_factory=list)
    background_recordings: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class WindowPlan:
    spec: FeatureSpec
    window_s: float
    hop_s: float

    def describe(self) -> dict:
        return {"features": self.spec.name, "granularity": self.spec.granularity, "window_s": self.window_s,
                "hop_s": self.hop_s}


def targets(conn: duckdb.DuckDBPyConnection, labels: list[str] | None, label_column: str | None,
            background: str | None) -> list[Target]:
    """The labels to learn: `labels` from the annotations (all of them when neither these nor a label
    column are given), and each value of `label_column` in the labels table, one-vs-rest: the
    column's other values are its negatives, and with `background` so are the windows of
    event-labelled recordings that no event touches."""
    found: dict[str, Target] = {}
    if label_column:
        rows = detections_catalog.spans_of_column(conn, label_column)
        if not rows:
            raise ValueError(f"no '{label_column}' labels in this workspace (give --labels CSV, or label with "
                             "`ceta2vec label`)")
        values = sorted({v for _, v, _, _ in rows if v != background})
        evented = {rec for rec, _, start, _ in rows if start is not None}
        for value in values:
            target = found.setdefault(value, Target(value))
            target.spans += [Span(rec, start, end, v == value) for rec, v, start, end in rows]
            if background:
                target.background_recordings |= evented
    wanted = labels if labels is not None else ([] if label_column else annotations_catalog.annotation_labels(conn))
    if not wanted and not found:
        raise ValueError("nothing to learn: no annotations in this workspace; import some with `ceta2vec label FILE`, "
                         "or give --label-column COL")
    for row in annotations_catalog.annotations_of(conn, list(wanted) + list(found)):
        target = found.setdefault(row.label, Target(row.label))
        target.spans.append(Span(row.recording_id, row.start_s, row.end_s, row.positive))
        if background and row.positive:
            target.background_recordings.add(row.recording_id)
    missing = [w for w in wanted if w not in found]
    if missing:
        known = annotations_catalog.annotation_labels(conn)
        raise ValueError(f"no annotations of {', '.join(map(repr, missing))} (labels annotated: "
                         f"{', '.join(known) or 'none'}); import some with `ceta2vec label FILE --label NAME`")
    return [found[k] for k in sorted(found)]


def _embedded(spec: FeatureSpec) -> tuple[str, int] | None:
    return (spec.model_id, spec.layer) if spec.kind == "model" else None


def labelled_windows(conn: duckdb.DuckDBPyConnection, target: Target, plan: WindowPlan) -> tuple[Windows, np.ndarray]:
    """The target's labelled windows and their 0/1 targets."""
    recordings = sorted({s.recording_id for s in target.spans} | target.background_recordings)
    segments = detections_catalog.segments_to_score(conn, embedded=_embedded(plan.spec), recording_ids=recordings)
    windows = windows_of(segments, plan.window_s, plan.hop_s, plan.spec.granularity)
    y = window_targets(windows, target.spans, target.background_recordings)
    keep = np.flatnonzero(y >= 0)
    return windows.take(keep), y[keep].astype(int)


def classifier_path(workspace: Workspace, classifier_id: str) -> Path:
    return workspace.root / "classifiers" / f"{classifier_id}.joblib"


@dataclass(frozen=True)
class Prepared:
    record: dict  # the classifiers row
    pipeline: object
    new: bool  # trained now (False: these inputs trained it before)


def _interval(validation: dict, metric: str) -> str:
    value = validation.get("metrics", {}).get(metric)
    if not value:
        return "n/a"
    return f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]"


def trained_row(prepared: Prepared, features: str, scored: int) -> dict:
    """What `classify` reports of one label's classifier: its validation with intervals, in words."""
    record = prepared.record
    validation = record["validation"] if isinstance(record["validation"], dict) else json.loads(record["validation"])
    return {"label": record["label"], "classifier_id": record["classifier_id"], "new": prepared.new,
            "features": features, "positives": record["positives"], "negatives": record["negatives"],
            "folds": validation.get("folds", 0), "roc_auc": _interval(validation, "roc_auc"),
            "average_precision": _interval(validation, "average_precision"),
            "threshold": _interval(validation, "threshold"), "f1": _interval(validation, "f1"),
            "windows_scored": scored, "validation": validation, "threshold_used": record["threshold"]}


def prepare(workspace: Workspace, target: Target, plan: WindowPlan, split_by: str, c: float, seed: int,
            n_boot: int) -> Prepared:
    """Train the target's classifier, or load it when the same inputs trained it before."""
    with database.reading(workspace) as conn:
        windows, y = labelled_windows(conn, target, plan)
        positives, negatives = int((y == 1).sum()), int((y == 0).sum())
        if positives == 0 or negatives == 0:
            raise ValueError(f"'{target.label}': {positives} positive and {negatives} negative windows; a detector "
                             "needs both (label some negatives, or give --background)")
        keys = list(zip(windows.recording_id, windows.channel, windows.start_s))
        description = {**plan.describe(), "c": c, "seed": seed, "split_by": split_by}
        cid = clf.classifier_id(target.label, description, keys, y)
        known = detections_catalog.classifier_row(conn, cid)
        path = classifier_path(workspace, cid)
        if known is not None and path.exists():
            return Prepared(known, clf.load(path), False)
        x = window_features(conn, workspace, windows, plan.spec)
    trained = clf.train(target.label, x, y, windows.groups(split_by), keys, description, c, seed, n_boot)
    record = {"classifier_id": trained.classifier_id, "label": target.label, "features": plan.spec.name,
              "model_id": plan.spec.model_id, "layer": plan.spec.layer, "granularity": plan.spec.granularity,
              "window_s": plan.window_s, "hop_s": plan.hop_s, "split_by": split_by, "positives": positives,
              "negatives": negatives, "threshold": trained.threshold,
              "validation": json.dumps(trained.validation, allow_nan=True), "settings": json.dumps(description),
              "path": workspace.relative(path)}
    clf.save(trained.pipeline, path, {"record": record})
    return Prepared(record, trained.pipeline, True)


def score_batches(workspace: Workspace, prepared: Prepared, plan: WindowPlan,
                  batch_segments: int = SCORE_BATCH_SEGMENTS) -> Iterator[pa.Table]:
    """Detection rows of every window the classifier has not scored yet, a batch of segments at a time."""
    cid, label = prepared.record["classifier_id"], prepared.record["label"]
    with database.reading(workspace) as conn:
        pending = detections_catalog.segments_to_score(conn, not_scored_by=cid, embedded=_embedded(plan.spec))
        for start in range(0, len(pending), batch_segments):
            windows = windows_of(pending[start:start + batch_segments], plan.window_s, plan.hop_s, plan.spec.granularity)
            if not len(windows):
                continue
            x = window_features(conn, workspace, windows, plan.spec)
            yield pa.table({
                "classifier_id": pa.array([cid] * len(windows), pa.string()),
                "label": pa.array([label] * len(windows), pa.string()),
                "recording_id": pa.array(windows.recording_id, pa.string()),
                "channel": pa.array(windows.channel, pa.int16()),
                "segment_id": pa.array(windows.segment_id, pa.string()),
                "start_s": pa.array(windows.start_s, pa.float64()),
                "end_s": pa.array(windows.end_s, pa.float64()),
                "utc_start": pa.array(windows.utc_start, pa.timestamp("us", tz="UTC")),
                "score": pa.array(clf.scores(prepared.pipeline, x), pa.float64()),
            })


def commit(workspace: Workspace, prepared: Prepared, batches) -> int:
    """The classifier's row and all the batches in one transaction (all of them or none)."""
    batches = list(batches)  # scored before the writer's turn: the database is held only to write
    with database.writing(workspace) as conn:
        database.apply_schema(conn, workspace)
        return detections_catalog.store(conn, prepared.record, batches)


def current(workspace: Workspace, labels: list[str] | None = None) -> list[tuple[Prepared, WindowPlan]]:
    """Each label's current classifier (of `labels`, or all), loaded from its file, with the windows and
    features it scores: what scoring new audio needs, without training anything."""
    with database.reading(workspace) as conn:
        names = labels if labels is not None else detections_catalog.classifier_labels(conn)
        records = [detections_catalog.current_classifier(conn, name) for name in names]
    missing = [name for name, record in zip(names, records) if record is None]
    if missing:
        raise ValueError(f"no classifier for {', '.join(map(repr, missing))} in {workspace.root}; "
                         "run `ceta2vec classify --label NAME` first")
    out = []
    for record in records:
        path = workspace.root / record["path"]
        if not path.is_file():
            raise ValueError(f"{path}: the fitted classifier {record['classifier_id']} is missing; run "
                             f"`ceta2vec classify --label {record['label']}` again to retrain it")
        spec = FeatureSpec("model" if record["model_id"] else record["features"], record["granularity"],
                           record["model_id"], record["layer"])
        out.append((Prepared(record, clf.load(path), False), WindowPlan(spec, record["window_s"], record["hop_s"])))
    return out
