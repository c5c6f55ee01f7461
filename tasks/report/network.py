"""The network itself, for the figures that look inside it: a checkpoint loaded for analysis, its
random-weight twin, and the activation of a unit (a k-means unit, a quantizer code or one channel
of a layer) frame by frame, differentiable with respect to the audio.

Layers are numbered as everywhere else in ceta2vec: 0 is the feature encoder's output projected to
the transformer width, 1..L the transformer layers' outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining


def _for_analysis(model: Wav2Vec2ForPreTraining, device: torch.device) -> Wav2Vec2ForPreTraining:
    # eager attention: the fused kernels return no attention weights
    model.set_attn_implementation("eager")
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # gradients flow to the input only
    return model


def load_network(export_dir: Path, device: torch.device | str = "cpu") -> Wav2Vec2ForPreTraining:
    """A checkpoint's save_pretrained export, in eval mode, weights frozen."""
    export_dir = Path(export_dir)
    if not (export_dir / "config.json").exists():
        raise FileNotFoundError(f"{export_dir}: no checkpoint export (config.json missing)")
    return _for_analysis(Wav2Vec2ForPreTraining.from_pretrained(export_dir), torch.device(device))


def random_twin(model: Wav2Vec2ForPreTraining, seed: int) -> Wav2Vec2ForPreTraining:
    """The same architecture with random weights, seeded: what the figures show before any learning."""
    torch.manual_seed(seed)
    config = Wav2Vec2Config.from_dict(model.config.to_dict())
    return _for_analysis(Wav2Vec2ForPreTraining(config), next(model.parameters()).device)


def sample_rate_of(model: Wav2Vec2ForPreTraining, default: int = 16000) -> int:
    return int(getattr(model.config, "sampling_rate", None) or default)


def normalise_batch(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per row, as the network is fed (tasks.model.inputs.normalise), differentiably."""
    centred = x - x.mean(-1, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-7)


def conv_stack(model: Wav2Vec2ForPreTraining, x: torch.Tensor) -> list[torch.Tensor]:
    """Each feature-encoder layer's convolution output (B, C, T), before that layer's normalisation and
    activation, with every layer below it applied in full. x: (B, N) samples as the network sees them."""
    h = x[:, None, :]
    out = []
    for layer in model.wav2vec2.feature_extractor.conv_layers:
        pre = layer.conv(h)
        out.append(pre)
        h = layer(h)
    return out


def layer_frames(model: Wav2Vec2ForPreTraining, x: torch.Tensor, layers: set) -> dict:
    """Frame vectors (B, T, D) of the wanted layers, and under 'codes' the quantizer's logits (B, T, G, V),
    computed as `tasks.embedding.encode.embed_batch` computes what it stores. x: (B, N) normalised samples."""
    w = model.wav2vec2
    deeper = [k for k in layers if isinstance(k, int) and k > 0]
    states = None
    if deeper:
        run = w(x, output_hidden_states=True)
        normed, states = run.extract_features, run.hidden_states
    else:
        _, normed = w.feature_projection(w.feature_extractor(x).transpose(1, 2))
    out = {}
    if "codes" in layers:
        logits = model.quantizer.weight_proj(normed)
        out["codes"] = logits.view(logits.shape[0], logits.shape[1], model.config.num_codevector_groups, -1)
    if 0 in layers:
        out[0] = w.feature_projection(normed)[0]
    for k in deeper:
        out[k] = states[k]
    return out


@dataclass(frozen=True)
class Unit:
    """Something that fires frame by frame. kind: 'kmeans' (activation: minus the mean squared distance
    of the frame vector to the centroid, so 0 is the centroid itself), 'code' (the quantizer's logit of
    code `index` in group `group`), 'channel' (the value of channel `index` of `layer`)."""

    kind: str
    index: int
    layer: int = 0
    group: int = 0
    centroid: tuple[float, ...] | None = None
    name: str = ""

    @property
    def key(self):
        return "codes" if self.kind == "code" else self.layer

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return {"kmeans": f"k-means unit {self.index} of layer {self.layer}",
                "code": f"code {self.index} of group {self.group}",
                "channel": f"channel {self.index} of layer {self.layer}"}[self.kind]


def kmeans_units(centroids: np.ndarray, layer: int, wanted: list[int]) -> list[Unit]:
    return [Unit("kmeans", int(u), layer, centroid=tuple(float(v) for v in centroids[u])) for u in wanted]


def activations(model: Wav2Vec2ForPreTraining, x: torch.Tensor, units: list[Unit]) -> torch.Tensor:
    """(B, T) activation of units[b] on row b of x (raw samples, normalised here)."""
    if len(units) != x.shape[0]:
        raise ValueError(f"{len(units)} units for {x.shape[0]} rows of audio")
    frames = layer_frames(model, normalise_batch(x), {u.key for u in units})
    rows = []
    for b, u in enumerate(units):
        if u.kind == "kmeans":
            c = torch.as_tensor(u.centroid, dtype=frames[u.key].dtype, device=x.device)
            rows.append(-(frames[u.key][b] - c).pow(2).mean(-1))
        elif u.kind == "code":
            rows.append(frames["codes"][b, :, u.group, u.index])
        elif u.kind == "channel":
            rows.append(frames[u.key][b, :, u.index])
        else:
            raise ValueError(f"unknown unit kind {u.kind!r}")
    return torch.stack(rows)


def top_channels(model: Wav2Vec2ForPreTraining, audio: list[np.ndarray], layer: int, count: int) -> list[int]:
    """The channels of a layer with the highest mean activation over the given clips."""
    device = next(model.parameters()).device
    with torch.no_grad():
        means = [layer_frames(model, normalise_batch(torch.as_tensor(a[None], dtype=torch.float32, device=device)),
                              {layer})[layer][0].mean(0) for a in audio]
    return [int(c) for c in torch.stack(means).mean(0).argsort(descending=True)[:count]]
