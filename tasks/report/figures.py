"""Figures (matplotlib, PNG and SVG, colour-blind-safe palette)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402

# Okabe–Ito: distinguishable with every common colour-vision deficiency.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
BASELINE_STYLES = {"log-mel stats": ("#E69F00", "--"), "MFCC stats": ("#009E73", ":"),
                   "random weights (best layer)": ("#D55E00", "-.")}


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    # bbox_inches="tight" lays the figure out once more per file just to measure it: measured once
    # here, the one box serves both files
    fig.draw_without_rendering()
    box = fig.get_tightbbox().padded(plt.rcParams["savefig.pad_inches"])
    fig.savefig(paths[0], dpi=150, bbox_inches=box)
    fig.savefig(paths[1], bbox_inches=box)
    plt.close(fig)
    return paths


def evaluation_figure(rows: list[dict], label_column: str, model_id: str, stem: Path,
                      metrics: tuple[str, ...] = ("knn5_macro_f1", "probe_macro_f1", "mean_average_precision")) -> list[Path]:
    """Each metric against layer for the model (95% bootstrap intervals), baselines as lines."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), sharey=True)
    model_rows = sorted((r for r in rows if r["kind"] == "model" and r["features"].startswith("layer ")),
                        key=lambda r: r["layer"])
    for ax, metric in zip(axes, metrics):
        layers = [r["layer"] for r in model_rows]
        values = [r["metrics"][metric][0] for r in model_rows]
        low = [max(0.0, v - (r["metrics"][metric][1] if r["metrics"][metric][1] == r["metrics"][metric][1] else v))
               for v, r in zip(values, model_rows)]
        high = [max(0.0, (r["metrics"][metric][2] if r["metrics"][metric][2] == r["metrics"][metric][2] else v) - v)
                for v, r in zip(values, model_rows)]
        ax.errorbar(layers, values, yerr=[low, high], color=PALETTE[0], marker="o", capsize=3, label=model_id)
        for row in rows:
            if row["kind"] == "baseline" and row["features"] in BASELINE_STYLES and metric in row["metrics"]:
                colour, style = BASELINE_STYLES[row["features"]]
                ax.axhline(row["metrics"][metric][0], color=colour, linestyle=style, label=row["features"])
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("layer (0 = conv encoder)")
        ax.set_xticks(layers)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"score for '{label_column}' (0–1)")
    axes[0].set_ylim(0, 1.02)
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{model_id}: which layer separates '{label_column}'? (splits by recording)")
    return save(fig, stem)
