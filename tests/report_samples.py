"""Synthetic report content with real files (PNG, SVG, WAV) for the HTML and browser tests.

Hostile names are part of the data on purpose: a recording, a label, a site and a clip file named
like markup must come out as text.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from tasks.report.content import AudioClip, ExplorerData, FigureRef, ReportContent, ReportSection  # noqa: E402

HOSTILE = '<img src=x onerror="window.__pwned=1">'
HOSTILE_WAV = HOSTILE + ".wav"
LABELS = ["orca", "humpback", HOSTILE, "sperm whale", ""]
SITES = ["LK", "<b>Haro</b> & co", ""]


def _figure(path_stem: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for c, colour in enumerate(["#0072B2", "#E69F00", "#009E73"]):
        xy = rng.normal(c * 2.0, 0.6, size=(80, 2))
        ax.scatter(xy[:, 0], xy[:, 1], s=6, color=colour, label=f"class {c}")
    ax.set_title(f"synthetic figure {seed}")
    ax.legend(fontsize=7)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_stem.with_suffix(".png"), dpi=80, bbox_inches="tight")
    fig.savefig(path_stem.with_suffix(".svg"), bbox_inches="tight")
    plt.close(fig)


def _thumbnail(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = rng.random((32, 96)) * np.linspace(1, 0.2, 32)[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, image, cmap="magma", origin="lower")


def _wav(path: Path, freq: float) -> None:
    t = np.arange(int(0.4 * 8000)) / 8000
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 8000)


def explorer_data(n: int, out_dir: Path | None, media: int = 12, layers: tuple[int, ...] = (1, 2), k: int = 6,
                  seed: int = 0) -> ExplorerData:
    """n segments in a few blobs; the first `media` get a thumbnail and a clip (written under out_dir)."""
    rng = np.random.default_rng(seed)
    label_idx = rng.integers(0, len(LABELS), n)
    recordings = [HOSTILE_WAV if i % 7 == 0 else f"rec-{i % 50:03d}.wav" for i in range(n)]
    coords, neighbours, distances = {}, {}, {}
    for layer in layers:
        centres = rng.normal(0, 6, size=(len(LABELS), 2))
        xy = (centres[label_idx] + rng.normal(0, 1.0, size=(n, 2))).astype(np.float32)
        xy[0] = xy[:, 0].max() + 3, xy[:, 1].max() + 3  # segment 0 alone in a corner: easy to point at
        coords[layer] = xy
        # neighbours: the k closest in the same blob (exact on small n, a cheap stand-in on large n)
        if n <= 3000:
            d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
            order = np.argsort(d2, axis=1)[:, 1:k + 1]
            nb = order.astype(np.int32)
            dist = np.sqrt(np.take_along_axis(d2, order, 1)).astype(np.float32) / 20
        else:
            nb = ((np.arange(n)[:, None] + np.arange(1, k + 1)[None, :] * 5) % n).astype(np.int32)
            dist = np.sort(rng.random((n, k)).astype(np.float32) * 0.5, axis=1)
        nb[-1, -1] = -1  # "no neighbour" must be handled
        dist[-1, -1] = np.nan
        neighbours[layer], distances[layer] = nb, dist
    thumbnails, audio = [""] * n, [""] * n
    for i in range(min(media, n)):
        thumbnails[i] = f"media/thumb {i:03d}.png"
        audio[i] = f"media/clip {i:03d}#.wav"
        if out_dir is not None:
            _thumbnail(out_dir / thumbnails[i], i)
            _wav(out_dir / audio[i], 300 + 40 * i)
    return ExplorerData(
        segment_id=[f"seg-{i:06d}" for i in range(n)], recording=recordings,
        site=[SITES[i % len(SITES)] for i in range(n)],
        start_time=[f"2025-07-01T12:{(i // 60) % 60:02d}:{i % 60:02d}Z" if i % 3 else "" for i in range(n)],
        start_s=(np.arange(n) % 30 * 2.0).astype(np.float64), label=[LABELS[j] for j in label_idx],
        cluster=(label_idx % 4).astype(np.int64), coords=coords, neighbours=neighbours, distances=distances,
        thumbnail=thumbnails, audio=audio, label_column="species", main_layer=layers[-1],
    )


def report_content(out_dir: Path, n: int = 400) -> ReportContent:
    """A complete report: two sections with figures (names with spaces and '#'), clips (one named like markup), tables."""
    _figure(out_dir / "figures" / "umap layers #1", 1)
    _figure(out_dir / "figures" / "unit atlas", 2)
    _wav(out_dir / "media" / HOSTILE_WAV, 440)
    _wav(out_dir / "media" / "unit 3 ex 1.wav", 660)
    sections = [
        ReportSection(
            key="maps", title="What the layers separate",
            intro="Each point is a segment.\n\nColours are labels; " + HOSTILE + " must stay text.",
            figures=[FigureRef("umap-layers", "UMAP of every layer", "Clusters by species appear from layer 2.",
                               "figures/umap layers #1.png", "figures/umap layers #1.svg")],
            tables=[[{"layer": 1, "segments": 400, "knn5": 0.51234, "label": HOSTILE},
                     {"layer": 2, "segments": 400, "knn5": 0.8, "label": "orca"}]],
        ),
        ReportSection(
            key="units", title="Unit atlas <layer 2>",
            intro="The most used units and what they sound like.",
            figures=[FigureRef("unit-atlas", "Unit atlas, layer 2", "Rows are units.",
                               "figures/unit atlas.png", "figures/unit atlas.svg")],
            clips=[AudioClip(f"unit 7, exemplar 1: {HOSTILE_WAV} 12.3 s", f"media/{HOSTILE_WAV}", "hostile name"),
                   AudioClip("unit 3, exemplar 1: Lpod.wav 4.0 s", "media/unit 3 ex 1.wav")],
        ),
    ]
    return ReportContent(
        title="ceta2vec report: synthetic", model_id="synth@1", generated_at="2025-07-01T12:00:00Z",
        summary=[{"item": "recordings", "value": 50}, {"item": "segments", "value": n},
                 {"item": "hours", "value": 0.123456}, {"item": "sites", "value": ", ".join(SITES)},
                 {"item": "worst file", "value": HOSTILE_WAV}],
        configuration={"pretraining": {"preset": "tiny", "steps_per_chunk": 30, "learning_rate": 5e-4},
                       "model": {f"field_{i}": i for i in range(40)} | {"conv_kernel": [10, 3, 3]},
                       "report": {"max_points": 100000, "label_column": "species", "note": HOSTILE}},
        sections=sections, explorer=explorer_data(n, out_dir),
    )
