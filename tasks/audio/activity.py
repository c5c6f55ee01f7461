"""How much happens in a segment: band-wise level above its recording's noise floor, in dB.

Most hydrophone audio is background, and a crop of plain noise teaches a self-supervised model
little. Selecting high-activity windows improves self-supervised bird-sound representations
(Moummad et al., arXiv 2312.15824, who rank windows by a detector's activity). Without a detector,
the activity of a segment here is the level of its loudest band above that band's noise floor in
the same recording:

- each segment's audio becomes a log-mel spectrogram (ACTIVITY_BANDS bands, librosa);
- a recording's noise floor per band is the FLOOR_PERCENTILE-th percentile of that band's level over
  all the recording's frames (most frames are background);
- a frame's activity is its largest band excess over the floor (a narrow-band call stands out in
  its band even at a low broadband SNR); a segment's is the ACTIVITY_PERCENTILE-th percentile over
  its frames (a short call counts, a single click of noise does not).

Relative to the recording's own floor, so a recorder's gain or a site's noise level does not make
every segment of it "active".
"""

from __future__ import annotations

import numpy as np

ACTIVITY_BANDS = 32
FLOOR_PERCENTILE = 20.0
ACTIVITY_PERCENTILE = 90.0
FRAME_SECONDS = 0.032  # analysis hop; windows twice that


def band_levels(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """(bands, frames) log-mel levels in dB of one segment's samples (float32 or float64)."""
    import librosa

    hop = max(16, int(round(FRAME_SECONDS * sample_rate)))
    n_fft = int(2 ** np.ceil(np.log2(2 * hop)))
    x = np.nan_to_num(np.asarray(samples, dtype=np.float32))
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    mel = librosa.feature.melspectrogram(y=x, sr=sample_rate, n_fft=n_fft, hop_length=hop, n_mels=ACTIVITY_BANDS,
                                         fmax=sample_rate / 2, center=False)
    return 10 * np.log10(mel + 1e-12)


def noise_floor(levels: list[np.ndarray]) -> np.ndarray:
    """(bands,) the recording's floor: a low percentile of every band over all its segments' frames."""
    return np.percentile(np.concatenate(levels, axis=1), FLOOR_PERCENTILE, axis=1)


def activity_db(levels: np.ndarray, floor: np.ndarray) -> float:
    """A segment's activity: its frames' largest band excess over the floor, at a high percentile."""
    excess = (levels - floor[:, None]).max(axis=0)
    return float(max(0.0, np.percentile(excess, ACTIVITY_PERCENTILE)))


def recording_activity(segments: list[np.ndarray], sample_rate: int) -> list[float]:
    """Activity in dB of each segment of one recording, against the recording's own floor."""
    if not segments:
        return []
    levels = [band_levels(s, sample_rate) for s in segments]
    floor = noise_floor(levels)
    return [activity_db(level, floor) for level in levels]


def crop_weights(activity: np.ndarray, temperature_db: float, floor_share: float) -> np.ndarray:
    """Probabilities of drawing each item: `floor_share` spread uniformly (plain background is
    still seen), the rest as a softmax of activity / temperature. Unknown activity counts as 0 dB."""
    a = np.nan_to_num(np.asarray(activity, dtype=np.float64), nan=0.0)
    if len(a) == 0:
        return a
    tempered = np.exp((a - a.max()) / temperature_db)
    return floor_share / len(a) + (1.0 - floor_share) * tempered / tempered.sum()


def crop_start(samples: np.ndarray, length: int, sample_rate: int, rng: np.random.Generator,
               temperature_db: float, floor_share: float) -> int:
    """A crop's start within a segment, drawn towards its loudest stretch: candidate starts every
    FRAME_SECONDS, each scored by the largest frame level (dB) inside its window, weighted as
    crop_weights does, then jittered within the step."""
    valid = len(samples)
    if valid <= length:
        return 0
    hop = max(1, int(round(FRAME_SECONDS * sample_rate)))
    frames = valid // hop
    x = np.nan_to_num(np.asarray(samples[: frames * hop], dtype=np.float64)).reshape(frames, hop)
    level = 10 * np.log10((x * x).mean(1) + 1e-12)
    span = max(1, length // hop)
    starts = np.arange(0, valid - length + 1, hop)
    # the loudest frame inside each window [start, start + span) frames
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(level, (0, span), constant_values=-np.inf), span)
    scores = windows[starts // hop].max(1)
    scores = scores - np.median(level)
    pick = int(rng.choice(len(starts), p=crop_weights(scores, temperature_db, floor_share)))
    return int(min(starts[pick] + rng.integers(0, hop), valid - length))
