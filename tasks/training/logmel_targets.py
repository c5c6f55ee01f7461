"""Masked-prediction targets other than wav2vec 2.0's own quantized features.

`logmel-rq` (BEST-RQ, Chiu et al. 2022, on log-mel frames): each frame's target is the nearest of
V fixed random codes to a fixed random projection of its log-mel vector, the log-mel bands
standardised over the crop. The standardisation removes a recording's stationary noise colour,
so the targets describe what changes in time (a call), which the learned quantizer of a model
trained on a few minutes of ocean noise has no reason to. The masked frames are classified
HuBERT-style: cosine of the context vector with an embedding per code, over a temperature. The
embeddings are the model's own codevectors through its `project_q` (code k of every group), so
the model has exactly its usual parameters and its checkpoints and exports are unchanged.

`logmel-mse` (masked spectrogram reconstruction, as in MockingJay/TERA and MAE-style audio
models): each masked frame's context vector regresses the frame's crop-standardised log-mel
bands. A classification among 64 random codes gives the network a few bits per masked frame; a
regression gives it 40 numbers, which is what a budget of a few hundred steps is short of. The
bands are placed into the context vector's space (`proj_codevector_dim` >= 40) by a fixed random
orthonormal map, so the model's own `project_hid` is the regression head and, again, no parameter
is added. Loss: squared error per band, so predicting the crop's mean scores 1.0 (the chance
line). Accuracy, for the health verdict: the prediction is nearer (cosine) its own frame's bands
than every distractor frame's, chance 1/(K+1) as for the contrastive task.

Chosen with the model config field `pretrain_targets` (tasks/model/objectives.py), e.g.
`ceta2vec pretrain --targets logmel-mse`; stateless (projection, codes and the orthonormal map are
drawn from a fixed seed), so a resumed run sees the same targets.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from tasks.model.objectives import target_kind
from tasks.training.regression import masked_regression_terms

N_MELS = 40
PROJECTION_DIM = 16
TARGET_SEED = 1234


@lru_cache(maxsize=8)
def _mel_filters(sample_rate: int, n_fft: int, device: str) -> torch.Tensor:
    import librosa

    mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=N_MELS, fmax=sample_rate / 2)
    return torch.from_numpy(mel).float().to(device)


@lru_cache(maxsize=8)
def _fixed(codes: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """BEST-RQ's random projection and codebook (drawn in this order from TARGET_SEED)."""
    generator = torch.Generator().manual_seed(TARGET_SEED)
    projection = torch.randn(N_MELS, PROJECTION_DIM, generator=generator) * math.sqrt(2.0 / (N_MELS + PROJECTION_DIM))
    codebook = F.normalize(torch.randn(codes, PROJECTION_DIM, generator=generator), dim=-1)
    return projection.to(device), codebook.to(device)


@lru_cache(maxsize=8)
def _orthonormal(dim: int, device: str) -> torch.Tensor:
    """(N_MELS, dim) with orthonormal rows: squared distances between band vectors are kept."""
    if dim < N_MELS:
        raise ValueError(f"logmel-mse needs proj_codevector_dim >= {N_MELS} (it is {dim})")
    generator = torch.Generator().manual_seed(TARGET_SEED + 1)
    q, _ = torch.linalg.qr(torch.randn(dim, N_MELS, generator=generator))
    return q.T.contiguous().to(device)


def standardised_logmel(audio: torch.Tensor, frames: int, hop: int, sample_rate: int) -> torch.Tensor:
    """(rows, frames, N_MELS): log-mel bands of `audio` (rows, samples), each band standardised over the crop."""
    n_fft = 2 ** math.ceil(math.log2(2 * hop))
    mel = _mel_filters(sample_rate, n_fft, str(audio.device))
    with torch.no_grad(), torch.autocast(audio.device.type, enabled=False):
        spec = torch.stft(audio.float(), n_fft, hop_length=hop, window=torch.hann_window(n_fft, device=audio.device),
                          center=True, return_complex=True).abs().pow(2)  # (rows, bins, stft frames)
        logmel = torch.log(torch.einsum("mb,rbt->rtm", mel, spec) + 1e-6)
        logmel = logmel[:, :frames]
        if logmel.shape[1] < frames:
            logmel = F.pad(logmel, (0, 0, 0, frames - logmel.shape[1]), mode="replicate")
        return (logmel - logmel.mean(1, keepdim=True)) / logmel.std(1, keepdim=True).clamp(min=1e-3)


def frame_targets(audio: torch.Tensor, frames: int, hop: int, sample_rate: int, codes: int) -> torch.Tensor:
    """(rows, frames) code index of every frame of `audio` (rows, samples)."""
    projection, codebook = _fixed(codes, str(audio.device))
    logmel = standardised_logmel(audio, frames, hop, sample_rate)
    with torch.no_grad(), torch.autocast(audio.device.type, enabled=False):
        projected = F.normalize(logmel @ projection, dim=-1)
        return (projected @ codebook.T).argmax(-1)


def masked_prediction_terms(model, out, inputs, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss over the masked frames and the count predicted right, in fp32."""
    if target_kind(model.config) == "logmel-mse":
        return regression_terms(model, out, inputs)
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


def regression_terms(model, out, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """`logmel-mse`: summed squared error per band over the masked frames, and how many masked
    frames' predictions are nearer their own bands than every distractor frame's."""
    config = model.config
    hop = int(np.prod(config.conv_stride))
    predicted = out.projected_states
    logmel = standardised_logmel(inputs.audio, predicted.shape[1], hop, int(config.sampling_rate))
    with torch.autocast(predicted.device.type, enabled=False):
        target = logmel @ _orthonormal(predicted.shape[-1], str(predicted.device))  # (rows, frames, dim)
    return masked_regression_terms(predicted, target, inputs, per=N_MELS)
