"""Where a unit looks: which time-frequency regions of an exemplar make it fire.

Occlusion: the exemplar's short-time Fourier transform is cut into patches of mel bands x time;
silencing a patch (its STFT cells set to zero, the audio resynthesised with the inverse STFT) and
measuring how much the unit's activation at the exemplar frames drops gives that patch's saliency.
captum's FeatureAblation does the silencing, batched, with the patches as its feature groups (its
Occlusion slides a regular window, and mel bands are not regular in Hz).

Gradient x input: captum's Saliency gives the gradient g of the activation with respect to the
waveform x; its time-frequency decomposition Re(X conj(G)) (X, G: their STFTs with the same window)
sums to the same total as x . g, so it says where in the spectrogram the first-order attribution lies.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
import torch
from captum.attr import FeatureAblation, Saliency

from tasks.report.network import Unit, activations

BANDS_PER_PATCH = 4  # of 64 mel bands: 16 band rows
PATCH_S = 0.04  # 40 ms of time per patch
PER_EVAL = 32  # occluded copies per forward pass


@dataclass
class SaliencyMap:
    values: np.ndarray  # (band rows, time columns)
    band_edges_hz: np.ndarray  # (rows + 1,)
    time_edges_s: np.ndarray  # (columns + 1,)
    baseline: float  # the unit's activation on the intact exemplar
    method: str

    def positive_share(self, rows: slice | np.ndarray, columns: slice | np.ndarray) -> float:
        """Share of the positive saliency mass inside the given cells."""
        pos = np.clip(self.values, 0, None)
        total = pos.sum()
        return float(pos[rows][:, columns].sum() / total) if total > 0 else float("nan")


@dataclass(frozen=True)
class Stft:
    n_fft: int
    hop: int
    sample_rate: int
    n_mels: int = 64

    def window(self, device) -> torch.Tensor:
        return torch.hann_window(self.n_fft, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stft(x, self.n_fft, self.hop, window=self.window(x.device), center=True, pad_mode="constant",
                          return_complex=True)

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(spec, self.n_fft, self.hop, window=self.window(spec.device), center=True, length=length)

    def band_of_bin(self) -> np.ndarray:
        """The mel band each STFT bin belongs to (the band whose triangle weighs it most)."""
        weights = librosa.filters.mel(sr=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels)
        band = np.argmax(weights, axis=0)
        empty = weights.max(0) == 0
        band[empty & (np.arange(len(band)) < len(band) // 2)] = 0
        band[empty & (np.arange(len(band)) >= len(band) // 2)] = self.n_mels - 1
        return band

    def band_edges(self) -> np.ndarray:
        return librosa.mel_frequencies(n_mels=self.n_mels + 1, fmin=0, fmax=self.sample_rate / 2)


def stft_for(sample_rate: int, n_mels: int = 64) -> Stft:
    """About 32 ms windows (a power of two, at least 256 samples so the low mel bands hold a bin), hop a quarter."""
    n_fft = max(256, 2 ** int(round(np.log2(0.032 * sample_rate))))
    return Stft(n_fft, n_fft // 4, sample_rate, n_mels)


def _target(model, unit: Unit, frames: tuple[int, int]):
    a, b = frames

    def score(x: torch.Tensor) -> torch.Tensor:
        return activations(model, x, [unit] * x.shape[0])[:, a:b].mean(1)
    return score


def occlusion_saliency(model, audio: np.ndarray, unit: Unit, frames: tuple[int, int], stft: Stft,
                       bands_per_patch: int = BANDS_PER_PATCH, patch_s: float = PATCH_S,
                       per_eval: int = PER_EVAL) -> SaliencyMap:
    """Drop of the unit's mean activation over model frames [a, b) when each mel-band x time patch is silenced."""
    device = next(model.parameters()).device
    x = torch.as_tensor(np.array(audio, np.float32), device=device)
    spec = stft.forward(x)[None]  # (1, F, T)
    magnitude, phase = spec.abs(), torch.polar(torch.ones_like(spec.abs()), spec.angle())
    score = _target(model, unit, frames)

    def forward(mag: torch.Tensor) -> torch.Tensor:
        return score(stft.inverse(mag * phase, len(x)))

    rows = stft.band_of_bin() // bands_per_patch
    n_rows = int(rows.max()) + 1
    frame_t = np.arange(spec.shape[-1]) * stft.hop / stft.sample_rate
    columns = (frame_t // patch_s).astype(np.int64)
    n_columns = int(columns.max()) + 1
    mask = torch.as_tensor(rows[:, None] * n_columns + columns[None, :], device=device)[None]
    with torch.no_grad():
        baseline = float(forward(magnitude)[0])
        attribution = FeatureAblation(forward).attribute(magnitude, baselines=0.0, feature_mask=mask,
                                                         perturbations_per_eval=per_eval)
    values = np.zeros((n_rows, n_columns))
    flat_mask = mask[0].cpu().numpy()
    flat_attr = attribution[0].float().cpu().numpy()
    for cell in np.unique(flat_mask):  # every cell of a patch carries the patch's drop
        r, c = divmod(int(cell), n_columns)
        values[r, c] = flat_attr[flat_mask == cell][0]
    edges = stft.band_edges()[np.minimum(np.arange(n_rows + 1) * bands_per_patch, stft.n_mels)]
    return SaliencyMap(values, edges, np.arange(n_columns + 1) * patch_s, baseline, "occlusion")


def gradient_saliency(model, audio: np.ndarray, unit: Unit, frames: tuple[int, int], stft: Stft,
                      bands_per_patch: int = 1) -> SaliencyMap:
    """Gradient x input on the waveform, decomposed over mel bands x STFT frames."""
    device = next(model.parameters()).device
    x = torch.as_tensor(np.array(audio, np.float32)[None], device=device).requires_grad_(True)
    score = _target(model, unit, frames)
    gradient = Saliency(score).attribute(x, abs=False).detach()
    with torch.no_grad():
        baseline = float(score(x)[0])
        cells = (stft.forward(x[0]) * stft.forward(gradient[0]).conj()).real.cpu().numpy()  # (F, T)
    rows = stft.band_of_bin() // bands_per_patch
    n_rows = int(rows.max()) + 1
    values = np.zeros((n_rows, cells.shape[1]))
    np.add.at(values, rows, cells)
    edges = stft.band_edges()[np.minimum(np.arange(n_rows + 1) * bands_per_patch, stft.n_mels)]
    # STFT frame k is centred on sample k * hop
    times = (np.arange(cells.shape[1] + 1) - 0.5) * stft.hop / stft.sample_rate
    return SaliencyMap(values, edges, np.clip(times, 0, None), baseline, "gradient x input")
