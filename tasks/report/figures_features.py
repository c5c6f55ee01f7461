"""Figures of what the filters and units respond to: the learned filterbank beside the mel filterbank
and the random-weight twin, attention maps per layer and head, maximising inputs and saliency maps."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import librosa  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tasks.report.figures import PALETTE  # noqa: E402
from tasks.report.filterbank import Filterbank  # noqa: E402
from tasks.report.saliency import SaliencyMap  # noqa: E402
from tasks.report.spectrograms import SPECTROGRAM_CMAP, MelConfig, display_range  # noqa: E402

RESPONSE_CMAP = "viridis"
SALIENCY_CMAP = "RdBu_r"
ATTENTION_CMAP = "Greys"


def _heat(ax, fb: Filterbank, layer: int, title: str):
    db, _ = fb.sorted_db(layer)
    khz = fb.sample_rate / 2000
    image = ax.imshow(db, origin="lower", aspect="auto", cmap=RESPONSE_CMAP, vmin=-40, vmax=0,
                      extent=(0, khz, -0.5, len(db) - 0.5), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("tone frequency (kHz)", fontsize=7)
    ax.tick_params(labelsize=7)
    return image


def filterbank_figure(trained: Filterbank, random: Filterbank, spectrum_db: np.ndarray, model_id: str,
                      n_mels: int = 64):
    """Mel filterbank | first layer trained | first layer at random init | peak frequencies vs the audio."""
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), gridspec_kw={"width_ratios": [1, 1, 1, 1.2]})
    n_fft = 2 * (len(trained.freqs) - 1)  # as many columns as tone bins, 0..Nyquist
    mel = librosa.filters.mel(sr=trained.sample_rate, n_fft=n_fft, n_mels=n_mels)
    mel = mel / np.maximum(mel.max(1, keepdims=True), 1e-12)
    khz = trained.sample_rate / 2000
    axes[0].imshow(20 * np.log10(np.maximum(mel, 1e-2)), origin="lower", aspect="auto", cmap=RESPONSE_CMAP,
                   vmin=-40, vmax=0, extent=(0, khz, -0.5, n_mels - 0.5), interpolation="nearest")
    axes[0].set_title(f"mel filterbank ({n_mels} bands), for comparison", fontsize=8)
    axes[0].set_xlabel("frequency (kHz)", fontsize=7)
    axes[0].set_ylabel("band / channel (sorted by peak)", fontsize=7)
    axes[0].tick_params(labelsize=7)
    _heat(axes[1], trained, 0, f"conv layer 1 of {model_id}")
    image = _heat(axes[2], random, 0, "conv layer 1, random weights")
    fig.colorbar(image, ax=axes[2], fraction=0.05, pad=0.02).set_label("dB of the channel's peak", fontsize=7)
    ax = axes[3]
    edges = np.linspace(0, trained.sample_rate / 2, 33)
    for fb, name, colour in ((trained, "trained", PALETTE[0]), (random, "random weights", PALETTE[3])):
        peaks = np.concatenate([fb.peaks(i) for i in range(len(fb.responses))])
        ax.hist(peaks / 1000, bins=edges / 1000, histtype="step", color=colour, linewidth=1.4,
                weights=np.full(len(peaks), 1 / max(1, len(peaks))), label=f"{name}: peaks of all conv channels")
    ax.set_xlabel("frequency (kHz)", fontsize=7)
    ax.set_ylabel("share of channels", fontsize=7)
    ax.tick_params(labelsize=7)
    twin = ax.twinx()
    if np.isfinite(spectrum_db).any():
        twin.plot(trained.freqs / 1000, spectrum_db, color="black", linestyle=":", linewidth=1,
                  label="the workspace audio (dB)")
    twin.set_ylabel("audio power (dB)", fontsize=7)
    twin.tick_params(labelsize=7)
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=6, loc="upper right")
    ax.set_title("peak frequencies vs the audio's spectrum", fontsize=8)
    fig.tight_layout()
    return fig


def filterbank_layers_figure(trained: Filterbank, random: Filterbank, model_id: str):
    """Every conv layer's channels, sorted by peak frequency: trained above, random weights below."""
    n = len(trained.responses)
    fig, axes = plt.subplots(2, n, figsize=(2.0 * n + 1, 4.6), squeeze=False)
    image = None
    for i in range(n):
        image = _heat(axes[0, i], trained, i, f"layer {i + 1}, trained")
        _heat(axes[1, i], random, i, f"layer {i + 1}, random weights")
    axes[0, 0].set_ylabel("channel (sorted)", fontsize=7)
    axes[1, 0].set_ylabel("channel (sorted)", fontsize=7)
    fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01).set_label("dB of the channel's peak",
                                                                                     fontsize=7)
    fig.suptitle(f"Frequency response of every feature-encoder channel, {model_id}", fontsize=9)
    return fig


def attention_figure(maps: np.ndarray, summary: list[dict], title: str, max_heads: int = 12):
    """A small map per layer (rows) and head (columns), each titled with the head's class."""
    layers, heads = maps.shape[:2]
    heads = min(heads, max_heads)
    fig, axes = plt.subplots(layers, heads, figsize=(1.25 * heads + 0.5, 1.3 * layers + 0.6), squeeze=False)
    kind = {(r["layer"], r["head"]): r for r in summary}
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer, head]
            a = maps[layer, head]
            ax.imshow(a, cmap=ATTENTION_CMAP, vmin=0, vmax=max(1e-6, float(np.quantile(a, 0.995))),
                      interpolation="nearest")
            row = kind[(layer + 1, head)]
            ax.set_title(f"L{layer + 1} h{head}: {row['class']}\nR² {row['offset R²']:.2f}", fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[layer, 0].set_ylabel("query frame", fontsize=6)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig


def head_class_figure(trained: list[dict], random: list[dict], model_id: str):
    """Offset R² against entropy for every head, trained and random weights."""
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    for rows, name, colour, marker in ((trained, model_id, PALETTE[0], "o"), (random, "random weights", PALETTE[3], "x")):
        ax.scatter([r["entropy (1 = uniform)"] for r in rows], [r["offset R²"] for r in rows], s=18, c=colour,
                   marker=marker, label=name)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.axvline(0.95, color="grey", linestyle=":", linewidth=0.8)
    ax.text(0.02, 0.97, "positional", transform=ax.transAxes, fontsize=7, va="top")
    ax.text(0.02, 0.03, "content", transform=ax.transAxes, fontsize=7)
    ax.text(0.97, 0.5, "diffuse", transform=ax.transAxes, fontsize=7, ha="right", rotation=90)
    ax.set_xlabel("attention entropy (1 = spread evenly)", fontsize=7)
    ax.set_ylabel("offset R² (1 = depends on offset only)", fontsize=7)
    ax.set_ylim(-0.05, 1.05)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="center left")
    fig.tight_layout()
    return fig


def maximiser_gallery(items: list[tuple[str, np.ndarray]], sample_rate: int, seconds: float, columns: int = 6):
    """Log-magnitude spectrograms (F, T) of maximising inputs, one panel each."""
    rows = max(1, int(np.ceil(len(items) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 1.7 * rows + 0.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, spec) in zip(axes.ravel(), items):
        ax.axis("on")
        db = 20 * spec / np.log(10)
        ax.imshow(db, origin="lower", aspect="auto", cmap=SPECTROGRAM_CMAP, vmin=db.max() - 60, vmax=db.max(),
                  extent=(0, seconds, 0, sample_rate / 2000), interpolation="nearest")
        ax.set_title(title, fontsize=7)
        ax.tick_params(labelsize=6)
    axes[-1, 0].set_xlabel("s", fontsize=6)
    axes[-1, 0].set_ylabel("kHz", fontsize=6)
    fig.tight_layout()
    return fig


def saliency_figure(spec: np.ndarray, mel: MelConfig, occlusion: SaliencyMap | None, gradient: SaliencyMap | None,
                    title: str, frames: tuple[int, int]):
    """The exemplar's log-mel spectrogram; occlusion saliency over it; gradient x input per mel band."""
    panels = 1 + (occlusion is not None) + (gradient is not None)
    fig, axes = plt.subplots(1, panels, figsize=(3.4 * panels, 2.7), squeeze=False)
    axes = axes[0]
    t0 = (mel.offset - mel.hop / 2) / mel.sample_rate
    extent = (t0, t0 + spec.shape[1] * mel.frame_seconds, -0.5, mel.n_mels - 0.5)
    vmin, vmax = display_range([spec])
    mark = ((frames[0] * mel.hop) / mel.sample_rate, (frames[1] * mel.hop + mel.receptive_field) / mel.sample_rate)
    axes[0].imshow(spec, origin="lower", aspect="auto", cmap=SPECTROGRAM_CMAP, vmin=vmin, vmax=vmax, extent=extent,
                   interpolation="nearest")
    axes[0].set_title("exemplar (log-mel)", fontsize=8)
    i = 1
    for sal in (occlusion, gradient):
        if sal is None:
            continue
        ax = axes[i]
        i += 1
        ax.imshow(spec, origin="lower", aspect="auto", cmap="Greys", vmin=vmin, vmax=vmax, extent=extent,
                  interpolation="nearest", alpha=0.5)
        limit = max(1e-12, float(np.abs(sal.values).max()))
        rows = sal.values.shape[0]
        ax.imshow(sal.values, origin="lower", aspect="auto", cmap=SALIENCY_CMAP, vmin=-limit, vmax=limit,
                  extent=(sal.time_edges_s[0], sal.time_edges_s[-1], -0.5, mel.n_mels - 0.5), alpha=0.75,
                  interpolation="nearest")
        ax.set_title(f"{sal.method}: red = makes the unit fire" if rows else sal.method, fontsize=8)
    ticks = np.linspace(0, mel.n_mels - 1, 5)
    labels = [f"{f / 1000:.1f}" for f in mel.centres_hz()[ticks.astype(int)]]
    for ax in axes:
        ax.axvspan(*mark, color=PALETTE[5], alpha=0.12, linewidth=0)
        ax.set_yticks(ticks)
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_xlabel("s", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("frequency (kHz)", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig
