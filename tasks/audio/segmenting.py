"""Cutting a resampled stream into fixed-length, possibly overlapping segments."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Segment:
    index: int
    start: int  # first sample, counted at the output rate from the start of the stream
    audio: np.ndarray  # always `segment_samples` long; zero padding after `valid` samples
    valid: int
    clipped: int  # clipped input samples inside the valid span
    nonfinite: int  # non-finite input samples inside the valid span


class FlagLedger:
    """Sparse per-output-sample counts, summed over any span; forgets what lies behind."""

    def __init__(self) -> None:
        self._chunks: deque[tuple[int, np.ndarray]] = deque()

    def add(self, chunk: tuple[int, np.ndarray] | None) -> None:
        if chunk is not None:
            self._chunks.append(chunk)

    def count(self, start: int, end: int) -> int:
        total = 0
        for first, counts in self._chunks:
            lo, hi = max(start, first), min(end, first + len(counts))
            if lo < hi:
                total += int(counts[lo - first : hi - first].sum())
        return total

    def forget_before(self, position: int) -> None:
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= position:
            self._chunks.popleft()


class Segmenter:
    """Fixed-length segments every `hop` samples, exact to the sample.

    Segments start at 0, hop, 2*hop, ... and every full one is emitted. Then, if audio remains
    after the last full segment (or the stream is shorter than one segment), one final segment
    starting at the next hop is either zero-padded with its real length kept in `valid`
    (`final="pad"`) or dropped (`final="drop"`).
    """

    def __init__(self, segment_samples: int, hop_samples: int, final: Literal["pad", "drop"] = "pad"):
        if segment_samples <= 0 or hop_samples <= 0:
            raise ValueError("segment and hop must be at least one sample")
        self.segment_samples, self.hop_samples, self.final = segment_samples, hop_samples, final
        self._pieces: list[np.ndarray] = []
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # stream index of _buffer[0]
        self.total = 0  # samples received
        self._index = 0
        self.clipped = FlagLedger()
        self.nonfinite = FlagLedger()

    @property
    def _next_start(self) -> int:
        return self._index * self.hop_samples

    def push(
        self,
        samples: np.ndarray,
        clipped: tuple[int, np.ndarray] | None = None,
        nonfinite: tuple[int, np.ndarray] | None = None,
    ) -> Iterator[Segment]:
        self.clipped.add(clipped)
        self.nonfinite.add(nonfinite)
        if len(samples):
            self._pieces.append(samples)
            self.total += len(samples)
        while self._next_start + self.segment_samples <= self.total:
            yield self._emit(self.segment_samples)
        self._compact()

    def finish(self) -> Iterator[Segment]:
        """The final partial segment, if any audio is left over."""
        start = self._next_start
        last_end = start - self.hop_samples + self.segment_samples if self._index else 0
        if self.final == "pad" and start < self.total and (self._index == 0 or last_end < self.total):
            yield self._emit(self.total - start)

    def _emit(self, valid: int) -> Segment:
        start = self._next_start
        self._compact()
        offset = start - self._buffer_start
        audio = np.zeros(self.segment_samples, np.float32)
        audio[:valid] = self._buffer[offset : offset + valid]
        segment = Segment(
            index=self._index, start=start, audio=audio, valid=valid,
            clipped=self.clipped.count(start, start + valid),
            nonfinite=self.nonfinite.count(start, start + valid),
        )
        self._index += 1
        return segment

    def _compact(self) -> None:
        """Join pending pieces and drop samples no future segment needs."""
        if self._pieces:
            self._buffer = np.concatenate([self._buffer, *self._pieces])
            self._pieces.clear()
        keep_from = min(self._next_start, self._buffer_start + len(self._buffer))
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start :]
            self._buffer_start = keep_from
        self.clipped.forget_before(self._next_start)
        self.nonfinite.forget_before(self._next_start)
