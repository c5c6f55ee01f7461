"""What a trained wav2vec 2.0 says about a segment: per-layer vectors and its discrete units.

Layers are numbered as a scientist reads the network: 0 is the convolutional feature encoder's
output (projected to the transformer width, before any positional context), 1..L are the
transformer layers' outputs (L after the final layer norm).
Padding never enters a result: each segment is fed its valid samples only, batches are padded
on the right with an attention mask, and only a segment's own frames are pooled, so its vectors
do not depend on what it was batched with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2ForPreTraining

from tasks.model.inputs import normalise


@dataclass
class SegmentEmbedding:
    segment_id: str
    frames: int
    frame_seconds: float
    layers: dict[int, np.ndarray]  # layer -> (frames, D) float32
    codevectors: np.ndarray  # (frames, groups) int16: the quantizer's code per group


def load_model(checkpoint_export: Path, device: torch.device) -> Wav2Vec2ForPreTraining:
    model = Wav2Vec2ForPreTraining.from_pretrained(checkpoint_export)
    return model.to(device).eval()


@torch.no_grad()
def embed_batch(
    model: Wav2Vec2ForPreTraining, segment_ids: list[str], audio: list[np.ndarray], layers: list[int],
    frame_seconds: float, device: torch.device,
) -> list[SegmentEmbedding]:
    """Per-frame vectors of the requested layers and quantizer codes for a batch of segments."""
    lengths = [len(a) for a in audio]
    longest = max(lengths)
    x = np.zeros((len(audio), longest), np.float32)
    mask = np.zeros((len(audio), longest), np.int64)
    for i, samples in enumerate(audio):
        x[i, : len(samples)] = normalise(samples)
        mask[i, : len(samples)] = 1
    inputs = torch.from_numpy(x).to(device)
    attention = torch.from_numpy(mask).to(device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    with autocast:
        out = model.wav2vec2(inputs, attention_mask=attention, output_hidden_states=True)
        logits = model.quantizer.weight_proj(out.extract_features)
        projected, _ = model.wav2vec2.feature_projection(out.extract_features)
    groups = model.config.num_codevector_groups
    codes = logits.float().view(logits.shape[0], logits.shape[1], groups, -1).argmax(-1).cpu().numpy().astype(np.int16)
    hidden = [projected.float().cpu().numpy()] + [h.float().cpu().numpy() for h in out.hidden_states[1:]]
    frames = model._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist()
    results = []
    for i, segment_id in enumerate(segment_ids):
        n = int(frames[i])
        results.append(SegmentEmbedding(
            segment_id=segment_id, frames=n, frame_seconds=frame_seconds,
            layers={layer: np.ascontiguousarray(hidden[layer][i, :n]) for layer in layers},
            codevectors=np.ascontiguousarray(codes[i, :n]),
        ))
    return results


def pool(frames: np.ndarray, how: str) -> np.ndarray:
    """Segment vector from its frames: 'mean', 'std' or 'max' over time."""
    if how == "mean":
        return frames.mean(0)
    if how == "std":
        return frames.std(0)
    if how == "max":
        return frames.max(0)
    raise ValueError(f"unknown pooling {how!r} (mean, std, max)")
