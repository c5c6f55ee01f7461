"""Level and quality statistics of one segment of audio."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DBFS_FLOOR = -200.0  # what digital silence reports instead of -inf
DROPOUT_MIN_SECONDS = 0.02  # runs of exact zeros at least this long count as dropouts


@dataclass(frozen=True)
class SegmentQuality:
    rms_dbfs: float
    peak_dbfs: float
    clipped_fraction: float
    dc_offset: float
    dropout_fraction: float
    is_silent: bool
    nonfinite_count: int


def to_dbfs(amplitude: float) -> float:
    """Level relative to digital full scale (1.0); float recordings may exceed 0 dBFS."""
    if amplitude <= 0.0:
        return DBFS_FLOOR
    return max(DBFS_FLOOR, 20.0 * float(np.log10(amplitude)))


def dropout_fraction(samples: np.ndarray, sample_rate: int) -> float:
    """Share of samples inside runs of exact zeros lasting at least DROPOUT_MIN_SECONDS."""
    if samples.size == 0:
        return 0.0
    zero = samples == 0.0
    if not zero.any():
        return 0.0
    edges = np.diff(np.concatenate(([0], zero.view(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = ends - starts
    min_run = max(1, int(round(DROPOUT_MIN_SECONDS * sample_rate)))
    return float(lengths[lengths >= min_run].sum()) / samples.size


def segment_quality(
    valid_audio: np.ndarray,
    sample_rate: int,
    clipped_input_samples: int,
    input_samples: int,
    nonfinite_input_samples: int,
    silence_dbfs: float,
) -> SegmentQuality:
    """Statistics over the valid (unpadded) part of a segment.

    Clipping and non-finite values are counted on the original samples (`*_input_samples`),
    where they happened; levels are measured on the stored audio the model will see.
    """
    x = valid_audio.astype(np.float64, copy=False)
    if x.size == 0:
        rms = peak = dc = 0.0
    else:
        rms = float(np.sqrt(np.mean(x * x)))
        peak = float(np.max(np.abs(x)))
        dc = float(np.mean(x))
    rms_db = to_dbfs(rms)
    dropouts = dropout_fraction(valid_audio, sample_rate)
    return SegmentQuality(
        rms_dbfs=rms_db,
        peak_dbfs=to_dbfs(peak),
        clipped_fraction=min(1.0, clipped_input_samples / input_samples) if input_samples else 0.0,
        dc_offset=dc,
        dropout_fraction=dropouts,
        is_silent=bool(rms_db < silence_dbfs or dropouts >= 0.5),
        nonfinite_count=int(nonfinite_input_samples),
    )
