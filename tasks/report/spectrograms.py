"""Log-mel spectrograms aligned with the model's frames, snippet thumbnails and short WAV clips.

Mel frame j is centred on the audio that model frame j sees: frame j covers samples
[j * hop, j * hop + receptive_field), so the spectrogram is computed on the audio after its first
receptive_field / 2 samples, with centred STFT frames every `hop` samples. A unit assigned to model
frame j is then drawn exactly over mel frame j.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import duckdb
import librosa
import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from tasks.catalog.recordings import segment_refs  # noqa: E402
from tasks.embedding.run import read_audio  # noqa: E402
from tasks.workspace import Workspace  # noqa: E402

N_MELS = 64
FLOOR_DB = -100.0
SPECTROGRAM_CMAP = "magma"  # perceptually uniform, readable in grey and with colour-vision deficiencies


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int
    hop: int  # samples per model frame
    receptive_field: int  # samples a model frame sees
    n_fft: int
    n_mels: int = N_MELS
    fmin: float = 0.0

    @property
    def fmax(self) -> float:
        return self.sample_rate / 2

    @property
    def frame_seconds(self) -> float:
        return self.hop / self.sample_rate

    @property
    def offset(self) -> int:
        return self.receptive_field // 2

    def centres_hz(self) -> np.ndarray:
        """Centre frequency of each mel band."""
        return librosa.mel_frequencies(n_mels=self.n_mels + 2, fmin=self.fmin, fmax=self.fmax)[1:-1]

    def frame_centre_sample(self, frame: int | np.ndarray) -> int | np.ndarray:
        return frame * self.hop + self.offset


def mel_config(sample_rate: int, hop: int, receptive_field: int, n_mels: int = N_MELS) -> MelConfig:
    """About 50 ms FFT windows (a power of two, at least 256 samples so low mel bands are not empty)."""
    n_fft = max(256, 2 ** int(round(math.log2(0.05 * sample_rate))))
    return MelConfig(sample_rate, hop, receptive_field, n_fft, n_mels)


@lru_cache(maxsize=8)
def _filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


def log_mel(audio: np.ndarray, mel: MelConfig) -> np.ndarray:
    """(n_mels, frames) float32 log-mel power in dB (re 1.0 full scale, floor -100 dB); column j is
    centred on model frame j. There is one column more than the model's frames, or a few."""
    y = np.asarray(audio, np.float32)[mel.offset:]
    if len(y) < 2:
        y = np.zeros(2, np.float32)
    power = np.abs(librosa.stft(y, n_fft=mel.n_fft, hop_length=mel.hop, center=True, pad_mode="constant")) ** 2
    bands = _filterbank(mel.sample_rate, mel.n_fft, mel.n_mels, mel.fmin, mel.fmax) @ power
    return (10 * np.log10(np.maximum(bands, 10 ** (FLOOR_DB / 10)))).astype(np.float32)


def frame_windows(spec: np.ndarray, frames: np.ndarray, half_width: int) -> np.ndarray:
    """(len(frames), n_mels, 2*half_width+1) windows centred on `frames`; NaN beyond the spectrogram."""
    padded = np.pad(spec, ((0, 0), (half_width, half_width)), constant_values=np.nan)
    view = np.lib.stride_tricks.sliding_window_view(padded, 2 * half_width + 1, axis=1)  # (n_mels, T, W)
    return np.ascontiguousarray(view[:, np.asarray(frames, np.int64), :].transpose(1, 0, 2))


def loudest_window(spec: np.ndarray, frames: int) -> tuple[int, int]:
    """[a, b) of the `frames` consecutive columns with the most power: where something is happening."""
    if spec.shape[1] <= frames:
        return 0, spec.shape[1]
    power = (10 ** (spec.astype(np.float64) / 10)).mean(0)
    sums = np.convolve(power, np.ones(frames), mode="valid")
    a = int(np.argmax(sums))
    return a, a + frames


def mel_ticks(mel: MelConfig, count: int = 5) -> tuple[np.ndarray, list[str]]:
    """Positions (band indices) and kHz labels for a spectrogram's frequency axis."""
    centres = mel.centres_hz()
    positions = np.unique(np.linspace(0, mel.n_mels - 1, count).round().astype(int))
    return positions, [f"{centres[p] / 1000:.1f}" if centres[-1] < 20000 else f"{centres[p] / 1000:.0f}"
                       for p in positions]


def display_range(images: list[np.ndarray], low: float = 2.0, high: float = 99.5) -> tuple[float, float]:
    """A shared colour scale (dB) for several spectrograms: robust percentiles, at least 20 dB wide."""
    values = np.concatenate([np.ravel(i)[np.isfinite(np.ravel(i))] for i in images] or [np.zeros(1)])
    values = values[values > FLOOR_DB + 1] if np.any(values > FLOOR_DB + 1) else values
    if values.size == 0:
        return FLOOR_DB, FLOOR_DB + 20
    vmin, vmax = np.percentile(values, [low, high])
    return float(min(vmin, vmax - 20)), float(vmax)


def segment_audio(conn: duckdb.DuckDBPyConnection, workspace: Workspace, ids: list[str]) -> dict[str, np.ndarray]:
    """The valid samples of each segment, from the Parquet dataset."""
    if not ids:
        return {}
    refs = segment_refs(conn, workspace, list(dict.fromkeys(ids)))
    return {r.segment_id: a for r, a in zip(refs, read_audio(refs))}


def save_thumbnail(path: Path, spec: np.ndarray, vmin: float | None = None, vmax: float | None = None,
                   max_width: int = 320) -> Path:
    """A small PNG of a spectrogram (low frequencies at the bottom), time averaged down to `max_width` pixels."""
    if spec.shape[1] > max_width:
        factor = math.ceil(spec.shape[1] / max_width)
        cut = spec[:, : spec.shape[1] // factor * factor]
        spec = cut.reshape(spec.shape[0], -1, factor).mean(2)
    if vmin is None or vmax is None:
        vmin, vmax = display_range([spec])
    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(path, spec, cmap=SPECTROGRAM_CMAP, vmin=vmin, vmax=vmax, origin="lower")
    return path


def write_clip(path: Path, samples: np.ndarray, sample_rate: int, fade_s: float = 0.01, peak: float = 0.9) -> Path:
    """A 16-bit WAV for listening: peak-normalised (hydrophone levels vary by tens of dB), with short
    fades so a clip cut mid-sound does not click."""
    x = np.asarray(samples, np.float64).copy()
    x = np.nan_to_num(x - x.mean() if len(x) else x)
    top = np.abs(x).max() if len(x) else 0.0
    if top > 0:
        x *= peak / top
    fade = min(len(x) // 2, int(fade_s * sample_rate))
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade)
        x[:fade] *= ramp
        x[-fade:] *= ramp[::-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), sample_rate, subtype="PCM_16")
    return path
