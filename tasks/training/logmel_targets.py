"""Masked-prediction targets other than wav2vec 2.0's own quantized features.

`logmel-rq` (BEST-RQ, Chiu et al. 2022, on log-mel frames): each frame's target is the nearest of
V fixed random codes to a fixed random projection of its log-mel vector, the log-mel bands
standardised over the crop. The standardisation removes a recording's stationary noise colour,
so the targets describe what changes in time (a call), which the learned quantizer of a model
trained on a few minutes of ocean noise has no reason to. The masked frames are classified
HuBERT-style: cosine of the context vector with an embedding per code, over a temperature. The
embeddings are the model's own codevectors through its `project_q` (code k of every group), so
the model has exactly its usual parameters and its checkpoints and exports are unchanged.

Chosen with the model config field `pretrain_targets` ("contrastive", the default, or "logmel-rq"),
e.g. `--model-overrides pretrain_targets=logmel-rq`; stateless (projection and codes are drawn
from a fixed seed), so a resumed run sees the same targets.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

N_MELS = 40
PROJECTION_DIM = 16
TARGET_SEED = 1234


def alternative_targets(config) -> bool:
    kind = getattr(config, "pretrain_targets", "contrastive")
    if kind not in ("contrastive", "logmel-rq"):
        raise ValueError(f"unknown pretrain_targets {kind!r} (contrastive, logmel-rq)")
    return kind != "contrastive"


@lru_cache(maxsize=8)
def _fixed(sample_rate: int, n_fft: int, codes: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    import librosa

    mel = torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=N_MELS, fmax=sample_rate / 2))
    generator = torch.Generator().manual_seed(TARGET_SEED)
    projection = torch.randn(N_MELS, PROJECTION_DIM, generator=generator) * math.sqrt(2.0 / (N_MELS + PROJECTION_DIM))
    codebook = F.normalize(torch.randn(codes, PROJECTION_DIM, generator=generator), dim=-1)
    return mel.float().to(device), projection.to(device), codebook.to(device)


def frame_targets(audio: torch.Tensor, frames: int, hop: int, sample_rate: int, codes: int) -> torch.Tensor:
    """(rows, frames) code index of every frame of `audio` (rows, samples)."""
    n_fft = 2 ** math.ceil(math.log2(2 * hop))
    mel, projection, codebook = _fixed(sample_rate, n_fft, codes, str(audio.device))
    with torch.no_grad(), torch.autocast(audio.device.type, enabled=False):
        spec = torch.stft(audio.float(), n_fft, hop_length=hop, window=torch.hann_window(n_fft, device=audio.device),
                          center=True, return_complex=True).abs().pow(2)  # (rows, bins, stft frames)
        logmel = torch.log(torch.einsum("mb,rbt->rtm", mel, spec) + 1e-6)
        logmel = logmel[:, :frames]
        if logmel.shape[1] < frames:
            logmel = F.pad(logmel, (0, 0, 0, frames - logmel.shape[1]), mode="replicate")
        logmel = (logmel - logmel.mean(1, keepdim=True)) / logmel.std(1, keepdim=True).clamp(min=1e-3)
        projected = F.normalize(logmel @ projection, dim=-1)
        return (projected @ codebook.T).argmax(-1)


def masked_prediction_terms(model, out, inputs, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over the masked frames and the count classified right, in fp32."""
    config = model.config
    groups, codes = config.num_codevector_groups, config.num_codevectors_per_group
    hop = int(np.prod(config.conv_stride))
    targets = frame_targets(inputs.audio, out.projected_states.shape[1], hop, int(config.sampling_rate), codes)
    with torch.autocast(out.projected_states.device.type, enabled=False):
        vectors = model.quantizer.codevectors.float().view(groups, codes, -1).permute(1, 0, 2).reshape(codes, -1)
        projected = F.linear(vectors, model.project_q.weight.float(), model.project_q.bias.float())
        embeddings = F.normalize(projected, dim=-1)
        context = F.normalize(out.projected_states.float(), dim=-1, eps=1e-6)
        logits = context @ embeddings.T / temperature  # (rows, frames, codes)
        per_frame = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        loss = torch.where(inputs.masked, per_frame, 0.0).sum()
        correct = (inputs.masked & (logits.argmax(-1) == targets)).sum()
    return loss, correct
