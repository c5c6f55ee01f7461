"""Figures of the discrete units: the unit atlas, a recording's unit timeline, sequence statistics
(bigram transitions, rank-frequency) and units against labels. Each returns a matplotlib Figure."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.gridspec import GridSpec  # noqa: E402

from tasks.report.figures import PALETTE  # noqa: E402
from tasks.report.sequence_stats import zipf_slope  # noqa: E402
from tasks.report.spectrograms import SPECTROGRAM_CMAP, MelConfig, display_range, mel_ticks  # noqa: E402
from tasks.report.unit_atlas import UnitAtlas  # noqa: E402

GREY_EDGE = "#D0D0D0"  # windows reaching beyond a segment's edge
UNIT_CMAP = "viridis"  # units coloured by their place in the similarity order: similar units, similar colours


def unit_colours(order: list[int], n_units: int) -> np.ndarray:
    """(n_units + 1, 4) RGBA: row u is unit u's colour, the last row (index -1) white for no unit."""
    cmap = plt.get_cmap(UNIT_CMAP)
    colours = np.tile(np.array([[0.85, 0.85, 0.85, 1.0]]), (n_units + 1, 1))
    for position, unit in enumerate(order):
        if unit < n_units:
            colours[unit] = cmap(position / max(1, len(order) - 1))
    colours[-1] = (1, 1, 1, 1)
    return colours


CONTRAST_CMAP = "RdBu_r"  # diverging: red louder than the average frame, blue quieter, white no difference
MARK = "#56B4E9"  # the unit's own frames in an exemplar (Okabe-Ito sky blue, visible over magma)
RUN_BINS = (1, 2, 3, 5, 9, 17, 33)  # run lengths in frames: 1, 2, 3-4, 5-8, 9-16, 17-32, 33+


def contrast_range(contrasts: list[np.ndarray | None]) -> float:
    """One symmetric colour limit (dB) for every contrast panel: the 99th percentile of |contrast|, at least 3 dB."""
    values = np.concatenate([np.abs(c[np.isfinite(c)]) for c in contrasts if c is not None] or [np.zeros(1)])
    return float(max(3.0, np.percentile(values, 99) if values.size else 3.0))


def shown_contrast(contrast: np.ndarray, significant: np.ndarray | None) -> np.ndarray:
    """The contrast with cells not beyond the null set to 0 (white on the diverging scale)."""
    return np.where(significant if significant is not None else True, np.nan_to_num(contrast), 0.0)


def mark_runs(ax: plt.Axes, in_unit: np.ndarray | None, extent: tuple[float, float], width: int) -> None:
    """A bar along the top of a window over the columns whose frame has the unit."""
    if in_unit is None or not in_unit.any():
        return
    step = (extent[1] - extent[0]) / width
    edges = np.flatnonzero(np.diff(np.r_[0, in_unit.astype(np.int8), 0]))
    for a, b in zip(edges[::2], edges[1::2]):
        ax.axvspan(extent[0] + a * step, extent[0] + b * step, ymin=0.9, ymax=1.0, color=MARK, linewidth=0)


def run_shares(lengths: np.ndarray | None) -> np.ndarray:
    """Share of runs in each of RUN_BINS (frames)."""
    counts = np.histogram(lengths if lengths is not None else [], bins=list(RUN_BINS) + [np.inf])[0]
    return counts / max(1, counts.sum())


def run_histogram(ax: plt.Axes, lengths: np.ndarray | None, frame_s: float, show_axis: bool):
    """Bars of run_shares(lengths) on `ax`; returns them (their heights can be set again)."""
    share = run_shares(lengths)
    bars = ax.bar(range(len(share)), share, color=PALETTE[0], width=0.8)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xticks(range(len(share)))
    if show_axis:
        names = [f"{1000 * a * frame_s:.0f}" if b == a + 1 else f"{1000 * a * frame_s:.0f}+"
                 for a, b in zip(RUN_BINS, list(RUN_BINS[1:]) + [np.inf])]
        ax.set_xticklabels(names, fontsize=5, rotation=90)
        ax.set_xlabel("run (ms)", fontsize=6, labelpad=1)
    else:
        ax.set_xticklabels([])
    ax.tick_params(axis="x", length=1.5, pad=1)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    return bars


def lift_text(lift: dict[str, list[tuple[str, float, int]]], per_facet: int = 1) -> list[str]:
    """'label orca ×2.3' lines: the values a unit is most over-represented in."""
    lines = []
    for facet, rows in lift.items():
        for value, ratio, _ in rows[:per_facet]:
            if ratio > 1:
                lines.append(f"{facet} {value[:12]} ×{ratio:.1f}")
    return lines


def unit_atlas_figure(atlas: UnitAtlas, model_id: str, recordings: dict[str, str] | None = None) -> plt.Figure:
    """Per unit: its contrast (mean log-mel window minus the mean window of every frame; cells not
    beyond the shifted-label null left white), exemplars with the unit's frames marked, the run-length
    histogram, usage and lift. The most distinct units first, near-duplicates together."""
    units = atlas.units
    n_ex = max((len(u.exemplars) for u in units), default=0)
    blocks = 2 if len(units) > 12 else 1
    per_block = int(np.ceil(len(units) / blocks)) or 1
    cols = 1 + n_ex
    cell, row_h, top_in, bottom_in = 0.8, 0.86, 1.0, 1.0
    ratios = [1.15] + [1] * n_ex + [0.8, 2.3]
    width = blocks * cell * sum(ratios) + 0.6
    height = per_block * row_h + top_in + bottom_in
    fig = plt.figure(figsize=(width, height))
    outer = GridSpec(1, blocks, figure=fig, wspace=0.06, left=0.45 / width, right=0.995, top=1 - top_in / height,
                     bottom=bottom_in / height)
    vmin, vmax = display_range([e.window for u in units for e in u.exemplars] or [np.zeros((2, 2))])
    limit = contrast_range([u.contrast for u in units])
    ticks, tick_labels = mel_ticks(atlas.mel, 3)
    half_s = atlas.half_width * atlas.mel.frame_seconds
    extent = (-half_s * 1000, half_s * 1000, -0.5, atlas.mel.n_mels - 0.5)
    width_cols = 2 * atlas.half_width + 1
    groups = [u.group for u in units]
    contrast_image = spectrogram_image = None
    for b in range(blocks):
        inner = outer[b].subgridspec(per_block, cols + 2, width_ratios=ratios, wspace=0.07, hspace=0.42)
        for r in range(per_block):
            i = b * per_block + r
            if i >= len(units):
                break
            unit = units[i]
            last = r == per_block - 1 or i == len(units) - 1
            ax = fig.add_subplot(inner[r, 0])
            ax.set_facecolor(GREY_EDGE)
            if unit.contrast is not None:
                contrast_image = ax.imshow(shown_contrast(unit.contrast, unit.significant), origin="lower",
                                           aspect="auto", cmap=CONTRAST_CMAP, vmin=-limit, vmax=limit, extent=extent,
                                           interpolation="nearest")
            ax.axvline(0, color="black", linestyle=":", linewidth=0.6)
            ax.set_yticks(ticks)
            ax.set_yticklabels(tick_labels, fontsize=5.5)
            ax.tick_params(axis="y", pad=1, length=2)
            twin = f"  (≈ group {unit.group})" if groups.count(unit.group) > 1 else ""
            ax.set_title(f"unit {unit.unit}{twin}", fontsize=7, pad=2, fontweight="bold")
            _time_axis(ax, last, "ms from frame")
            if b == 0 and r == per_block // 2:
                ax.set_ylabel("frequency (kHz)", fontsize=7)
            for e in range(n_ex):
                ax = fig.add_subplot(inner[r, 1 + e])
                ax.set_yticks([])
                ax.set_facecolor(GREY_EDGE)
                if e < len(unit.exemplars):
                    ex = unit.exemplars[e]
                    spectrogram_image = ax.imshow(ex.window, origin="lower", aspect="auto", cmap=SPECTROGRAM_CMAP,
                                                  vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
                    mark_runs(ax, ex.in_unit, extent[:2], width_cols)
                    where = (recordings or {}).get(ex.segment_id, ex.segment_id)
                    ax.set_title(where[:12], fontsize=5.5, pad=2)
                else:
                    ax.set_facecolor("#F2F2F2")
                    ax.set_xlim(extent[0], extent[1])
                _time_axis(ax, last, "")
            run_histogram(fig.add_subplot(inner[r, cols]), unit.run_lengths, atlas.mel.frame_seconds, last)
            ax = fig.add_subplot(inner[r, cols + 1])
            ax.axis("off")
            text = [f"{unit.frames:,} frames ({100 * unit.share:.1f}%)", f"mean run {1000 * unit.mean_run_s:.0f} ms",
                    f"contrast {unit.distinctness:.1f} dB RMS" if unit.distinctness else "no cell beyond chance"]
            text += lift_text(unit.lift)[:2]
            ax.text(0.04, 0.5, "\n".join(text), fontsize=6.5, va="center", ha="left", transform=ax.transAxes)
    chars = max(40, int(width * 15))  # characters per line at 6.5-8 pt
    for k, (image, label) in enumerate(((contrast_image, "contrast: unit mean minus the mean of every frame (dB); "
                                         "white: not beyond chance"),
                                        (spectrogram_image, "exemplars: log-mel power (dB); blue bar: the unit's "
                                         "frames"))):
        if image is not None:
            cax = fig.add_axes([0.08 + 0.48 * k, 0.3 / height, 0.36, 0.08 / height])
            bar = fig.colorbar(image, cax=cax, orientation="horizontal")
            bar.set_label(textwrap.fill(label, chars // 2 - 4), fontsize=6.5)
            bar.ax.tick_params(labelsize=6)
    title = (f"{model_id}: unit atlas of {atlas.inventory.name}, the {len(units)} most used units, the most distinct "
             f"first (near-duplicates grouped). {atlas.window_seconds * 1000:.0f} ms windows centred on the unit's "
             f"frames over {atlas.sample_segments:,} sampled segments; contrast cells shown where {atlas.null}; "
             f"exemplars {atlas.centre}; run lengths; lift over the base rate")
    fig.suptitle(textwrap.fill(title, chars), fontsize=7.5, y=1 - 0.06 / height, va="top")
    return fig


def _time_axis(ax: plt.Axes, show: bool, label: str) -> None:
    if show:
        ax.tick_params(axis="x", labelsize=5.5, pad=1, length=2)
        ax.set_xlabel(label, fontsize=6, labelpad=1)
    else:
        ax.set_xticks([])


def unit_timeline_figure(spec: np.ndarray, mel: MelConfig, strips: list[tuple[str, np.ndarray, np.ndarray]],
                         spans: list[dict], recording: str, start_s: float, label_column: str | None,
                         model_id: str, zoom: tuple[int, int] | None = None) -> plt.Figure:
    """A recording's spectrogram with its frame-level unit sequences as colour strips beneath, and a
    zoom (frames [a, b)) where single frames are visible. strips: (name, units per frame with -1 for
    none, colours from `unit_colours`); spans: event labels with start_s/end_s in the recording."""
    seconds = spec.shape[1] * mel.frame_seconds
    block = [3.2] + [0.5] * len(strips) + ([0.42] if spans else [])
    zoomed = [2.4] + [0.5] * len(strips) if zoom else []
    heights = block + ([1.0] if zoom else []) + zoomed
    fig = plt.figure(figsize=(15, 1.1 + 0.62 * sum(heights)))
    grid = GridSpec(len(heights), 2, figure=fig, height_ratios=heights, width_ratios=[60, 1], hspace=0.14,
                    wspace=0.02, left=0.08, right=0.94, top=1 - 0.75 / (1.1 + 0.62 * sum(heights)), bottom=0.06)
    vmin, vmax = display_range([spec])
    axes = _timeline_block(fig, grid, 0, spec, mel, strips, spans, start_s, (0, spec.shape[1]), vmin, vmax,
                           label_column)
    axes[-1].set_xlabel("time in the recording (s)")
    if zoom:
        a, b = zoom
        axes[0].add_patch(plt.Rectangle((start_s + a * mel.frame_seconds, -0.5), (b - a) * mel.frame_seconds,
                                        mel.n_mels, fill=False, edgecolor="white", linewidth=1.5, linestyle="--"))
        lower = _timeline_block(fig, grid, len(block) + 1, spec, mel, strips, [], start_s, zoom, vmin, vmax,
                                label_column)
        lower[0].set_title(f"zoom: {(b - a) * mel.frame_seconds:.1f} s (dashed box above), one column per "
                           f"{1000 * mel.frame_seconds:.0f} ms frame; numbers name the units", fontsize=9, loc="left")
        lower[-1].set_xlabel("time in the recording (s)")
    image = axes[0].get_images()[0]
    bar = fig.colorbar(image, cax=fig.add_subplot(grid[0, 1]))
    bar.set_label("log-mel power\n(dB re mean power)", fontsize=8)
    fig.suptitle(f"{model_id}: unit timeline of {recording} ({seconds:.1f} s from {start_s:.1f} s). Strip colours "
                 "follow each inventory's similarity order (similar units, similar colours); white: no frame",
                 fontsize=10)
    return fig


def _timeline_block(fig: plt.Figure, grid: GridSpec, row0: int, spec: np.ndarray, mel: MelConfig,
                    strips: list[tuple[str, np.ndarray, np.ndarray]], spans: list[dict], start_s: float,
                    frames: tuple[int, int], vmin: float, vmax: float, label_column: str | None) -> list[plt.Axes]:
    a, b = frames
    t_a, t_b = start_s + a * mel.frame_seconds, start_s + b * mel.frame_seconds
    ax = fig.add_subplot(grid[row0, 0])
    ax.imshow(spec[:, a:b], origin="lower", aspect="auto", cmap=SPECTROGRAM_CMAP, vmin=vmin, vmax=vmax,
              extent=(t_a, t_b, -0.5, mel.n_mels - 0.5), interpolation="nearest")
    ticks, tick_labels = mel_ticks(mel, 5)
    ax.set_yticks(ticks)
    ax.set_yticklabels(tick_labels)
    ax.set_ylabel("frequency (kHz)")
    axes = [ax]
    for i, (name, seq, colours) in enumerate(strips):
        strip = fig.add_subplot(grid[row0 + 1 + i, 0], sharex=ax)
        part = seq[a:b]
        row = np.where(part >= 0, part, len(colours) - 1)
        strip.imshow(colours[row][None, :, :], aspect="auto", extent=(t_a, t_a + len(part) * mel.frame_seconds, 0, 1),
                     interpolation="nearest")
        strip.set_yticks([0.5])
        strip.set_yticklabels([name], fontsize=8)
        _annotate_runs(strip, part, t_a, mel.frame_seconds, colours)
        axes.append(strip)
    if spans:
        lane = fig.add_subplot(grid[row0 + 1 + len(strips), 0], sharex=ax)
        lane.set_ylim(0, 1)
        lane.set_yticks([0.5])
        lane.set_yticklabels([f"labels: {label_column}"], fontsize=8)
        for i, span in enumerate(spans):
            lo, hi = max(t_a, span["start_s"]), min(t_b, span["end_s"])
            if hi > lo:
                lane.axvspan(lo, hi, 0.1, 0.9, color=PALETTE[i % (len(PALETTE) - 1)], alpha=0.6)
                lane.text((lo + hi) / 2, 0.5, span["label"], ha="center", va="center", fontsize=7)
        axes.append(lane)
    for upper in axes[:-1]:
        upper.tick_params(axis="x", labelbottom=False)
    ax.set_xlim(t_a, t_b)
    return axes


def _annotate_runs(ax: plt.Axes, seq: np.ndarray, start_s: float, frame_s: float, colours: np.ndarray,
                   fontsize: float = 5.5) -> None:
    """Name the units of runs wide enough on the page to hold their number, in black on light colours
    and white on dark ones."""
    if len(seq) == 0:
        return
    fig = ax.figure
    width_pt = ax.get_position().width * fig.get_figwidth() * 72
    per_frame = width_pt / len(seq)
    edges = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1], True])
    for a, b in zip(edges[:-1], edges[1:]):
        unit = int(seq[a])
        if unit < 0 or (b - a) * per_frame < len(str(unit)) * 0.62 * fontsize + 3:
            continue
        r, g, blue, _ = colours[unit]
        ax.text(start_s + (a + b) / 2 * frame_s, 0.5, str(unit), ha="center", va="center", fontsize=fontsize,
                color="black" if 0.299 * r + 0.587 * g + 0.114 * blue > 0.5 else "white", fontweight="bold")


def sequence_figure(bigrams: np.ndarray, shown: list[int], rank_freqs: dict[str, np.ndarray],
                    bigram_freqs: np.ndarray | None, main_name: str, model_id: str) -> plt.Figure:
    """Left: P(next unit | unit) between runs of the shown units (similarity order). Right: rank-frequency
    of every inventory's units (and of the main inventory's bigrams) on log-log axes."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 6.2), gridspec_kw={"width_ratios": [1.1, 1]})
    sub = bigrams[np.ix_(shown, shown)].astype(np.float64)
    rows = bigrams[shown].sum(1, keepdims=True).astype(np.float64)  # every next unit, shown or not
    prob = np.where(rows > 0, sub / np.maximum(rows, 1), np.nan)
    highest = float(np.nanmax(prob)) if np.isfinite(prob).any() else 1.0
    image = left.imshow(prob, cmap="cividis", vmin=0, vmax=max(0.05, highest), interpolation="nearest")
    left.set_xticks(range(len(shown)))
    left.set_xticklabels(shown, fontsize=6, rotation=90)
    left.set_yticks(range(len(shown)))
    left.set_yticklabels(shown, fontsize=6)
    left.set_xlabel("next unit (runs merged: no self-transitions)")
    left.set_ylabel("unit")
    left.set_title(f"transitions between the most used {main_name}", fontsize=10)
    bar = fig.colorbar(image, ax=left, fraction=0.046, pad=0.02)
    bar.set_label("P(next unit | unit)")
    styles = ["-", "--", "-.", ":"]
    for i, (name, freqs) in enumerate(rank_freqs.items()):
        if len(freqs):
            share = freqs / freqs.sum()
            right.loglog(np.arange(1, len(freqs) + 1), share, color=PALETTE[i % (len(PALETTE) - 1)],
                         linestyle=styles[(i // (len(PALETTE) - 1)) % 4], marker=".", markersize=3,
                         label=f"{name} (slope {zipf_slope(freqs):.2f})")
    if bigram_freqs is not None and len(bigram_freqs):
        share = bigram_freqs / bigram_freqs.sum()
        right.loglog(np.arange(1, len(share) + 1), share, color="black", linestyle=":",
                     label=f"bigrams of {main_name} (slope {zipf_slope(bigram_freqs):.2f})")
    all_shares = [f / f.sum() for f in rank_freqs.values() if len(f)]
    if all_shares:
        top = max(s[0] for s in all_shares)
        ranks = np.arange(1, max(len(s) for s in all_shares) + 1)
        right.loglog(ranks, top / ranks, color="grey", linewidth=0.8, linestyle=(0, (1, 3)), label="Zipf's law (slope -1)")
    right.set_xlabel("rank")
    right.set_ylabel("share of frames (bigrams: of transitions)")
    right.set_title("rank-frequency of units (Zipf plot)", fontsize=10)
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{model_id}: unit sequence statistics", fontsize=12)
    fig.tight_layout()
    return fig


def unit_label_figure(counts: np.ndarray, units: list[int], labels: list[str], per_unit_purity: np.ndarray,
                      overall_purity: float, inventory_name: str, label_column: str, model_id: str) -> plt.Figure:
    """P(label | unit) for the shown units (rows), with each unit's labelled frames and purity."""
    sub = counts[units].astype(np.float64)
    totals = sub.sum(1, keepdims=True)
    prior = counts.sum(0) / max(1, counts.sum())  # every labelled frame of the sample, all units
    prob = np.where(totals > 0, sub / np.maximum(totals, 1), np.nan)
    fig, (ax, side) = plt.subplots(1, 2, figsize=(2.2 + 0.55 * len(labels) + 3.2, 1.2 + 0.24 * len(units)),
                                   gridspec_kw={"width_ratios": [max(1, len(labels)), 3.5], "wspace": 0.05},
                                   sharey=True)
    image = ax.imshow(prob, cmap="cividis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    for (r, c), p in np.ndenumerate(prob):
        if np.isfinite(p) and p >= 0.005:
            ax.text(c, r, f"{100 * p:.0f}", ha="center", va="center", fontsize=6,
                    color="black" if p > 0.6 else "white")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([f"{name[:18]} ({100 * p:.0f}%)" for name, p in zip(labels, prior)], rotation=45, ha="right",
                       fontsize=8)
    ax.set_yticks(range(len(units)))
    ax.set_yticklabels([f"unit {u}" for u in units], fontsize=7)
    ax.set_xlabel(f"label ({label_column}; % of all labelled frames)")
    ax.set_title("P(label | unit), % of the unit's labelled frames", fontsize=9)
    heights = totals[:, 0]
    side.barh(range(len(units)), per_unit_purity[units], color=PALETTE[0], height=0.7)
    side.axvline(prior.max() if len(prior) else 0, color=PALETTE[3], linestyle="--", linewidth=1,
                 label=f"majority label's share ({prior.max() if len(prior) else 0:.2f}): no better than guessing")
    side.set_xlim(0, 1)
    side.set_xlabel("purity (share of its top label)")
    for r, n in enumerate(heights):
        side.text(1.02, r, f"{int(n):,}", va="center", ha="left", fontsize=6, color="black", clip_on=False)
    side.set_title(f"purity (overall {overall_purity:.2f}); right: labelled frames", fontsize=9)
    side.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)
    side.grid(axis="x", alpha=0.3)
    fig.colorbar(image, ax=[ax, side], fraction=0.02, pad=0.06).set_label("P(label | unit)")
    fig.suptitle(f"{model_id}: {inventory_name} against '{label_column}' labels", fontsize=11)
    return fig
