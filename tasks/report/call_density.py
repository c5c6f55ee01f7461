"""Call density with recording effort, for the report: per site, a day x hour raster of detections per
hour of audio actually recorded (hours without audio hatched, not painted as hours without calls),
with the calibrated call density of tasks/detection/density.py beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb
import numpy as np

from tasks.catalog import detections as detections_catalog
from tasks.detection.density import CallDensity, densities

HOURS = 24
MAX_DAYS = 92  # beyond a season of rows, only the days with audio get one (a decade of rows reads as nothing)


@dataclass
class EffortRaster:
    """One site: rows are UTC days (every day from its first recorded one to its last, or only the days with
    audio when those span more than MAX_DAYS), columns UTC hours."""

    site: str
    days: list[str]
    effort_s: np.ndarray  # (days, 24) seconds recorded
    windows: np.ndarray  # (days, 24) windows scored
    above: np.ndarray  # (days, 24) windows at or above the threshold
    days_spanned: int = 0  # days from the first recorded to the last (more than len(days): days left out)

    @property
    def no_effort(self) -> np.ndarray:
        return self.effort_s <= 0

    @property
    def unscored(self) -> np.ndarray:
        """Recorded, but no window of it scored yet (run `ceta2vec classify` again)."""
        return (self.effort_s > 0) & (self.windows == 0)

    @property
    def rate(self) -> np.ndarray:
        """Detections (windows above the threshold) per hour of effort; NaN where there is no effort or no score."""
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = self.above / (self.effort_s / 3600.0)
        return np.where(self.no_effort | self.unscored, np.nan, rate)


def effort_rasters(conn: duckdb.DuckDBPyConnection, classifier_id: str, threshold: float) -> list[EffortRaster]:
    effort: dict[str, dict[tuple[str, int], float]] = {}
    for site, day, hour, seconds in detections_catalog.effort_hours(conn):
        effort.setdefault(site, {})[(day, int(hour))] = float(seconds)
    scored = {(site, day, int(hour)): (n, above) for site, day, hour, n, above in
              detections_catalog.hourly_detections(conn, classifier_id, threshold)}
    out = []
    for site in sorted(effort):
        recorded = sorted({day for day, _ in effort[site]})
        days = [str(d) for d in np.arange(np.datetime64(recorded[0]), np.datetime64(recorded[-1]) + 1)]
        spanned = len(days)
        if spanned > MAX_DAYS:
            days = recorded
        shape = (len(days), HOURS)
        raster = EffortRaster(site, days, np.zeros(shape), np.zeros(shape, np.int64), np.zeros(shape, np.int64),
                              spanned)
        row = {d: i for i, d in enumerate(days)}
        for (day, hour), seconds in effort[site].items():
            raster.effort_s[row[day], hour] = seconds
            raster.windows[row[day], hour], raster.above[row[day], hour] = scored.get((site, day, hour), (0, 0))
        out.append(raster)
    return out


@dataclass
class DrawnRaster:
    """What the figure drew for a site: the cells left hatched (no effort) and the ones greyed (not scored)."""

    site: str
    hatched: list[tuple[str, int]]
    unscored: list[tuple[str, int]]


def density_figure(rasters: list[EffortRaster], found: dict[str, CallDensity], label: str, threshold: float):
    """(figure, [DrawnRaster]): a panel per site; the hatched cells are read back from the drawn image's mask."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Rectangle

    heights = [min(8.0, max(1.2, 0.22 * len(r.days))) + 0.9 for r in rasters]
    fig, axes = plt.subplots(len(rasters), 1, figsize=(9.5, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    top = max([float(np.nanmax(r.rate)) for r in rasters if np.isfinite(r.rate).any()] or [1.0]) or 1.0
    drawn = []
    for ax, raster in zip(axes[:, 0], rasters):
        n = len(raster.days)
        extent = (-0.5, HOURS - 0.5, n - 0.5, -0.5)
        # under everything, the hatch: it shows through wherever nothing was recorded
        ax.add_patch(Rectangle((-0.5, -0.5), HOURS, n, facecolor="#f4f6f8", edgecolor="#9aa3ab", hatch="///",
                               linewidth=0, zorder=0))
        image = ax.imshow(np.ma.masked_invalid(raster.rate), cmap="viridis", vmin=0, vmax=top, aspect="auto",
                          interpolation="nearest", extent=extent, zorder=1)
        grey = np.ma.masked_where(~raster.unscored, np.ones(raster.unscored.shape))
        ax.imshow(grey, cmap=ListedColormap(["#c9ced3"]), aspect="auto", interpolation="nearest", extent=extent, zorder=1)
        shown = np.ma.getmaskarray(image.get_array())
        hatched = [(raster.days[i], int(h)) for i, h in zip(*np.nonzero(shown & ~raster.unscored))]
        drawn.append(DrawnRaster(raster.site, hatched, [(raster.days[i], int(h)) for i, h in zip(*np.nonzero(raster.unscored))]))
        ax.set_xticks(range(0, HOURS, 3))
        ax.set_xticklabels([f"{h:02d}" for h in range(0, HOURS, 3)])
        step = max(1, math.ceil(n / 14))
        ax.set_yticks(range(0, n, step))
        ax.set_yticklabels(raster.days[::step])
        ax.set_xlim(-0.5, HOURS - 0.5)
        ax.set_ylim(n - 0.5, -0.5)
        density = found.get(raster.site)
        recorded = _duration(float(raster.effort_s.sum()))
        note = (f"call density {density.estimate:.3f} [{density.low:.3f}, {density.high:.3f}] from "
                f"{density.reviewed} reviewed windows" if density and density.reviewed
                else "call density unknown: no reviewed windows yet")
        ax.set_title(f"{raster.site}: {recorded} recorded, {int(raster.above.sum())} windows ≥ {threshold:.2f}; {note}",
                     fontsize=9, loc="left")
        ax.set_ylabel("UTC day" if len(raster.days) == raster.days_spanned else
                      f"UTC day ({len(raster.days)} with audio\nof {raster.days_spanned})")
        fig.colorbar(image, ax=ax, label="detections per hour\nof effort", fraction=0.03, pad=0.01)
    axes[-1, 0].set_xlabel("UTC hour (hatched: nothing recorded; grey: recorded, not scored yet)")
    fig.suptitle(f"'{label}' detections per hour of recording effort", fontsize=11)
    fig.tight_layout()
    return fig, drawn


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class DensityInputs:
    """What one label's density figure is drawn from: its current classifier, rasters and call density."""

    label: str
    classifier: dict
    threshold: float
    rasters: list[EffortRaster]
    found: dict[str, CallDensity]


def read_density(conn: duckdb.DuckDBPyConnection, seed: int = 0) -> list[DensityInputs]:
    """Per label with a current classifier and recording effort, its density inputs; [] without detections."""
    if not detections_catalog.has_detections(conn):
        return []
    out = []
    for label in detections_catalog.classifier_labels(conn):
        classifier = detections_catalog.current_classifier(conn, label)
        threshold = float(classifier["threshold"])
        rasters = effort_rasters(conn, classifier["classifier_id"], threshold)
        if rasters:
            out.append(DensityInputs(label, classifier, threshold, rasters, densities(conn, classifier, seed)))
    return out


def density_section(density: list[DensityInputs], figures):
    """The report's "Detections and call density" section, one figure per label with a classifier; None when
    the workspace has no detections (the report then has no such section)."""
    import time

    from schemas.names import file_stem
    from tasks.report.content import ReportSection

    refs, tables = [], []
    for d in density:
        started = time.perf_counter()
        label, classifier, threshold, found = d.label, d.classifier, d.threshold, d.found
        fig, _ = density_figure(d.rasters, found, label, threshold)
        refs.append(figures.add(
            fig, f"density-{file_stem(label)}", f"'{label}' per hour of recording effort",
            f"Classifier {classifier['classifier_id']} ({classifier['features']}), windows scoring at least its "
            f"F1-optimal threshold {threshold:.3f}, per UTC day and hour, divided by the hours actually recorded. "
            "Hatched hours have no audio: they are no effort, not hours without calls.", started))
        tables.append([{"label": label, "site": site, "call density": round(c.estimate, 4),
                        "95% interval": f"[{c.low:.3f}, {c.high:.3f}]", "reviewed windows": c.reviewed,
                        "reviewed yes": c.positives} for site, c in found.items()])
    if not refs:
        return None
    return ReportSection(
        "detections", "Detections and call density",
        "Detection rates normalised by recording effort, and the calibrated call density: the share of windows "
        "that hold a call, from windows reviewed after the classifier was trained (`ceta2vec suggest`, the "
        "explorer's Review mode, then `ceta2vec label`), binned by score as perch-hoplite's call density does. "
        "With no reviewed windows the interval is as wide as the prior.", refs, tables=tables)
