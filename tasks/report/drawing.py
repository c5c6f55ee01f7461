"""Where a report's sections draw: the report folder, the figure writer, the network the features section
probes, and the one warning every page repeats. The inputs they draw from are in tasks/report/inputs.py.

    out_dir/figures/*.png|svg                        every figure, PNG and SVG
    out_dir/media/thumbs/<segment>.png               spectrogram thumbnails of the explorer's media points
    out_dir/media/audio/<segment>.wav                their audio
    out_dir/media/units/<inventory>/unit<U>-<i>.wav  exemplar clips of the unit atlases
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks.report.content import FigureRef
from tasks.report.features_report import FeatureRun
from tasks.report.figures import save

FIGURES = "figures"
MEDIA = "media"

Progress = Callable[[str, float], None]


class FigureWriter:
    """Saves figures under out_dir/figures, makes their FigureRefs and times each (draw + save)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.seconds: dict[str, float] = {}

    def add(self, fig, key: str, title: str, caption: str, started: float | None = None) -> FigureRef:
        png, svg = save(fig, self.out_dir / FIGURES / key)
        if started is not None:
            self.seconds[key] = round(time.perf_counter() - started, 2)
        return FigureRef(key, title, caption, png.relative_to(self.out_dir).as_posix(),
                         svg.relative_to(self.out_dir).as_posix())


@dataclass(frozen=True)
class Drawing:
    """What a section builder draws with besides its inputs."""

    out_dir: Path
    figures: FigureWriter
    features: FeatureRun  # the embedded network, loaded on first use; the units section feeds it first
    warning: str | None  # the verdict on a model that has not learned, repeated on every unit page
    say: Progress

    def relative(self, path: Path) -> str:
        return path.relative_to(self.out_dir).as_posix()
