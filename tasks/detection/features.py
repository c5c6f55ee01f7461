"""Features of windows: a model layer's vectors (segment vectors, or frame vectors averaged over the
window), or the log-mel / MFCC statistics `ceta2vec evaluate` uses as baselines, so every label
has a baseline detector beside the model's.

`--features` names them: `logmel`, `mfcc`, or `RUN@CHUNK:LAYER` (a layer of an embedded checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np

from schemas.model_ref import ModelRef
from tasks.catalog import embeddings
from tasks.catalog.detections import best_layer_of, frame_vectors, segment_samples
from tasks.detection.windows import Granularity, Windows
from tasks.evaluation.baselines import logmel_stats, mfcc_stats
from tasks.workspace import Workspace
from tasks.workspace.database import WorkspaceError

BASELINES = {"logmel": logmel_stats, "mfcc": mfcc_stats}
# The baselines need a few STFT frames: a shorter window is padded with zeros to this length.
MIN_AUDIO_S = 0.1


@dataclass(frozen=True)
class FeatureSpec:
    kind: str  # 'logmel', 'mfcc' or 'model'
    granularity: Granularity
    model_id: str | None = None
    layer: int | None = None

    @property
    def name(self) -> str:
        return f"{self.model_id}:{self.layer}" if self.kind == "model" else self.kind


def parse_features(text: str) -> tuple[str, int | None]:
    """`logmel`/`mfcc` -> (kind, None); `RUN@CHUNK:LAYER` -> (model id, layer); `RUN@CHUNK` -> (model id, None)."""
    value = text.strip()
    if value.lower() in BASELINES:
        return value.lower(), None
    model, sep, layer = value.rpartition(":") if ":" in value else (value, "", "")
    try:
        ref = ModelRef.parse(model)
        return str(ref), (int(layer) if sep else None)
    except ValueError as exc:
        raise ValueError(f"--features must be logmel, mfcc or RUN@CHUNK:LAYER (e.g. tiny@3:4), got {text!r} "
                         f"({exc})") from None


def resolve_features(conn: duckdb.DuckDBPyConnection, wanted: str | None, granularity: Granularity,
                     label_column: str | None) -> tuple[FeatureSpec, str]:
    """(spec, why): what `wanted` names, else the best evaluated layer of the latest embedded model,
    else log-mel when the workspace has no embeddings."""
    if wanted is not None:
        kind, layer = parse_features(wanted)
        if kind in BASELINES:
            return FeatureSpec(kind, granularity), "chosen"
        model = embeddings.resolve_model(conn, kind)
        why = "chosen"
    else:
        if not embeddings.embedded_models(conn):
            return FeatureSpec("logmel", granularity), "log-mel statistics (the workspace has no embeddings)"
        model, layer, why = embeddings.resolve_model(conn, None), None, "latest embedded model"
    if layer is None:
        layer = best_layer_of(conn, model.model_id, label_column)
        why = f"{why}, best evaluated layer" if layer is not None else f"{why}, middle layer (not evaluated)"
        if layer is None:
            layer = model.embedded_layers[len(model.embedded_layers) // 2]
    if layer not in model.embedded_layers:
        raise WorkspaceError(f"{model.model_id} has vectors of layers {', '.join(map(str, model.embedded_layers))}, "
                             f"not layer {layer}")
    return FeatureSpec("model", granularity, model.model_id, layer), why


def window_features(conn: duckdb.DuckDBPyConnection, workspace: Workspace, windows: Windows,
                    spec: FeatureSpec) -> np.ndarray:
    """(windows, dim) float32 features, in the order of `windows`."""
    if not len(windows):
        return np.zeros((0, 0), np.float32)
    ids = list(dict.fromkeys(windows.segment_id))
    if spec.kind in BASELINES:
        return _audio_features(conn, workspace, windows, ids, BASELINES[spec.kind])
    model = embeddings.resolve_model(conn, spec.model_id)
    if spec.granularity == "segments":
        vectors = embeddings.segment_vectors(conn, model, spec.layer, ids)
        row = {sid: i for i, sid in enumerate(ids)}
        return vectors[[row[s] for s in windows.segment_id]]
    frames = frame_vectors(conn, workspace, spec.model_id, spec.layer, ids)
    missing = [s for s in ids if s not in frames]
    if missing:
        raise WorkspaceError(f"{spec.model_id} layer {spec.layer}: {len(missing)} segments have no frame vectors "
                             f"(e.g. {missing[0]}); run `ceta2vec embed` with frame vectors, or classify with "
                             "--granularity segments")
    out = np.zeros((len(windows), model.dim), np.float32)
    for i, sid in enumerate(windows.segment_id):
        times, vectors = frames[sid]
        offset = windows.segment_start_s[i]
        inside = (times >= windows.start_s[i] - offset) & (times < windows.end_s[i] - offset)
        if not inside.any():  # a window shorter than a frame: the frame nearest its middle
            middle = (windows.start_s[i] + windows.end_s[i]) / 2 - offset
            inside = np.arange(len(times)) == int(np.argmin(np.abs(times - middle)))
        out[i] = vectors[inside].mean(0)
    return out


def _audio_features(conn, workspace, windows: Windows, ids: list[str], fn) -> np.ndarray:
    audio = segment_samples(conn, workspace, ids)
    rate = _sample_rate(conn)
    rows = []
    for i, sid in enumerate(windows.segment_id):
        a = int(round((windows.start_s[i] - windows.segment_start_s[i]) * rate))
        b = int(round((windows.end_s[i] - windows.segment_start_s[i]) * rate))
        clip = audio[sid][a:b]
        if len(clip) < MIN_AUDIO_S * rate:
            clip = np.pad(clip, (0, int(MIN_AUDIO_S * rate) - len(clip)))
        rows.append(fn(clip, rate))
    return np.stack(rows).astype(np.float32)


def _sample_rate(conn: duckdb.DuckDBPyConnection) -> int:
    from tasks.catalog.recordings import dataset_config

    return int(dataset_config(conn)["sample_rate"])
