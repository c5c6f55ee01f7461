"""`ceta2vec explain SEGMENT_ID`: the saliency and attention figures of one segment, PNG and SVG.

The unit explained is a k-means unit of `layer` (default: the middle transformer layer); by default
the one assigned to most of the segment's frames, at the frame where it fires most.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from schemas.names import file_name, file_stem
from tasks.catalog import recordings
from tasks.catalog.embeddings import resolve_model
from tasks.catalog.search import default_layer
from tasks.catalog.units import kmeans_centroids
from tasks.model.device import pick_device
from tasks.model.inputs import normalise
from tasks.report.attention import attention_maps, head_summary
from tasks.report.features_report import clip_around
from tasks.report.figures import save
from tasks.report.figures_features import attention_figure, head_class_figure, saliency_figure
from tasks.report.network import Unit, activations, load_network, random_twin
from tasks.report.saliency import gradient_saliency, occlusion_saliency, stft_for
from tasks.report.spectrograms import log_mel, mel_config, segment_audio
from tasks.workspace import Workspace, database

ATTENTION_MAX_S = 10.0


def explain_segment(ws: Workspace, segment_id: str, model_id: str | None = None, unit: int | None = None,
                    layer: int | None = None, output: str | Path | None = None, seed: int = 0) -> list[Path]:
    with database.reading(ws) as conn:
        model = resolve_model(conn, model_id)
        layer = default_layer(model.layers) if layer is None else layer
        if not 0 <= layer < model.layers:
            raise database.WorkspaceError(f"{model.model_id} has layers 0..{model.layers - 1}, not {layer}")
        known = recordings.has_segment(conn, segment_id)
        audio = segment_audio(conn, ws, [segment_id]).get(segment_id) if known else None
        if audio is None:
            raise database.WorkspaceError(f"no segment {segment_id!r} in {ws.root} (see `ceta2vec sql \"SELECT "
                                          "segment_id FROM segments LIMIT 5\"`)")
        centroids = kmeans_centroids(conn, ws, model, layer)
    if centroids is None:
        raise database.WorkspaceError(f"{model.model_id} has no k-means units at layer {layer}: choose --layer "
                                      "among the embedded ones, or run `ceta2vec embed --units-k K`")
    if unit is not None and not 0 <= unit < len(centroids):
        raise database.WorkspaceError(f"layer {layer} has k-means units 0..{len(centroids) - 1}, not {unit}")
    out = (Path(output).expanduser().resolve() if output else
           ws.reports_dir / file_name(model.model_id, fallback="model") / "explain" / file_stem(segment_id))
    mel = mel_config(model.sample_rate, model.hop, model.receptive_field)
    network = load_network(ws.root / model.export_dir, pick_device("auto"))
    everyone = [Unit("kmeans", u, layer, centroid=tuple(float(v) for v in c)) for u, c in enumerate(centroids)]
    x = torch.as_tensor(np.array(audio, np.float32)[None], device=next(network.parameters()).device)
    with torch.no_grad():
        scores = activations(network, x.expand(len(everyone), -1), everyone).cpu().numpy()  # (units, frames)
    assigned = scores.argmax(0)
    if unit is None:
        unit = int(np.bincount(assigned, minlength=len(centroids)).argmax())
    frame = int(scores[unit].argmax())
    clip, at = clip_around(audio, frame, mel)
    stft = stft_for(model.sample_rate)
    target = everyone[unit]
    occlusion = occlusion_saliency(network, clip, target, (at, at + 1), stft)
    gradient = gradient_saliency(network, clip, target, (at, at + 1), stft)
    written = save(saliency_figure(log_mel(normalise(clip), mel), mel, occlusion, gradient,
                                   f"{segment_id}: k-means unit {unit} of layer {layer} at frame {frame} "
                                   f"({frame * model.frame_seconds:.2f} s)", (at, at + 1)), out / "saliency")
    shown = audio[: int(ATTENTION_MAX_S * model.sample_rate)]
    maps = attention_maps(network, shown)
    summary = head_summary(maps)
    written += save(attention_figure(maps, summary, f"Attention of {model.model_id} over {segment_id}"),
                    out / "attention")
    twin = head_summary(attention_maps(random_twin(network, seed), shown))
    written += save(head_class_figure(summary, twin, model.model_id), out / "attention-heads")
    return written
