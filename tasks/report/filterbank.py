"""The learned filterbank: what frequency each channel of each feature-encoder layer responds to.

A first-layer kernel of 10 taps says little by itself, so each channel is measured the way a
filterbank is measured on a bench: pure tones at the centres of `bins` equal analysis bins from 0 to
Nyquist drive the whole encoder up to that layer, and a channel's response to a tone is the RMS of
its convolution output's change from its output on silence. The output is taken before the layer's
own normalisation: that layer norm rescales all channels of a frame together, which would hide how
strongly each one responds. Tones are batched; their amplitude is sqrt(2), unit variance, which is
how the network is fed any audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tasks.report.network import conv_stack

BINS = 128
BATCH = 32


@dataclass
class Filterbank:
    freqs: np.ndarray  # (F,) Hz, analysis bin centres
    responses: list[np.ndarray]  # per conv layer: (channels, F) RMS response
    sample_rate: int

    @property
    def bin_hz(self) -> float:
        return self.sample_rate / 2 / len(self.freqs)

    def peaks(self, layer: int) -> np.ndarray:
        """Each channel's peak frequency (Hz)."""
        return self.freqs[np.argmax(self.responses[layer], axis=1)]

    def sorted_db(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """Responses in dB of each channel's own maximum, channels sorted by peak frequency; and the order."""
        r = self.responses[layer]
        order = np.lexsort((np.arange(len(r)), np.argmax(r, axis=1)))
        top = r.max(1, keepdims=True)
        db = 20 * np.log10(np.maximum(r, 1e-12) / np.maximum(top, 1e-12))
        return np.clip(db[order], -40, 0), order


def tone_frequencies(sample_rate: int, bins: int = BINS) -> np.ndarray:
    """Centres of `bins` equal bins over 0..Nyquist (neither DC nor Nyquist itself: both vanish when sampled)."""
    return (np.arange(bins) + 0.5) * (sample_rate / 2) / bins


def tone_length(model) -> int:
    """Long enough for the deepest layer to give 16 frames past its receptive field."""
    strides, kernels = model.config.conv_stride, model.config.conv_kernel
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field += (k - 1) * jump
        jump *= s
    return int(field + 16 * jump)


@torch.no_grad()
def frequency_responses(model, sample_rate: int, bins: int = BINS, batch: int = BATCH) -> Filterbank:
    device = next(model.parameters()).device
    freqs = tone_frequencies(sample_rate, bins)
    n = tone_length(model)
    t = torch.arange(n, dtype=torch.float64, device=device) / sample_rate
    silence = conv_stack(model, torch.zeros(1, n, device=device))
    chunks: list[list[torch.Tensor]] = []
    for start in range(0, bins, batch):
        f = torch.as_tensor(freqs[start:start + batch], device=device)[:, None]
        tones = (np.sqrt(2) * torch.sin(2 * np.pi * f * t)).float()
        outs = conv_stack(model, tones)
        # RMS over every frame: the convolutions are unpadded, so no frame sees an edge
        chunks.append([(o - s).pow(2).mean(-1).sqrt().T for o, s in zip(outs, silence)])
    responses = [torch.cat([c[i] for c in chunks], 1).float().cpu().numpy() for i in range(len(chunks[0]))]
    return Filterbank(freqs, responses, sample_rate)


def audio_spectrum(audio: list[np.ndarray], sample_rate: int, freqs: np.ndarray) -> np.ndarray:
    """Mean power spectral density (Welch) of the clips, in dB, at `freqs`."""
    from scipy.signal import welch

    nper = int(min(2048, max(256, 2 ** int(np.log2(max(256, sample_rate // 16))))))
    total, weight = None, 0
    for a in audio:
        if len(a) < nper:
            continue
        a = np.asarray(a, np.float64)
        f, p = welch((a - a.mean()) / (a.std() + 1e-9), fs=sample_rate, nperseg=nper)
        total = p * len(a) if total is None else total + p * len(a)
        weight += len(a)
    if total is None:
        return np.full(len(freqs), np.nan)
    return 10 * np.log10(np.interp(freqs, f, total / weight) + 1e-20)
