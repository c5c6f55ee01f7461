"""Planning wav2vec 2.0's convolutional feature encoder for any sample rate.

The paper's encoder turns 16 kHz audio into one frame every 20 ms (strides 5,2,2,2,2,2,2 = 320
samples) seeing 25 ms of audio (kernels 10,3,3,3,3,2,2 = 400 samples). A 2 kHz baleen-whale
workspace or a 96 kHz dolphin workspace needs other strides for the same frame duration; this
module derives them, so no config is edited by hand.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

ALLOWED_STRIDES = (5, 4, 3, 2)


@dataclass(frozen=True)
class FeatureEncoderPlan:
    sample_rate: int
    strides: tuple[int, ...]
    kernels: tuple[int, ...]

    @property
    def hop_samples(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_seconds(self) -> float:
        return self.hop_samples / self.sample_rate

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate / self.hop_samples

    @property
    def receptive_field_samples(self) -> int:
        return receptive_field(self.strides, self.kernels)

    @property
    def receptive_field_seconds(self) -> float:
        return self.receptive_field_samples / self.sample_rate

    @property
    def nyquist_hz(self) -> float:
        return self.sample_rate / 2

    def describe(self) -> dict:
        return {
            **asdict(self),
            "hop_samples": self.hop_samples,
            "frame_ms": round(1000 * self.frame_seconds, 4),
            "frame_rate_hz": round(self.frame_rate_hz, 4),
            "receptive_field_samples": self.receptive_field_samples,
            "receptive_field_ms": round(1000 * self.receptive_field_seconds, 4),
            "nyquist_hz": self.nyquist_hz,
        }

    def summary(self) -> str:
        return (
            f"{self.sample_rate} Hz audio → one frame every {1000 * self.frame_seconds:.2f} ms "
            f"({self.frame_rate_hz:.2f} frames/s), receptive field {1000 * self.receptive_field_seconds:.2f} ms, "
            f"Nyquist {self.nyquist_hz:.0f} Hz; strides {self.strides}, kernels {self.kernels}"
        )


def receptive_field(strides: tuple[int, ...], kernels: tuple[int, ...]) -> int:
    field, jump = kernels[0], strides[0]
    for stride, kernel in zip(strides[1:], kernels[1:]):
        field += (kernel - 1) * jump
        jump *= stride
    return field


def _factor(hop: int, max_layers: int) -> tuple[int, ...] | None:
    """Strides from {5,4,3,2} whose product is `hop`: big factors first, as in the paper."""
    factors = []
    rest = hop
    for prime in (5, 3, 2):
        while rest % prime == 0:
            factors.append(prime)
            rest //= prime
    if rest != 1 or not factors:
        return None
    fives_threes = [f for f in factors if f != 2]
    twos = factors.count(2)
    strides = fives_threes + [2] * twos
    while len(strides) > max_layers and strides.count(2) >= 2:
        strides.remove(2)
        strides.remove(2)
        strides.insert(len(fives_threes), 4)
    if len(strides) > max_layers:
        return None
    return tuple(sorted(strides[:1], reverse=True) + strides[1:])


def plan_feature_encoder(
    sample_rate: int, frame_ms: float = 20.0, receptive_field_ms: float = 25.0, max_layers: int = 9
) -> FeatureEncoderPlan:
    """Strides for a frame as close as possible to `frame_ms`, kernels for a receptive field of
    at least `receptive_field_ms` (growing the earliest, cheapest kernels first)."""
    if sample_rate <= 0 or frame_ms <= 0:
        raise ValueError("sample rate and frame duration must be positive")
    target = max(2, round(sample_rate * frame_ms / 1000))
    strides = None
    for delta in range(0, target):  # nearest hop that factors into strides of 2..5
        for hop in (target - delta, target + delta):
            if hop >= 2 and (strides := _factor(hop, max_layers)):
                break
        if strides:
            break
    assert strides is not None
    kernels = list(strides)
    wanted = max(math.prod(strides), round(sample_rate * receptive_field_ms / 1000))
    limits = [2 * strides[0]] + [s + 1 for s in strides[1:]]
    for layer in range(len(strides)):
        while kernels[layer] < limits[layer] and receptive_field(strides, tuple(kernels)) < wanted:
            kernels[layer] += 1
    while receptive_field(strides, tuple(kernels)) < wanted:
        kernels[-1] += 1
    return FeatureEncoderPlan(sample_rate, strides, tuple(kernels))
