"""Audio as the network sees it."""

from __future__ import annotations

import numpy as np


def normalise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per crop, as wav2vec 2.0's feature extractor does: hydrophone
    levels differ by tens of dB between recorders and sites. Statistics in float64: a crop with a
    large offset and little variation loses its variance to float32 cancellation; a constant or
    empty crop stays zeros rather than dividing by ~0."""
    if x.size == 0:
        return x.astype(np.float32)
    wide = x.astype(np.float64)
    centred = wide - wide.mean()
    return (centred / np.sqrt(centred.var() + 1e-7)).astype(np.float32)
