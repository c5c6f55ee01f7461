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
from tasks.evaluation.baselines import logmel_frames, mfcc_frames
from tasks.evaluation.metrics import POOLINGS, pool_frames, purity_pnmi, scorecard
from tasks.model.frontend_init import configured_init, initialise_frontend


def model_vectors(conn: duckdb.DuckDBPyConnection, model_id: str, layer: int, segment_ids: list[str],
                  pooling: str = "mean") -> np.ndarray:
    """The labelled segments' vectors of one layer, in their order."""
    return embeddings.segment_vectors(conn, embeddings.resolve_model(conn, model_id), layer, segment_ids, pooling)


# Pooling options of a feature set: name -> (segments, D) features, rows in the labelled order.
PoolingOptions = dict[str, np.ndarray]


def model_pooling_options(conn: duckdb.DuckDBPyConnection, model_id: str, layer: int,
                          segment_ids: list[str]) -> PoolingOptions:
    """POOLINGS of one layer, as far as the embeddings hold them (mean always; std and max when
    `ceta2vec embed --poolings` stored them)."""
    model = embeddings.resolve_model(conn, model_id)
    stored = set(embeddings.poolings_embedded(conn, model, layer))
    parts = {how: embeddings.segment_vectors(conn, model, layer, segment_ids, how)
             for how in ("mean", "std", "max") if how in stored}
    return {name: np.hstack([parts[how] for how in name.split("+")]) for name in POOLINGS
            if all(how in parts for how in name.split("+"))}


def all_layers_options(per_layer: list[PoolingOptions]) -> PoolingOptions:
    """Every layer side by side, per pooling all layers have (the probe standardises each column)."""
    shared = [name for name in per_layer[0] if all(name in options for options in per_layer)]
    return {name: np.hstack([options[name] for options in per_layer]) for name in shared}


def baseline_pooling_options(audio: list[np.ndarray], sample_rate: int) -> dict[str, PoolingOptions]:
    """Log-mel and MFCC frames pooled every way the model layers are; "mean+std" is the classic
    statistics vector."""
    frames = {"log-mel stats": [logmel_frames(a, sample_rate) for a in audio],
              "MFCC stats": [mfcc_frames(a, sample_rate) for a in audio]}
    return {name: {pooling: np.stack([pool_frames(f, pooling) for f in each]) for pooling in POOLINGS}
            for name, each in frames.items()}


def baseline_features(audio: list[np.ndarray], sample_rate: int) -> dict[str, np.ndarray]:
    """Log-mel and MFCC statistics: mean and standard deviation over time of each band or coefficient."""
    return {name: options["mean+std"] for name, options in baseline_pooling_options(audio, sample_rate).items()}


def random_twin(config: dict, seed: int) -> Wav2Vec2ForPreTraining:
    """The network a run started from, with seeded random weights: its first layer initialised as
    the run's `frontend_init` says, so a twin of a mel-initialised run starts as that run did."""
    torch.manual_seed(seed)
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.from_dict(config))
    initialise_frontend(model, configured_init(config))
    return model.eval()


def random_model_options(config: dict, audio: list[np.ndarray], frame_seconds: float, seed: int,
                         batch_size: int = 8) -> dict[int, PoolingOptions]:
    """Every layer of the same architecture with random weights, pooled every way (POOLINGS)."""
    model = random_twin(config, seed)
    layers = list(range(model.config.num_hidden_layers + 1))
    pooled: dict[int, dict[str, list[np.ndarray]]] = {layer: {name: [] for name in POOLINGS} for layer in layers}
    for start in range(0, len(audio), batch_size):
        batch = audio[start : start + batch_size]
        for emb in embed_batch(model, [str(i) for i in range(len(batch))], batch, layers, frame_seconds,
                               torch.device("cpu")):
            for layer in layers:
                for name in POOLINGS:
                    pooled[layer][name].append(pool_frames(emb.layers[layer], name))
    return {layer: {name: np.stack(v) for name, v in options.items()} for layer, options in pooled.items()}


def random_model_features(config: dict, audio: list[np.ndarray], frame_seconds: float, seed: int,
                          batch_size: int = 8) -> dict[int, np.ndarray]:
    """Mean-pooled vectors of every layer of the same architecture with random weights."""
    return {layer: options["mean"]
            for layer, options in random_model_options(config, audio, frame_seconds, seed, batch_size).items()}


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


def score_features(x: np.ndarray, labelled: LabelledSet, seed: int, n_boot: int,
                   poolings: PoolingOptions | None = None) -> dict:
    """The scorecard of one feature set (`x`: its mean-pooled or classic vector); with `poolings`,
    also the probe whose pooling is chosen inside the training folds."""
    return scorecard(x, labelled.labels, labelled.recordings, seed=seed, n_boot=n_boot, poolings=poolings)


def best_layer(rows: list[dict], metric: str = "knn5_macro_f1") -> dict | None:
    layers = [r for r in rows if r["kind"] == "model" and r["features"].startswith("layer ") and metric in r["metrics"]]
    return max(layers, key=lambda r: r["metrics"][metric][0], default=None)
