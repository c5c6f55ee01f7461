"""How the feature encoder's first convolution starts: random (the paper) or a mel-spaced band-pass bank.

A randomly initialised raw-waveform filterbank is ill-conditioned: its channels overlap in
frequency at random and leave bands uncovered (Haider & Lostanlen, arXiv 2309.05855), and the
network spends its first steps relearning a filterbank. `mel` starts every channel of the first
convolution as a windowed-sinc band-pass filter (SincNet's form; animal2vec initialises its sinc
front end on mel-spaced bands too), the bands mel-spaced from 0 Hz to the workspace's Nyquist and
overlapping by half, so the first layer covers the spectrum as a mel spectrogram does. Only the
initial values change: the architecture, the parameters and the export are those of `random`.

With wav2vec 2.0's short first kernel (10 taps at the usual strides) a filter cannot be narrow:
its pass band is at least about sample_rate / kernel wide, so the low mel bands overlap heavily.
That is what the architecture allows; the filters still start ordered and covering.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

FrontendInit = Literal["random", "mel"]
FRONTEND_INITS: tuple[str, ...] = ("random", "mel")


def band_edges(channels: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, centre, high) in Hz of `channels` mel-spaced bands from 0 Hz to Nyquist, each
    spanning its neighbours' centres."""
    import librosa

    points = librosa.mel_frequencies(n_mels=channels + 2, fmin=0.0, fmax=sample_rate / 2)
    return points[:-2], points[1:-1], points[2:]


def sinc_bank(channels: int, kernel: int, sample_rate: int) -> np.ndarray:
    """(channels, kernel) windowed-sinc band-pass filters on mel-spaced bands, each of unit L2
    norm times sqrt(2): the norm Kaiming initialisation gives a kernel on average."""
    low, _, high = band_edges(channels, sample_rate)
    t = (np.arange(kernel) - (kernel - 1) / 2) / sample_rate
    window = np.hamming(kernel) if kernel > 1 else np.ones(1)

    def lowpass(cutoff: np.ndarray) -> np.ndarray:  # ideal low-pass of `cutoff` Hz, sampled
        return 2 * cutoff[:, None] / sample_rate * np.sinc(2 * cutoff[:, None] * t[None, :])

    bank = (lowpass(high) - lowpass(low)) * window[None, :]
    norms = np.linalg.norm(bank, axis=1, keepdims=True)
    return (bank / np.where(norms > 0, norms, 1.0) * np.sqrt(2.0)).astype(np.float32)


@torch.no_grad()
def initialise_frontend(model, init: str) -> None:
    """Set the first convolution of `model` (a Wav2Vec2ForPreTraining or Wav2Vec2Model) as `init` says."""
    if init not in FRONTEND_INITS:
        raise ValueError(f"unknown frontend_init {init!r} (choose from {', '.join(FRONTEND_INITS)})")
    if init == "random":
        return
    encoder = getattr(model, "wav2vec2", model).feature_extractor
    conv = encoder.conv_layers[0].conv
    channels, inputs, kernel = conv.weight.shape
    sample_rate = int(getattr(model.config, "sampling_rate", 16000))
    bank = torch.from_numpy(sinc_bank(channels, kernel, sample_rate)).to(conv.weight)
    conv.weight.copy_(bank[:, None, :].expand(channels, inputs, kernel))
    if conv.bias is not None:
        conv.bias.zero_()


def configured_init(config) -> str:
    """The `frontend_init` a Wav2Vec2Config (or its dict) records; configs from before it: random."""
    value = config.get("frontend_init") if isinstance(config, dict) else getattr(config, "frontend_init", None)
    return value or "random"
