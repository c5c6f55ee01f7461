"""What a unit responds to: an input optimised to make it fire (activation maximisation, as in
Olah et al., "Feature Visualization", Distill 2017), kept audio rather than adversarial noise.

The input is parameterised as a log-magnitude spectrogram with a fixed random phase, turned into
sound by the inverse STFT (torch.istft): the optimiser can only shape energy over time and frequency,
so what it finds can be listened to. The windows are short (about 16 ms) so clicks stay clicks,
and a total-variation penalty on the log-magnitude keeps the spectrogram smooth. A band-limited
waveform parameterisation ('waveform') is the alternative, for units that depend on fine phase.

Every unit's random starts run side by side in one batch, seeded; the best start per unit is kept.
The objective is the unit's mean activation over all frames of the clip (network.activations), so
the whole clip is what the unit likes, not one frame of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from tasks.report.network import Unit, activations
from tasks.report.saliency import Stft

SECONDS = 0.6
STARTS = 3
STEPS = 150
LEARNING_RATE = 0.08
TV_WEIGHT = 0.02  # smoothness of the log-magnitude, per unit of activation
MAX_ROWS = 48  # rows (units x starts) per optimised batch


@dataclass
class Maximised:
    unit: Unit
    audio: np.ndarray  # float32 samples at the network's rate, peak 0.9
    activation: float  # the unit's mean activation over the clip's frames
    steps: int  # optimiser steps it got within the budget
    spectrogram: np.ndarray  # (F, T) log-magnitude of the best start


def maximiser_stft(sample_rate: int) -> Stft:
    n_fft = max(64, 2 ** int(round(np.log2(0.016 * sample_rate))))
    return Stft(n_fft, n_fft // 4, sample_rate)


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x.diff(dim=-1).abs().mean((-2, -1)) + x.diff(dim=-2).abs().mean((-2, -1)))


def _spectrogram_rows(count: int, n: int, stft: Stft, generator: torch.Generator, device):
    frames = n // stft.hop + 1
    bins = stft.n_fft // 2 + 1
    log_mag = (0.5 * torch.randn(count, bins, frames, generator=generator) - 1.0).to(device).requires_grad_(True)
    phase = torch.polar(torch.ones(count, bins, frames),
                        2 * np.pi * torch.rand(count, bins, frames, generator=generator)).to(device)
    keep = torch.ones(bins, 1, device=device)
    keep[0] = 0  # no DC: the network's normalisation removes it anyway

    def audio() -> torch.Tensor:
        return stft.inverse(torch.exp(log_mag) * keep * phase, n)

    return log_mag, audio, lambda: _total_variation(log_mag)


def _waveform_rows(count: int, n: int, sample_rate: int, generator: torch.Generator, device):
    theta = (0.1 * torch.randn(count, n, generator=generator)).to(device).requires_grad_(True)
    freqs = torch.fft.rfftfreq(n, 1 / sample_rate).to(device)
    band = ((freqs > 20) & (freqs < 0.45 * sample_rate)).float()  # band-limited: no DC, nothing near Nyquist

    def audio() -> torch.Tensor:
        return torch.fft.irfft(torch.fft.rfft(theta) * band, n)

    return theta, audio, lambda: audio().diff(dim=-1).pow(2).mean(-1) / audio().pow(2).mean(-1).clamp_min(1e-9)


def maximise(model, units: list[Unit], sample_rate: int, seconds: float = SECONDS, starts: int = STARTS,
             steps: int = STEPS, budget_s: float | None = None, seed: int = 0,
             parameterisation: str = "spectrogram", tv_weight: float = TV_WEIGHT) -> list[Maximised]:
    """The input that maximises each unit; at most `budget_s` seconds in all (split evenly over batches)."""
    if parameterisation not in ("spectrogram", "waveform"):
        raise ValueError(f"unknown parameterisation {parameterisation!r} (spectrogram, waveform)")
    if not units:
        return []
    device = next(model.parameters()).device
    n = int(round(seconds * sample_rate))
    stft = maximiser_stft(sample_rate)
    rows = [(k, u) for k, u in enumerate(units) for _ in range(starts)]
    per_batch = max(1, MAX_ROWS // starts) * starts
    batches = [rows[i:i + per_batch] for i in range(0, len(rows), per_batch)]
    allotment = None if budget_s is None else budget_s / len(batches)
    generator = torch.Generator().manual_seed(seed)
    best: dict[int, Maximised] = {}
    for b, batch in enumerate(batches):
        torch.manual_seed(seed + b)
        batch_units = [u for _, u in batch]
        if parameterisation == "spectrogram":
            param, audio, penalty = _spectrogram_rows(len(batch), n, stft, generator, device)
        else:
            param, audio, penalty = _waveform_rows(len(batch), n, sample_rate, generator, device)
        optimiser = torch.optim.Adam([param], lr=LEARNING_RATE)
        started, done = time.perf_counter(), 0
        for _ in range(steps):
            if done and allotment is not None and time.perf_counter() - started > allotment:
                break
            optimiser.zero_grad(set_to_none=True)
            score = activations(model, audio(), batch_units).mean(1)
            loss = -(score - tv_weight * penalty()).sum()
            loss.backward()
            optimiser.step()
            done += 1
        with torch.no_grad():
            final = audio()
            score = activations(model, final, batch_units).mean(1).cpu().numpy()
        for i, (key, unit) in enumerate(batch):
            if key in best and best[key].activation >= score[i]:
                continue
            wave = final[i].detach().cpu().numpy().astype(np.float64)
            wave = (0.9 * wave / max(1e-9, np.abs(wave).max())).astype(np.float32)
            spec = (param[i] if parameterisation == "spectrogram"
                    else torch.log(stft.forward(final[i]).abs() + 1e-6)).detach().cpu().numpy()
            best[key] = Maximised(unit, wave, float(score[i]), done, spec)
    return [best[k] for k in range(len(units))]


@torch.no_grad()
def activation_at(model, unit: Unit, audio: np.ndarray, frame: int | None = None) -> float:
    """The unit's activation on real audio: at one frame, or the mean over every frame."""
    device = next(model.parameters()).device
    x = torch.as_tensor(np.array(audio, np.float32)[None], device=device)
    a = activations(model, x, [unit])[0]
    return float(a.mean() if frame is None else a[min(frame, len(a) - 1)])
