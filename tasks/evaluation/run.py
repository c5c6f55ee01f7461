"""One evaluation: labelled segments, their features (model layers and baselines), scorecards."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb
import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

from tasks.embedding.encode import embed_batch
from tasks.embedding.run import SegmentRef
from tasks.evaluation.baselines import logmel_stats, mfcc_stats
from tasks.evaluation.metrics import purity_pnmi, scorecard
from tasks.workspace import Workspace
from tasks.workspace.database import transaction


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


def segment_refs(conn: duckdb.DuckDBPyConnection, workspace: Workspace, segment_ids: list[str]) -> list[SegmentRef]:
    rows = conn.execute(
        """SELECT s.segment_id, s.parquet_path, p.file_row_number, round(s.valid_s * s.sample_rate)::BIGINT
           FROM segments s JOIN read_parquet(?, file_row_number = true) p USING (segment_id)
           WHERE s.segment_id IN (SELECT unnest(?))""", [workspace.segments_glob, segment_ids]).fetchall()
    by_id = {sid: SegmentRef(sid, workspace.segment_file(path), int(row), int(valid)) for sid, path, row, valid in rows}
    return [by_id[s] for s in segment_ids]


def model_vectors(conn: duckdb.DuckDBPyConnection, model_id: str, layer: int, segment_ids: list[str],
                  pooling: str = "mean") -> np.ndarray:
    table = conn.execute("SELECT embedding_table FROM embedding_models WHERE model_id = ?", [model_id]).fetchone()[0]
    rows = dict(conn.execute(
        f"SELECT segment_id, vector FROM {table} WHERE layer = ? AND pooling = ? AND segment_id IN (SELECT unnest(?))",
        [layer, pooling, segment_ids]).fetchall())
    missing = [s for s in segment_ids if s not in rows]
    if missing:
        raise ValueError(f"{len(missing)} labelled segments have no layer-{layer} vector from {model_id}: "
                         "run `ceta2vec embed` first")
    return np.asarray([rows[s] for s in segment_ids], np.float32)


def baseline_features(audio: list[np.ndarray], sample_rate: int) -> dict[str, np.ndarray]:
    return {
        "log-mel stats": np.stack([logmel_stats(a, sample_rate) for a in audio]),
        "MFCC stats": np.stack([mfcc_stats(a, sample_rate) for a in audio]),
    }


def random_model_features(config: dict, audio: list[np.ndarray], frame_seconds: float, seed: int,
                          batch_size: int = 8) -> dict[int, np.ndarray]:
    """Mean-pooled vectors of every layer of the same architecture with random weights."""
    torch.manual_seed(seed)
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.from_dict(config)).eval()
    layers = list(range(model.config.num_hidden_layers + 1))
    pooled: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    for start in range(0, len(audio), batch_size):
        batch = audio[start : start + batch_size]
        for emb in embed_batch(model, [str(i) for i in range(len(batch))], batch, layers, frame_seconds,
                               torch.device("cpu")):
            for layer in layers:
                pooled[layer].append(emb.layers[layer].mean(0))
    return {layer: np.stack(v) for layer, v in pooled.items()}


def unit_scores(conn: duckdb.DuckDBPyConnection, model_id: str, labelled: LabelledSet) -> list[dict]:
    """Purity and PNMI of every unit inventory against frame labels (each frame takes its segment's label)."""
    label_of = dict(zip(labelled.segment_ids, labelled.labels))
    out = []
    inventories = conn.execute(
        "SELECT DISTINCT source, layer, code_group FROM frame_units WHERE model_id = ? ORDER BY ALL", [model_id]
    ).fetchall()
    for source, layer, group in inventories:
        units, labels = [], []
        for segment_id, frame_units in conn.execute(
            """SELECT segment_id, units FROM frame_units WHERE model_id = ? AND source = ? AND layer = ?
               AND code_group = ? AND segment_id IN (SELECT unnest(?))""",
            [model_id, source, layer, group, labelled.segment_ids],
        ).fetchall():
            units.extend(frame_units)
            labels.extend([label_of[segment_id]] * len(frame_units))
        if units:
            purity, pnmi = purity_pnmi(np.array(units), np.array(labels))
            name = f"codevector group {group}" if source == "codevector" else f"k-means units layer {layer}"
            out.append({"features": name, "layer": None if source == "codevector" else layer,
                        "metrics": {"unit_purity": (purity, np.nan, np.nan), "unit_pnmi": (pnmi, np.nan, np.nan)}})
    return out


def score_features(x: np.ndarray, labelled: LabelledSet, seed: int, n_boot: int) -> dict:
    return scorecard(x, labelled.labels, labelled.recordings, seed=seed, n_boot=n_boot)


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
    with transaction(conn):
        conn.execute("DELETE FROM evaluations WHERE label_column = ? AND model_id = ?", [label_column, model_id])
        conn.executemany("INSERT INTO evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
    return len(values)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def best_layer(rows: list[dict], metric: str = "knn5_macro_f1") -> dict | None:
    layers = [r for r in rows if r["kind"] == "model" and r["features"].startswith("layer ") and metric in r["metrics"]]
    return max(layers, key=lambda r: r["metrics"][metric][0], default=None)

