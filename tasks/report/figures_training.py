"""Figures of training health: loss curves and the codebook (perplexity, unused codes, usage)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tasks.report.figures import PALETTE  # noqa: E402


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean (shorter windows at the ends)."""
    values = np.asarray(values, np.float64)
    if window <= 1 or len(values) < 3:
        return values
    kernel = np.ones(window)
    sums = np.convolve(np.nan_to_num(values), kernel, mode="same")
    counts = np.convolve(np.isfinite(values).astype(float), kernel, mode="same")
    return sums / np.maximum(counts, 1)


def _window(n: int) -> int:
    return max(1, n // 25)


def _curve(ax: plt.Axes, steps: np.ndarray, values: np.ndarray, colour: str, label: str, style: str = "-") -> None:
    ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
    ax.plot(steps, smooth(values, _window(len(values))), color=colour, linestyle=style, linewidth=1.8, label=label)


def _mark_checkpoint(ax: plt.Axes, step: int | None) -> None:
    if step is not None:
        ax.axvline(step, color="black", linestyle=":", linewidth=1)


def training_curves_figure(metrics: dict[str, np.ndarray], checkpoint_step: int | None, run: str,
                           diversity_weight: float | None = None, distractors: int | None = None) -> plt.Figure:
    """Loss (total, contrastive, weighted diversity), masked-prediction accuracy, learning rate and
    Gumbel temperature, gradient norm; the embedded checkpoint as a dotted line."""
    steps = metrics["step"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True)
    ax = axes[0, 0]
    _curve(ax, steps, metrics["loss"], PALETTE[0], "total loss")
    _curve(ax, steps, metrics["contrastive_loss"], PALETTE[1], "contrastive loss", "--")
    weight = diversity_weight if diversity_weight is not None else 1.0
    _curve(ax, steps, weight * metrics["diversity_loss"], PALETTE[2],
           f"diversity loss × {weight:g}" if diversity_weight is not None else "diversity loss", "-.")
    ax.set_ylabel("loss (nats per masked frame)")
    ax.set_title("pretraining loss (faint: per step; bold: running mean)", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    _curve(ax, steps, metrics["accuracy"], PALETTE[0], "masked-prediction accuracy")
    if distractors:
        ax.axhline(1 / (distractors + 1), color=PALETTE[3], linestyle="--", linewidth=1,
                   label=f"chance (1 in {distractors + 1})")
        ax.legend(fontsize=8, loc="upper left")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy (true target ranked first)")
    ax.set_title("masked-frame prediction accuracy", fontsize=10)
    ax = axes[1, 0]
    ax.plot(steps, metrics["learning_rate"], color=PALETTE[0], label="learning rate")
    ax.set_ylabel("learning rate", color=PALETTE[0])
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    twin = ax.twinx()
    twin.plot(steps, metrics["temperature"], color=PALETTE[3], linestyle="--", label="Gumbel temperature")
    twin.set_ylabel("Gumbel temperature", color=PALETTE[3])
    ax.set_title("schedules: learning rate (solid), Gumbel temperature (dashed)", fontsize=10)
    ax.set_xlabel("optimiser step")
    ax = axes[1, 1]
    _curve(ax, steps, metrics["grad_norm"], PALETTE[4], "gradient norm")
    if np.all(metrics["grad_norm"][np.isfinite(metrics["grad_norm"])] > 0) and len(steps):
        ax.set_yscale("log")
    ax.set_ylabel("gradient norm (before clipping)")
    ax.set_title("gradient norm", fontsize=10)
    ax.set_xlabel("optimiser step")
    for a in axes.ravel():
        _mark_checkpoint(a, checkpoint_step)
        a.grid(alpha=0.3)
    fig.suptitle(f"run '{run}': training curves ({len(steps)} steps"
                 + (f"; dotted: the embedded checkpoint, step {checkpoint_step})" if checkpoint_step is not None else ")"),
                 fontsize=12)
    fig.tight_layout()
    return fig


def codebook_health_figure(metrics: dict[str, np.ndarray], codes_per_group: int | None,
                           usage: dict[int, np.ndarray], checkpoint_step: int | None, model_id: str) -> plt.Figure:
    """Codevector perplexity per group and unused-code share over training, and how often each code
    is used in the embedded data (sorted), per group."""
    steps = metrics["step"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    perplexity = metrics["perplexity"]
    for g in range(perplexity.shape[1] if perplexity.ndim == 2 else 0):
        _curve(ax, steps, perplexity[:, g], PALETTE[g % (len(PALETTE) - 1)], f"group {g}", ["-", "--", "-.", ":"][g % 4])
    if codes_per_group:
        ax.axhline(codes_per_group, color="black", linestyle=":", linewidth=1, label=f"all {codes_per_group} codes")
        collapse = max(2.0, 0.02 * codes_per_group)
        ax.axhline(collapse, color=PALETTE[3], linestyle="--", linewidth=1, label=f"collapse warning ({collapse:g})")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("codevector perplexity (codes in effective use)")
    ax.set_title("perplexity per codebook group, per batch", fontsize=10)
    ax.legend(fontsize=8, loc="center right")
    ax = axes[1]
    _curve(ax, steps, 100 * metrics["unused_code_share"], PALETTE[3], "unused codes")
    ax.set_ylim(0, 100)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("codes unused in the batch (%)")
    ax.set_title("unused-code share over training", fontsize=10)
    for a in axes[:2]:
        _mark_checkpoint(a, checkpoint_step)
        a.grid(alpha=0.3)
    ax = axes[2]
    for g, counts in sorted(usage.items()):
        size = max(len(counts), codes_per_group or 0)
        full = np.zeros(size)
        full[: len(counts)] = np.sort(np.asarray(counts, np.float64))[::-1]
        share = 100 * full / max(full.sum(), 1)
        unused = int((full == 0).sum())
        ax.step(np.arange(1, size + 1), share, where="mid", color=PALETTE[g % (len(PALETTE) - 1)],
                linestyle=["-", "--", "-.", ":"][g % 4], label=f"group {g}: {unused} of {size} codes never used")
    if codes_per_group:
        ax.axhline(100 / codes_per_group, color="black", linestyle=":", linewidth=1, label="uniform use")
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("share of embedded frames (%)")
    ax.set_title(f"code usage in the embedded data ({model_id})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(f"{model_id}: codebook health of the quantizer", fontsize=12)
    fig.tight_layout()
    return fig
