"""One evaluation: labelled segments, their features (model layers and baselines), scorecards."""

from __future__ import annotations

import duckdb
import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

from tasks.catalog import embeddings
from tasks.catalog import units as units_catalog
from tasks.catalog.evaluations import LabelledSet
from tasks.embedding.encode import embed_batch
from tasks.evaluation.baselines import logmel_stats, mfcc_stats
from tasks.evaluation.metrics import purity_pnmi, scorecard


def model_vectors(conn: duckdb.DuckDBPyConnection, model_id: str, layer: int, segment_ids: list[str],
                  pooling: str = "mean") -> np.ndarray:
    """The labelled segments' vectors of one layer, in their order."""
    return embeddings.segment_vectors(conn, embeddings.resolve_model(conn, model_id), layer, segment_ids, pooling)


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
    for source, layer, group in units_catalog.inventories(conn, model_id):
        units, labels = [], []
        for segment_id, frame_units in units_catalog.inventory_units(conn, model_id, source, layer, group,
                                                                     labelled.segment_ids):
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


def best_layer(rows: list[dict], metric: str = "knn5_macro_f1") -> dict | None:
    layers = [r for r in rows if r["kind"] == "model" and r["features"].startswith("layer ") and metric in r["metrics"]]
    return max(layers, key=lambda r: r["metrics"][metric][0], default=None)
