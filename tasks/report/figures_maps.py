"""Figures of the embedding space: UMAP maps coloured by metadata, small multiples across layers, and a
nearest-neighbour gallery. Each function returns the matplotlib Figure; `tasks.report.figures.save` writes it."""

from __future__ import annotations

from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from tasks.catalog.recordings import SegmentInfo  # noqa: E402
from tasks.report.figures import PALETTE  # noqa: E402
from tasks.report.spectrograms import SPECTROGRAM_CMAP, MelConfig, display_range, mel_ticks  # noqa: E402

OTHER = "#BBBBBB"  # categories beyond the palette, drawn underneath in grey
MISSING = "#DDDDDD"
TOP_CATEGORIES = len(PALETTE)  # the eight Okabe-Ito colours, black included; the rest grey


def _short(text: str, width: int = 26) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def point_size(n: int) -> float:
    return float(np.clip(60 / np.sqrt(max(n, 1) / 50), 0.3, 40))


def categorical_colours(values: list[str], top: int = TOP_CATEGORIES,
                        missing_name: str = "unlabelled") -> tuple[list[str], list[tuple[str, str, int]]]:
    """A colour per point: the `top` most frequent values get palette colours, the rest grey; "" is
    missing. Also the legend entries (name, colour, count), most frequent first."""
    counts = Counter(v for v in values if v != "")
    named = sorted(counts, key=lambda v: (-counts[v], v))[:top]
    colour_of = {v: PALETTE[i] for i, v in enumerate(named)}
    colours = [colour_of.get(v, OTHER if v != "" else MISSING) for v in values]
    legend = [(v, colour_of[v], counts[v]) for v in named]
    others = sum(c for v, c in counts.items() if v not in colour_of)
    if others:
        rest = len(counts) - len(named)
        legend.append((f"{rest} other{'s' if rest > 1 else ''}", OTHER, others))
    missing = sum(1 for v in values if v == "")
    if missing:
        legend.append((missing_name, MISSING, missing))
    return colours, legend


def _scatter_categorical(ax: plt.Axes, coords: np.ndarray, values: list[str], title: str,
                         missing_name: str = "unlabelled", legend: bool = True) -> list[tuple[str, str, int]]:
    colours, entries = categorical_colours(values, missing_name=missing_name)
    colours = np.asarray(colours)
    size = point_size(len(coords))
    grey = np.isin(colours, [OTHER, MISSING])
    if grey.any():
        ax.scatter(coords[grey, 0], coords[grey, 1], s=size, c=colours[grey], linewidths=0, alpha=0.6, rasterized=True)
    # named categories in a seeded random order: drawn class by class, the last would hide the others
    named = np.random.default_rng(0).permutation(np.flatnonzero(~grey))
    if len(named):
        ax.scatter(coords[named, 0], coords[named, 1], s=size, c=colours[named], linewidths=0, alpha=0.85,
                   rasterized=True)
    _map_axes(ax, title)
    if legend and entries:
        _legend(ax, entries)
    return entries


def _legend(ax: plt.Axes, entries: list[tuple[str, str, int]], **kwargs) -> None:
    handles = [Line2D([], [], marker="o", linestyle="", color=c, markersize=6, label=f"{_short(name)} ({n})")
               for name, c, n in entries]
    ax.legend(handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              borderaxespad=0, handletextpad=0.3, **kwargs)


def _map_axes(ax: plt.Axes, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("UMAP 1 (arbitrary units)", fontsize=8)
    ax.set_ylabel("UMAP 2 (arbitrary units)", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def map_panels(coords: np.ndarray, info: SegmentInfo, clusters: np.ndarray, label_column: str | None, layer: int,
               model_id: str) -> plt.Figure:
    """One layer's UMAP coloured six ways: label, site, recording, time of day, k-means cluster, level."""
    fig, axes = plt.subplots(2, 3, figsize=(17, 10.5))
    axes = axes.ravel()
    n = len(coords)
    _scatter_categorical(axes[0], coords, info.label,
                         f"label: {label_column}" if label_column else "label (no labels in workspace)")
    _scatter_categorical(axes[1], coords, info.site, "site")
    _scatter_categorical(axes[2], coords, info.recording, "recording (file)")
    size = point_size(n)

    ax = axes[3]
    known = np.isfinite(info.hour_utc)
    # hollow markers: twilight's own ends (midnight) are near white, so grey dots would read as midnight
    ax.scatter(coords[~known, 0], coords[~known, 1], s=size, facecolors="none", edgecolors="#999999",
               linewidths=0.6, rasterized=True)
    if known.any():
        points = ax.scatter(coords[known, 0], coords[known, 1], s=size, c=info.hour_utc[known], cmap="twilight",
                            vmin=0, vmax=24, linewidths=0, rasterized=True)
        bar = fig.colorbar(points, ax=ax, fraction=0.046, pad=0.02, ticks=[0, 6, 12, 18, 24])
        bar.set_label("hour of day (UTC)", fontsize=8)
    _map_axes(ax, f"time of day ({int((~known).sum())} without a start time: hollow)" if (~known).any()
              else "time of day")

    _scatter_categorical(axes[4], coords, [f"cluster {c}" for c in clusters],
                         f"k-means cluster of layer-{layer} vectors (cosine)")

    ax = axes[5]
    points = ax.scatter(coords[:, 0], coords[:, 1], s=size, c=info.rms_dbfs, cmap="viridis", linewidths=0,
                        rasterized=True)
    bar = fig.colorbar(points, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label("segment RMS level (dBFS)", fontsize=8)
    _map_axes(ax, "level: does the map just sort loudness?")
    fig.suptitle(f"{model_id}, layer {layer}: UMAP of {n:,} mean-pooled segment vectors (cosine)", fontsize=13)
    fig.tight_layout()
    return fig


def layer_multiples(coords: dict[int, np.ndarray], values: list[str], colour_name: str,
                    agreement: dict[int, float], model_id: str, main_layer: int,
                    chance: float | None = None) -> plt.Figure:
    """The same segments mapped at every layer, coloured by one categorical (label or cluster); `chance`:
    the agreement random neighbours would reach, said in the title beside each layer's."""
    layers = sorted(coords)
    rows = int(np.ceil(len(layers) / 5))
    columns = int(np.ceil(len(layers) / rows))
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns + 2.2, 3.6 * rows + 0.6), squeeze=False)
    entries = []
    for ax, layer in zip(axes.ravel(), layers):
        name = "conv encoder" if layer == 0 else f"transformer {layer}"
        score = agreement.get(layer, float("nan"))
        title = f"layer {layer} ({name})" + ("  [main]" if layer == main_layer else "")
        if np.isfinite(score):
            title += f"\nneighbour {colour_name} agreement {score:.2f}"
        entries = _scatter_categorical(ax, coords[layer], values, title, legend=False)
        ax.title.set_fontsize(9)
    for ax in axes.ravel()[len(layers):]:
        ax.axis("off")
    if entries:
        _legend(axes[0, -1], entries)
    level = f"\n(random neighbours would agree {chance:.2f})" if chance is not None and np.isfinite(chance) else ""
    fig.suptitle(f"{model_id}: where does structure emerge? Each layer's UMAP, coloured by {colour_name}{level}",
                 fontsize=12)
    fig.tight_layout()
    return fig


def neighbour_gallery(rows: list[dict], specs: dict[str, np.ndarray], mel: MelConfig, model_id: str,
                      layer: int) -> plt.Figure:
    """Each row: a query segment's spectrogram, then its nearest segments with cosine distances.
    rows: [{"query": {segment_id, recording, start_s, label}, "neighbours": [{... , distance, same_recording}]}]"""
    columns = 1 + max((len(r["neighbours"]) for r in rows), default=0)
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.5 * columns, 2.3 * len(rows) + 0.6), squeeze=False)
    ticks, tick_labels = mel_ticks(mel, 4)
    longest = max((specs[c["segment_id"]].shape[1] for row in rows for c in [row["query"]] + row["neighbours"]),
                  default=1) * mel.frame_seconds
    for r, row in enumerate(rows):
        cells = [dict(row["query"], distance=None)] + row["neighbours"]
        for c in range(columns):
            ax = axes[r, c]
            if c >= len(cells):
                ax.axis("off")
                continue
            cell = cells[c]
            spec = specs[cell["segment_id"]]
            vmin, vmax = display_range([spec])
            seconds = spec.shape[1] * mel.frame_seconds
            ax.imshow(spec, origin="lower", aspect="auto", cmap=SPECTROGRAM_CMAP, vmin=vmin, vmax=vmax,
                      extent=(0, seconds, -0.5, mel.n_mels - 0.5), interpolation="nearest")
            head = ("QUERY" if c == 0 else f"#{c}  d = {cell['distance']:.3f}"
                    + ("  (same rec.)" if cell.get("same_recording") else ""))
            where = f"{_short(cell['recording'], 24)} @{cell['start_s']:.0f} s"
            ax.set_title(f"{head}\n{where}\n{_short(cell.get('label') or '—', 24)}", fontsize=7.5,
                         color="black" if c else PALETTE[3], fontweight="bold" if c == 0 else "normal")
            ax.set_yticks(ticks if c == 0 else [])
            if c == 0:
                ax.set_yticklabels(tick_labels, fontsize=7)
                ax.set_ylabel("frequency (kHz)", fontsize=8)
            ax.set_xlim(0, longest)  # one time scale: short segments look short
            ax.tick_params(axis="x", labelsize=7)
            if r == len(rows) - 1:
                ax.set_xlabel("time (s)", fontsize=8)
            if c == 0:
                for side in ax.spines.values():
                    side.set_color(PALETTE[3])
                    side.set_linewidth(2)
    fig.suptitle(f"{model_id}, layer {layer}: nearest segments by cosine distance of mean-pooled vectors "
                 "(log-mel, each panel scaled to its own range)", fontsize=11)
    fig.tight_layout()
    return fig
