"""The windows a classifier scores, and which of them a label calls positive or negative.

A window lies inside one segment: every `hop_s` from the segment's start while a whole window fits
(one window of the segment's valid audio when it is shorter), or the segment itself with
granularity `segments`. Where segments overlap (a hop shorter than the segment), a window that
starts at the same time in two of them is kept once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import numpy as np

from tasks.catalog.detections import SegmentRow

Granularity = Literal["windows", "segments"]
SplitBy = Literal["recording", "site", "day"]


@dataclass
class Windows:
    segment_id: list[str] = field(default_factory=list)
    recording_id: list[str] = field(default_factory=list)
    channel: list[int] = field(default_factory=list)
    start_s: list[float] = field(default_factory=list)
    end_s: list[float] = field(default_factory=list)
    segment_start_s: list[float] = field(default_factory=list)
    utc_start: list[datetime | None] = field(default_factory=list)
    site: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.segment_id)

    def take(self, index) -> "Windows":
        index = list(np.asarray(index, dtype=int))
        return Windows(*[[getattr(self, f)[i] for i in index] for f in self.__dataclass_fields__])

    def groups(self, split_by: SplitBy) -> np.ndarray:
        """The group each window belongs to for validation: its recording, site, or UTC day."""
        if split_by == "recording":
            return np.array(self.recording_id)
        if split_by == "site":
            return np.array(self.site)
        return np.array([t.strftime("%Y-%m-%d") if t is not None else f"unknown:{r}"
                         for t, r in zip(self.utc_start, self.recording_id)])


def windows_of(segments: list[SegmentRow], window_s: float, hop_s: float, granularity: Granularity) -> Windows:
    out = Windows()
    seen = set()
    for seg in segments:
        if granularity == "segments":
            spans = [(seg.start_s, seg.start_s + seg.valid_s)]
        elif seg.valid_s <= window_s:
            spans = [(seg.start_s, seg.start_s + seg.valid_s)]
        else:
            count = int(np.floor((seg.valid_s - window_s) / hop_s + 1e-9)) + 1
            spans = [(seg.start_s + k * hop_s, seg.start_s + k * hop_s + window_s) for k in range(count)]
        for start, end in spans:
            key = (seg.recording_id, seg.channel, round(start, 6))
            if key in seen:
                continue
            seen.add(key)
            out.segment_id.append(seg.segment_id)
            out.recording_id.append(seg.recording_id)
            out.channel.append(seg.channel)
            out.start_s.append(round(start, 6))
            out.end_s.append(round(end, 6))
            out.segment_start_s.append(seg.start_s)
            out.utc_start.append(None if seg.recording_start is None else seg.recording_start + timedelta(seconds=start))
            out.site.append(seg.site)
    return out


@dataclass(frozen=True)
class Span:
    recording_id: str
    start_s: float | None  # None: the whole recording
    end_s: float | None
    positive: bool


def covers(span_start: float, span_end: float, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """A span labels a window when their overlap covers half of the shorter of the two (the rule of
    the `segment_labels` view, applied to windows)."""
    overlap = np.minimum(span_end, end) - np.maximum(span_start, start)
    return overlap >= 0.5 * np.minimum(span_end - span_start, end - start)


def window_targets(windows: Windows, spans: list[Span], background_recordings: set[str]) -> np.ndarray:
    """Per window: 1 positive, 0 negative, -1 not labelled. A window that a positive and a negative
    span both label is left out (-1). Windows of `background_recordings` that overlap no span at all
    are negatives."""
    start, end = np.array(windows.start_s), np.array(windows.end_s)
    recording = np.array(windows.recording_id)
    pos = np.zeros(len(windows), bool)
    neg = np.zeros(len(windows), bool)
    touched = np.zeros(len(windows), bool)
    for span in spans:
        mine = recording == span.recording_id
        if span.start_s is None:
            hit = mine
            touch = mine
        else:
            hit = mine & covers(span.start_s, span.end_s, start, end)
            touch = mine & (np.minimum(span.end_s, end) > np.maximum(span.start_s, start))
        (pos if span.positive else neg)[hit] = True
        if span.positive:
            touched |= touch
    target = np.full(len(windows), -1, np.int8)
    target[neg & ~pos] = 0
    target[pos & ~neg] = 1
    background = np.isin(recording, list(background_recordings)) & ~touched & ~pos & ~neg
    target[background] = 0
    return target
