"""Cheap features a learned embedding has to beat: log-mel and MFCC statistics per segment."""

from __future__ import annotations

import librosa
import numpy as np

N_MELS = 64
N_MFCC = 20


def logmel_frames(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, 64) log-mel bands over time."""
    mel = librosa.feature.melspectrogram(y=audio, sr=sample_rate, n_fft=1024, hop_length=320, n_mels=N_MELS,
                                         fmax=sample_rate / 2)
    return np.log(mel + 1e-10).T.astype(np.float32)


def mfcc_frames(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, 20) MFCCs over time."""
    return librosa.feature.mfcc(y=audio, sr=sample_rate, n_mfcc=N_MFCC, n_fft=1024, hop_length=320,
                                n_mels=N_MELS).T.astype(np.float32)


def logmel_stats(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean and standard deviation over time of each log-mel band (2 x 64 values)."""
    frames = logmel_frames(audio, sample_rate)
    return np.concatenate([frames.mean(0), frames.std(0)]).astype(np.float32)


def mfcc_stats(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean and standard deviation over time of 20 MFCCs (2 x 20 values)."""
    frames = mfcc_frames(audio, sample_rate)
    return np.concatenate([frames.mean(0), frames.std(0)]).astype(np.float32)
