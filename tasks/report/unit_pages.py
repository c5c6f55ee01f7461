"""One static page per atlas unit: listen beside the spectrogram.

    units/<inventory>-unit<U>.html       the page (opens from disk, relative links only)
    media/units/<inventory>/unit<U>-<j>.wav|png   exemplar j: the unit's run with a little context
    figures/units/<inventory>-unit<U>.png          the unit's signature (contrast and mean window)

Each exemplar is the unit's whole run around the exemplar frame plus CONTEXT_S either side, so a
20 ms unit is heard inside the sound it belongs to, and the run is marked on its spectrogram. The page
also says where the unit occurs (recordings, with lift over their share of frames), what follows it
(bigrams of runs, with lift over the next unit's base rate) and which labels, sites and hours it is
over-represented in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tasks.report.figures_units import (  # noqa: E402
    CONTRAST_CMAP,
    contrast_range,
    run_histogram,
    run_shares,
    shown_contrast,
)
from tasks.report.html import esc, href, prose, table_html, write_text_atomic  # noqa: E402
from tasks.report.sequence_stats import collapse_runs  # noqa: E402
from tasks.report.spectrograms import SPECTROGRAM_CMAP, display_range, mel_ticks, write_clip  # noqa: E402
from tasks.report.unit_atlas import AtlasUnit, UnitAtlas  # noqa: E402

UNITS_DIR = "units"
CONTEXT_S = 0.3  # audio either side of the run
MAX_RUN_S = 3.0  # a longer run is cut around the exemplar frame
TOP_ROWS = 8


def page_path(inventory_key: str, unit: int) -> str:
    """The page of a unit, relative to the report folder."""
    return f"{UNITS_DIR}/{inventory_key}-unit{unit}.html"


@dataclass
class ExemplarMedia:
    title: str  # recording and time of the run
    png: str  # relative to the report folder
    wav: str
    seconds: float  # clip length
    run: tuple[float, float]  # the run's share of the clip: (start, end) in 0..1
    run_ms: float


@dataclass
class UnitContext:
    """What the sequence sample says about one unit."""

    recordings: list[dict] = field(default_factory=list)
    following: list[dict] = field(default_factory=list)
    lift: dict[str, list[tuple[str, float, int]]] = field(default_factory=dict)


def run_bounds(seq: np.ndarray, frame: int, max_frames: int) -> tuple[int, int]:
    """[a, b) of the run of seq[frame]'s unit that holds `frame`, at most max_frames long, around it."""
    unit = seq[frame]
    a = frame
    while a > 0 and seq[a - 1] == unit and frame - a + 1 < max_frames // 2 + 1:
        a -= 1
    b = frame + 1
    while b < len(seq) and seq[b] == unit and b - a < max_frames:
        b += 1
    return a, b


def exemplar_media(out_dir: Path, atlas: UnitAtlas, unit: AtlasUnit, specs: dict[str, np.ndarray],
                   units: dict[str, np.ndarray], audio: dict[str, np.ndarray], where: dict[str, tuple[str, float]]
                   ) -> list[ExemplarMedia]:
    """The clip and spectrogram of each exemplar's run with CONTEXT_S either side. where: segment ->
    (recording file name, segment start in it, s)."""
    mel = atlas.mel
    context = max(1, int(round(CONTEXT_S / mel.frame_seconds)))
    folder = out_dir / "media" / "units" / atlas.inventory.key
    out = []
    for j, ex in enumerate(unit.exemplars):
        seq, spec, samples = units.get(ex.segment_id), specs.get(ex.segment_id), audio.get(ex.segment_id)
        if seq is None or spec is None or samples is None:
            continue
        a, b = run_bounds(seq, ex.frame, max(1, int(MAX_RUN_S / mel.frame_seconds)))
        first, last = max(0, a - context), min(spec.shape[1], b + context)
        start = max(0, first * mel.hop + mel.offset - mel.hop // 2)
        stop = min(len(samples), last * mel.hop + mel.offset - mel.hop // 2)
        if stop - start < mel.hop:
            continue
        stem = folder / f"unit{unit.unit}-{j + 1}"
        write_clip(stem.with_suffix(".wav"), samples[start:stop], mel.sample_rate)
        part = spec[:, first:last]
        vmin, vmax = display_range([spec])
        stem.parent.mkdir(parents=True, exist_ok=True)
        matplotlib.image.imsave(stem.with_suffix(".png"), np.repeat(part, 3, axis=0), cmap=SPECTROGRAM_CMAP,
                                vmin=vmin, vmax=vmax, origin="lower")
        name, offset = where.get(ex.segment_id, (ex.segment_id, 0.0))
        run_start = offset + (a * mel.hop + mel.offset - mel.hop // 2) / mel.sample_rate
        columns = last - first
        out.append(ExemplarMedia(
            f"{name} at {run_start:.2f} s", stem.with_suffix(".png").relative_to(out_dir).as_posix(),
            stem.with_suffix(".wav").relative_to(out_dir).as_posix(), (stop - start) / mel.sample_rate,
            ((a - first) / columns, (b - first) / columns), 1000 * (b - a) * mel.frame_seconds))
    return out


class SignatureFigure:
    """Each unit's contrast (cells beyond the null), mean window and run lengths, as one PNG.

    Laid out once per atlas and redrawn with each unit's data: a new figure and its layout per unit
    cost about 0.7 s on the 2-core machine, as much again as drawing it."""

    def __init__(self, atlas: UnitAtlas, limit: float):
        mel = atlas.mel
        half_ms = 1000 * atlas.half_width * mel.frame_seconds
        extent = (-half_ms, half_ms, -0.5, mel.n_mels - 0.5)
        ticks, labels = mel_ticks(mel, 5)
        self.atlas = atlas
        self.fig, axes = plt.subplots(1, 3, figsize=(9.5, 2.8), gridspec_kw={"width_ratios": [1, 1, 0.7]})
        blank = np.zeros((2, 2))
        self.contrast = axes[0].imshow(blank, origin="lower", aspect="auto", cmap=CONTRAST_CMAP, vmin=-limit,
                                       vmax=limit, extent=extent, interpolation="nearest")
        self.fig.colorbar(self.contrast, ax=axes[0], fraction=0.05, pad=0.02).set_label("dB vs every frame", fontsize=7)
        axes[0].set_title("contrast (white: not beyond chance)", fontsize=8)
        self.mean = axes[1].imshow(blank, origin="lower", aspect="auto", cmap=SPECTROGRAM_CMAP, extent=extent,
                                   interpolation="nearest")
        self.fig.colorbar(self.mean, ax=axes[1], fraction=0.05, pad=0.02).set_label("log-mel dB", fontsize=7)
        self.mean_axes = axes[1]
        for ax in axes[:2]:
            ax.axvline(0, color="black", linestyle=":", linewidth=0.7)
            ax.set_yticks(ticks)
            ax.set_yticklabels(labels, fontsize=7)
            ax.set_xlabel("ms from the unit's frame", fontsize=7)
            ax.tick_params(axis="x", labelsize=7)
        axes[0].set_ylabel("frequency (kHz)", fontsize=7)
        self.bars = run_histogram(axes[2], None, mel.frame_seconds, True)
        axes[2].set_title("run lengths (share of runs)", fontsize=8)
        self._show(atlas.units[0]) if atlas.units else None
        self.fig.tight_layout()

    def _show(self, unit: AtlasUnit) -> None:
        self.contrast.set_data(shown_contrast(unit.contrast, unit.significant) if unit.contrast is not None
                               else np.zeros((2, 2)))
        self.mean.set_data(unit.mean_window)
        self.mean.set_clim(*display_range([unit.mean_window]))
        self.mean_axes.set_title(f"mean window of {unit.occurrences:,} sampled frames", fontsize=8)
        for bar, share in zip(self.bars, run_shares(unit.run_lengths)):
            bar.set_height(share)
        self.fig.suptitle(f"{self.atlas.inventory.name}, unit {unit.unit}", fontsize=9)

    def save(self, out_dir: Path, unit: AtlasUnit) -> str:
        self._show(unit)
        path = out_dir / "figures" / UNITS_DIR / f"{self.atlas.inventory.key}-unit{unit.unit}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fig.savefig(path, dpi=110)
        return path.relative_to(out_dir).as_posix()

    def close(self) -> None:
        plt.close(self.fig)


def sequence_context(sequences: dict[str, np.ndarray], recording_of: dict[str, str], wanted: list[int],
                     frame_s: float) -> dict[int, UnitContext]:
    """Per wanted unit: the recordings holding most of its frames (with lift over their share of all
    frames) and the units that follow its runs (P(next | unit) and lift over the next unit's share of
    run starts)."""
    n = max([max(wanted, default=0)] + [int(s.max()) for s in sequences.values() if len(s)]) + 1
    names = sorted({recording_of.get(sid, sid) for sid in sequences})
    column = {name: i for i, name in enumerate(names)}
    per_recording = np.zeros((n, len(names)), np.int64)
    bigrams = np.zeros((n, n), np.int64)
    for sid, seq in sequences.items():
        if not len(seq):
            continue
        per_recording[:, column[recording_of.get(sid, sid)]] += np.bincount(seq.astype(np.int64), minlength=n)[:n]
        runs = collapse_runs(seq).astype(np.int64)
        if len(runs) > 1:
            np.add.at(bigrams, (runs[:-1], runs[1:]), 1)
    recording_share = per_recording.sum(0) / max(1, per_recording.sum())
    starts = bigrams.sum(0) / max(1, bigrams.sum())
    out = {}
    for u in wanted:
        total = per_recording[u].sum()
        top = np.argsort(-per_recording[u], kind="stable")[:TOP_ROWS]
        recordings = [{"recording": names[c], "frames of the unit": int(per_recording[u, c]),
                       "share of the unit's frames": round(per_recording[u, c] / total, 3),
                       "lift over the recording's share": round(per_recording[u, c] / total / recording_share[c], 2)}
                      for c in top if per_recording[u, c] > 0]
        after = bigrams[u].sum()
        following = [{"next unit": int(v), "transitions": int(bigrams[u, v]),
                      "P(next | unit)": round(bigrams[u, v] / after, 3),
                      "lift over its base rate": round(bigrams[u, v] / after / starts[v], 2) if starts[v] else None}
                     for v in np.argsort(-bigrams[u], kind="stable")[:TOP_ROWS] if bigrams[u, v] > 0]
        out[u] = UnitContext(recordings, following)
    return out


def lift_rows(lift: dict[str, list[tuple[str, float, int]]]) -> list[dict]:
    return [{"facet": facet, "value": value, "frames of the unit": frames, "lift over the base rate": round(ratio, 2)}
            for facet, rows in lift.items() for value, ratio, frames in rows[:TOP_ROWS]]


def unit_page_html(atlas: UnitAtlas, unit: AtlasUnit, model_id: str, signature: str, media: list[ExemplarMedia],
                   context: UnitContext, pages: dict[int, str], samples: int, warning: str | None = None,
                   extra=None) -> str:
    """The page, with every path relative to units/ (one folder below the report); `warning`, the
    report's verdict on a model that has not learned, stands above everything a reader might take
    for a finding."""
    up = "../"
    name = atlas.inventory.name
    twins = [u.unit for u in atlas.units if u.group == unit.group and u.unit != unit.unit]
    facts = [f"{unit.frames:,} frames ({100 * unit.share:.2f}% of all frames)",
             f"mean run {1000 * unit.mean_run_s:.0f} ms",
             (f"contrast {unit.distinctness:.1f} dB RMS over the cells beyond chance" if unit.distinctness
              else "no cell of its contrast is beyond chance: a unit of background or of nothing in particular")]
    if twins:
        facts.append("near-duplicates (almost the same contrast): "
                     + ", ".join(f'<a href="{href(pages[t].split("/")[-1])}">unit {t}</a>' if t in pages
                                 else f"unit {t}" for t in twins))
    cards = []
    for i, m in enumerate(media):
        left, right = 100 * m.run[0], 100 * (m.run[1] - m.run[0])
        cards.append(
            f'<figure class="exemplar" id="exemplar-{i + 1}">'
            f'<div class="exemplar-spec" title="Click to play" data-audio="clip-{i + 1}">'
            f'<img src="{href(up + m.png)}" alt="spectrogram of exemplar {i + 1}">'
            f'<span class="run-mark" style="left:{left:.2f}%;width:{max(right, 0.6):.2f}%"></span>'
            f'<span class="playhead"></span></div>'
            f'<audio id="clip-{i + 1}" controls preload="metadata" src="{href(up + m.wav)}"></audio>'
            f'<figcaption>{esc(m.title)}: run of {m.run_ms:.0f} ms (blue bar) in {m.seconds:.2f} s of audio; '
            f'0 to {atlas.mel.fmax / 1000:.1f} kHz, low at the bottom</figcaption></figure>')
    rows = lift_rows(context.lift or unit.lift)
    following = [dict(row, **{"next unit": f"unit {row['next unit']}"}) for row in context.following]
    links = {f"unit {v}": pages[v].split("/")[-1] for v in pages}
    following_html = table_html(following)
    for text, target in links.items():
        following_html = following_html.replace(f"<td>{text}</td>", f'<td><a href="{href(target)}">{text}</a></td>')
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(name)}, unit {unit.unit} · {esc(model_id)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="../assets/report.css">
</head>
<body class="unit-page">
<header class="masthead">
<p class="kicker"><a href="../index.html#sec-units">← report of {esc(model_id)}</a></p>
<h1>{esc(name)}: unit {unit.unit}</h1>
<p class="meta">{" · ".join(facts)}</p>
</header>
{f'<p class="verdict verdict-bad headline" role="note">{prose(warning)}</p>' if warning else ""}
<main>
<section id="listen"><h2>Listen and look</h2>
<p>Each exemplar is the unit's run around one of its most typical frames ({esc(atlas.centre)}), with
{1000 * CONTEXT_S:.0f} ms of context either side, peak-normalised. Click a spectrogram to play it.</p>
<div class="exemplars">{"".join(cards) or "<p>No exemplar with audio.</p>"}</div>
</section>
<section id="signature"><h2>Signature</h2>
<figure class="figure"><img src="{href(up + signature)}" alt="contrast, mean window and run lengths of unit {unit.unit}">
<figcaption>Left: the unit's mean log-mel window minus the mean window of every sampled frame, cells shown only
where {esc(atlas.null)}. Middle: the raw mean window. Right: how long its runs last.</figcaption></figure>
</section>
{features_html(extra, atlas.mel.fmax, up)}
<section id="where"><h2>Where it occurs</h2>
<p>Over {samples:,} sampled segments: the recordings holding most of its frames. A lift above 1 means
the unit is more common there than the recording's share of all frames would give.</p>
{table_html(context.recordings) or "<p>Not in the sample.</p>"}
</section>
<section id="follows"><h2>What follows it</h2>
<p>The unit that starts the next run (repeats merged), with the lift over that unit's share of all run starts.</p>
{following_html or "<p>No transition in the sample.</p>"}
</section>
<section id="labels"><h2>Labels, sites and hours it is over-represented in</h2>
<p>Lift: the share of the unit's frames with that value over the share of all frames with it; 1 is the base rate.</p>
{table_html(rows) or "<p>No labelled, sited or timed frame in the sample.</p>"}
</section>
</main>
<footer><p>{prose("Written by `ceta2vec report`. Every file this page shows lies in the report folder.")}</p></footer>
<script src="../assets/unit.js"></script>
</body>
</html>
"""


def features_html(extra, fmax: float, up: str) -> str:
    """The unit's maximising input (a player on its spectrogram) and its saliency map
    (tasks.report.features_report.UnitExtras), or why there are none."""
    if extra is None:
        return ""
    parts = ['<section id="responds"><h2>What excites it most</h2>']
    if extra.wav:
        compared = (f"; its best real exemplar reaches {extra.exemplar_activation:.4g}"
                    if extra.exemplar_activation is not None else "")
        parts.append(
            '<figure class="exemplar" id="maximiser">'
            '<div class="exemplar-spec" title="Click to play" data-audio="clip-max">'
            f'<img src="{href(up + extra.png)}" alt="spectrogram of the maximising input">'
            '<span class="playhead"></span></div>'
            f'<audio id="clip-max" controls preload="metadata" src="{href(up + extra.wav)}"></audio>'
            f"<figcaption>The sound optimised to make this unit fire ({extra.steps} optimiser steps): activation "
            f"{extra.activation:.4g}{compared}. 0 to {fmax / 1000:.1f} kHz, low at the bottom.</figcaption></figure>")
    if extra.saliency:
        parts.append(
            f'<figure class="figure" id="saliency"><img src="{href(up + extra.saliency)}" '
            'alt="saliency map of the best exemplar">'
            "<figcaption>Where the best exemplar makes the unit fire. Middle: the drop in the unit's activation "
            "when each patch of mel bands x time is silenced (red: the unit needs that patch; blue: the patch "
            "holds it back). Right: gradient x input of the waveform, per mel band and STFT frame. The shaded "
            "span is the audio the exemplar frame sees.</figcaption></figure>")
    if extra.note:
        parts.append(f"<p>{esc(extra.note[0].upper() + extra.note[1:])}.</p>")
    if len(parts) == 1:
        return ""
    return "\n".join(parts + ["</section>"])


def write_unit_pages(out_dir: Path, atlas: UnitAtlas, model_id: str, specs: dict[str, np.ndarray],
                     units: dict[str, np.ndarray], audio: dict[str, np.ndarray],
                     where: dict[str, tuple[str, float]], contexts: dict[int, UnitContext], samples: int,
                     warning: str | None = None, extras: dict | None = None) -> dict[int, str]:
    """A page per atlas unit; returns unit -> page path relative to out_dir."""
    pages = {u.unit: page_path(atlas.inventory.key, u.unit) for u in atlas.units}
    (out_dir / UNITS_DIR).mkdir(parents=True, exist_ok=True)
    figure = SignatureFigure(atlas, contrast_range([u.contrast for u in atlas.units]))
    try:
        for unit in atlas.units:
            media = exemplar_media(out_dir, atlas, unit, specs, units, audio, where)
            signature = figure.save(out_dir, unit)
            html = unit_page_html(atlas, unit, model_id, signature, media, contexts.get(unit.unit, UnitContext()),
                                  pages, samples, warning, (extras or {}).get(unit.unit))
            write_text_atomic(out_dir / pages[unit.unit], html)
    finally:
        figure.close()
    return pages
