"""What a report holds, independent of how it is drawn: the figures' and the HTML writer's shared contract.

Every path is relative to the report folder, so the folder can be moved, zipped or opened from disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tasks.report.explorer_frames import ExplorerFrames
    from tasks.report.explorer_review import ReviewBatch


@dataclass
class FigureRef:
    key: str                 # stable id, e.g. "umap-layers", "unit-atlas-layer-3"
    title: str
    caption: str             # one or two sentences: what to look at
    png: str                 # relative path
    svg: str                 # relative path


@dataclass
class AudioClip:
    title: str               # e.g. "unit 7, exemplar 2: Lpod.wav 12.3 s"
    wav: str                 # relative path of a short WAV clip
    caption: str = ""
    group: str = ""          # clips that belong together, e.g. "k-means units of layer 3, unit 7" ("" = none)


@dataclass
class PageLink:
    title: str               # e.g. "unit 7"
    href: str                # relative path of the page
    note: str = ""           # one line beside the link
    group: str = ""          # links listed together under this heading


@dataclass
class ReportSection:
    key: str
    title: str
    intro: str
    figures: list[FigureRef] = field(default_factory=list)
    clips: list[AudioClip] = field(default_factory=list)
    tables: list[list[dict]] = field(default_factory=list)   # rows of plain values, rendered as HTML tables
    links: list[PageLink] = field(default_factory=list)      # pages of their own, e.g. one per unit


@dataclass
class ExplorerData:
    """One row per segment shown in the explorer; columnar so 100k points stay small."""

    segment_id: list[str]
    recording: list[str]                 # file name
    site: list[str]
    start_time: list[str]                # ISO-8601 or "" when unknown
    start_s: np.ndarray                  # float, offset of the segment in its recording
    label: list[str]                     # "" when unlabelled
    cluster: np.ndarray                  # int, k-means cluster of the segment vectors (per the main layer)
    coords: dict[int, np.ndarray]        # layer -> (n, 2) float32 UMAP coordinates
    neighbours: dict[int, np.ndarray]    # layer -> (n, k) int32 indices into these rows (-1 = none)
    distances: dict[int, np.ndarray]     # layer -> (n, k) float32 cosine distances
    thumbnail: list[str]                 # relative PNG path or ""
    audio: list[str]                     # relative WAV path or ""
    label_column: str | None = None
    main_layer: int | None = None        # layer the explorer opens on (default: the middle key of coords)
    valid_s: np.ndarray | None = None    # real audio in each segment; the rest of segment_seconds is zero padding
    rms_dbfs: np.ndarray | None = None   # level of each segment's valid audio
    hour_utc: np.ndarray | None = None   # hour of day of each segment's start, NaN when unknown
    segment_seconds: float | None = None  # nominal segment length (thumbnail time axes)
    labels: dict[str, list[str]] = field(default_factory=dict)  # other label columns -> value per segment
    freq_ticks: list[tuple[float, str]] = field(default_factory=list)  # thumbnail height fraction -> kHz label
    frames: ExplorerFrames | None = None  # sampled frames for the frame/unit mode
    review: list[ReviewBatch] = field(default_factory=list)  # windows to review per label (Review mode)


@dataclass
class ReportContent:
    title: str
    model_id: str
    generated_at: str
    summary: list[dict]                  # workspace and data summary rows {"item":..., "value":...}
    configuration: dict                  # pretraining settings, model config, report settings
    sections: list[ReportSection]
    explorer: ExplorerData | None = None
    verdict: object | None = None        # tasks.report.verdict.Verdict: what the first screen says
