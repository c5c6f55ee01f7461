"""Attention: every layer's and head's attention map over one segment, and which heads look at the
audio rather than only at position.

A head is *positional* when its attention depends on the offset j - i alone: it is then explained by
its own mean diagonal profile g(j - i), and the share of its variation that profile explains
(offset R²) is high. A *content* head attends to frames for what they hold, so the same offset gets
different weights in different places. A *diffuse* head spreads its attention almost evenly
(normalised entropy >= DIFFUSE_ENTROPY), which says nothing either way. From-scratch runs that fail
often end with only positional and diffuse heads: the transformer then ignores the audio.
"""

from __future__ import annotations

import numpy as np
import torch

from tasks.report.network import normalise_batch

POSITIONAL_R2 = 0.5  # the offset explains more of the attention's variation than anything else does
DIFFUSE_ENTROPY = 0.95


@torch.no_grad()
def attention_maps(model, audio: np.ndarray) -> np.ndarray:
    """(layers, heads, T, T) attention weights of one clip (rows: query frames)."""
    device = next(model.parameters()).device
    x = normalise_batch(torch.as_tensor(np.array(audio, np.float32)[None], device=device))
    out = model.wav2vec2(x, output_attentions=True)
    if not out.attentions:
        raise RuntimeError("the model returned no attention weights (load it with eager attention)")
    return torch.stack([a[0] for a in out.attentions]).float().cpu().numpy()


def offset_profile(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean attention at each offset d = j - i (d = -(T-1)..T-1) and the map it predicts."""
    t = a.shape[0]
    offsets = np.arange(t)[None, :] - np.arange(t)[:, None]
    sums = np.bincount((offsets + t - 1).ravel(), weights=a.ravel(), minlength=2 * t - 1)
    counts = np.bincount((offsets + t - 1).ravel(), minlength=2 * t - 1)
    profile = sums / np.maximum(counts, 1)
    return profile, profile[offsets + t - 1]


def head_summary(maps: np.ndarray) -> list[dict]:
    """One row per layer and head: offset R², normalised entropy, typical offset and the class."""
    rows = []
    layers, heads, t, _ = maps.shape
    for layer in range(layers):
        for head in range(heads):
            a = maps[layer, head].astype(np.float64)
            profile, predicted = offset_profile(a)
            total = ((a - a.mean()) ** 2).sum()
            r2 = 1 - ((a - predicted) ** 2).sum() / total if total > 1e-12 else 1.0
            p = np.clip(a, 1e-12, None)
            entropy = float(np.mean(-(p * np.log(p)).sum(1)) / np.log(t)) if t > 1 else 1.0
            peak = int(np.argmax(profile)) - (t - 1)
            kind = ("diffuse" if entropy >= DIFFUSE_ENTROPY else "positional" if r2 >= POSITIONAL_R2 else "content")
            rows.append({"layer": layer + 1, "head": head, "class": kind, "offset R²": round(float(r2), 3),
                         "entropy (1 = uniform)": round(entropy, 3), "favourite offset (frames)": peak})
    return rows


def class_counts(summary: list[dict]) -> dict[str, int]:
    return {kind: sum(r["class"] == kind for r in summary) for kind in ("positional", "content", "diffuse")}
