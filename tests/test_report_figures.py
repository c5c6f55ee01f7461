"""Report figures and data: unit atlas on tones with a known answer, kNN and UMAP maps, the figures'
panels, sequence statistics, build_report_content on a tiny real workspace, and its pages in a real
headless Chromium (the verdict on the first screen, a unit page playing its clip).

Screenshots go to docs/ for the README: docs/report-verdict.png (the first screen of index.html) and
docs/unit-page.png (a unit page after its first clip was played)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import headless_chromium
import numpy as np
import pytest
import soundfile as sf
from signals import noise, tone

from schemas.settings import ReportSettings
from tasks.catalog.recordings import SegmentInfo
from tasks.catalog.units import UnitInventory
from tasks.report.figures import save
from tasks.report.figures_maps import layer_multiples, map_panels, neighbour_gallery
from tasks.report.figures_training import codebook_health_figure, training_curves_figure
from tasks.report.figures_units import (
    sequence_figure,
    unit_atlas_figure,
    unit_colours,
    unit_label_figure,
    unit_timeline_figure,
)
from tasks.report.sequence_stats import (
    bigram_counts,
    collapse_runs,
    purity,
    rank_frequency,
    unit_label_counts,
    zipf_slope,
)
from tasks.report.spectrograms import frame_windows, log_mel, mel_config
from tasks.report.umap_maps import exact_cosine_knn, layer_map, neighbour_agreement
from tasks.report.unit_atlas import build_unit_atlas
from tasks.report.verdict import build_verdict, report_title, training_verdict
from tasks.workspace import Workspace, database

RATE, HOP, FIELD = 16000, 320, 400
DOCS = Path(__file__).resolve().parents[1] / "docs"


def tone_segments(n: int = 4, seconds: float = 4.0):
    """Segments with a 1 kHz tone in [0.5, 1.5) s and a 3 kHz tone in [2.5, 3.5) s over quiet noise;
    frames whose audio lies inside a tone are units 1 and 2, every other frame unit 0."""
    mel = mel_config(RATE, HOP, FIELD)
    specs, units, labels = {}, {}, {}
    for i in range(n):
        x = noise(seconds, RATE, 0.005, seed=i)
        for f, (a, b) in ((1000, (0.5, 1.5)), (3000, (2.5, 3.5))):
            x[int(a * RATE):int(b * RATE)] += tone(f, b - a, RATE, 0.3)
        frames = (len(x) - FIELD) // HOP + 1
        centre_s = (np.arange(frames) * HOP + FIELD / 2) / RATE
        seq = np.zeros(frames, np.int16)
        seq[(centre_s >= 0.55) & (centre_s < 1.45)] = 1
        seq[(centre_s >= 2.55) & (centre_s < 3.45)] = 2
        sid = f"seg{i}"
        specs[sid], units[sid], labels[sid] = log_mel(x, mel), seq, "tonal" if i % 2 == 0 else "also tonal"
    return mel, specs, units, labels


def test_mel_columns_align_with_model_frames():
    mel, specs, units, _ = tone_segments(1)
    spec, seq = specs["seg0"], units["seg0"]
    assert spec.shape[0] == 64 and spec.shape[1] >= len(seq)
    centres = mel.centres_hz()
    loud_band = spec[:, : len(seq)].argmax(0)
    # frames assigned to the 1 kHz unit are loudest near 1 kHz; the 3 kHz unit's near 3 kHz
    assert np.all(np.abs(centres[loud_band[seq == 1]] - 1000) < 150)
    assert np.all(np.abs(centres[loud_band[seq == 2]] - 3000) < 300)
    windows = frame_windows(spec, np.array([0, 5]), 3)
    assert windows.shape == (2, 64, 7) and np.isnan(windows[0, :, :3]).all() and np.isfinite(windows[1]).all()


def test_unit_atlas_average_peaks_at_the_tone_frequency(tmp_path):
    mel, specs, units, labels = tone_segments()
    inventory = UnitInventory("kmeans", 1, 0, 3)
    atlas = build_unit_atlas(inventory, specs, units, mel, labels=labels, top=3, n_exemplars=3, half_width=10)
    by_unit = {u.unit: u for u in atlas.units}
    assert set(by_unit) == {0, 1, 2} and sorted(atlas.order) == [0, 1, 2]
    centres = mel.centres_hz()
    for unit, freq, tolerance in ((1, 1000, 100), (2, 3000, 250)):
        window = by_unit[unit].mean_window
        assert window.shape == (64, 21)
        peak = int(np.nanargmax(window[:, 10]))  # the assigned frame's column
        assert abs(centres[peak] - freq) < tolerance, (unit, centres[peak])
        assert by_unit[unit].occurrences == int(sum((u == unit).sum() for u in units.values()))
        # exemplars: one per segment, nearest the mean window, and tonal themselves
        assert len({e.segment_id for e in by_unit[unit].exemplars}) == 3
        for e in by_unit[unit].exemplars:
            assert units[e.segment_id][e.frame] == unit
            assert abs(centres[int(np.nanargmax(e.window[:, 10]))] - freq) < tolerance
    # the contrast (unit mean minus the mean of every frame) of each tone unit peaks at its own tone, beyond
    # the shifted-label null there, and the two signatures differ: each is quiet where the other is loud
    peak = {}
    for unit, freq, tolerance in ((1, 1000, 100), (2, 3000, 250)):
        u = by_unit[unit]
        column = np.where(u.significant[:, 10], u.contrast[:, 10], -np.inf)
        peak[unit] = int(np.argmax(column))
        assert abs(centres[peak[unit]] - freq) < tolerance, (unit, centres[peak[unit]])
        assert u.contrast[peak[unit], 10] > 20 and u.distinctness > 3
        assert u.exemplars[0].in_unit[10] and u.exemplars[0].in_unit.dtype == bool
        assert list(u.run_lengths) == [45] * 4  # one 0.9-s run per segment
    assert by_unit[1].contrast[peak[2], 10] < 0 and by_unit[2].contrast[peak[1], 10] < 0
    assert np.corrcoef(by_unit[1].contrast.ravel(), by_unit[2].contrast.ravel())[0, 1] < 0.5
    assert by_unit[1].group != by_unit[2].group
    # the most distinct units come first, the background last
    assert [u.unit for u in atlas.units][-1] == 0 and by_unit[0].distinctness < by_unit[2].distinctness
    # the background unit's average has no tonal peak at the assigned frame
    background = by_unit[0].mean_window[:, 10]
    assert np.nanmax(background) < np.nanmax(by_unit[1].mean_window[:, 10]) - 20
    assert {name for name, _ in by_unit[1].labels} == {"tonal", "also tonal"}
    assert abs(sum(share for _, share in by_unit[1].labels) - 1) < 1e-9

    fig = unit_atlas_figure(atlas, "test@1")
    titles = [ax.get_title() for ax in fig.axes]
    assert sum(t.startswith("unit ") for t in titles) == 3
    assert len(fig.axes) == 3 * (1 + 3 + 1 + 1) + 2  # contrast, exemplars, runs, text per unit; two colour bars
    png, svg = save(fig, tmp_path / "atlas")
    assert png.stat().st_size > 10_000 and svg.stat().st_size > 10_000


def test_unit_lift_is_over_the_base_rate():
    from tasks.report.unit_atlas import unit_lift

    units = {"a": np.array([0, 0, 1, 1]), "b": np.array([0, 0, 0, 0]), "c": np.array([1, 1, 1, 1]), "d": np.array([2])}
    lift = unit_lift(units, {"a": "orca", "b": "orca", "c": "humpback", "d": ""}, [0, 1], min_frames=1)
    # 12 labelled frames, 8 orca: unit 0 (6 frames, all orca) is 1.5x the orca base rate; unit 1 (6 frames,
    # 2 orca and 4 humpback) is 3/3 * ... humpback 4/6 over 4/12 = 2x
    assert lift[0] == [("orca", 1.5, 6)]
    assert lift[1][0] == ("humpback", 2.0, 4) and lift[1][1][0] == "orca" and abs(lift[1][1][1] - 0.5) < 1e-9


def test_verdict_says_chance_or_which_layer_beats_which_baseline():
    steps = np.arange(1, 21.0)
    at_chance = {"step": steps, "loss": np.full(20, 3.1), "contrastive_loss": np.full(20, 3.0),
                 "diversity_loss": np.full(20, 0.1), "accuracy": np.full(20, 0.057),
                 "unused_code_share": np.full(20, 0.1), "perplexity": np.full((20, 2), 150.0)}
    config = {"num_negatives": 20, "num_codevectors_per_group": 320, "num_codevector_groups": 2}
    health = training_verdict(at_chance, config, "tiny@3", step=20)
    assert health["verdict"] == "at chance" and abs(health["chance"] - 1 / 21) < 1e-12
    rows = [{"kind": "model", "features": f"layer {k}", "layer": k,
             "metrics": {"knn5_macro_f1": (v, v - 0.03, v + 0.03)}} for k, v in ((1, 0.15), (2, 0.17))]
    rows += [{"kind": "baseline", "features": "log-mel stats", "layer": None,
              "metrics": {"knn5_macro_f1": (0.29, 0.26, 0.32)}},
             {"kind": "baseline", "features": "random weights (best layer)", "layer": None,
              "metrics": {"knn5_macro_f1": (0.22, 0.19, 0.25)}}]
    verdict = build_verdict(health, [("group 0", 40, 320)], ("species", rows, {"orca": 53, "humpback": 47}))
    assert verdict.level == "bad" and "at chance" in verdict.headline and "not yet meaningful" in verdict.headline
    assert any("does not beat log-mel" in d for d in verdict.details)
    assert report_title("tiny@3", verdict) == "Report of tiny@3: at chance, no finding yet"
    accuracy = verdict.training[0]
    assert accuracy["value"] == 0.057 and "0.048" in accuracy["chance or limit"]
    assert verdict.scorecard[-1]["features"].startswith("chance") and verdict.scorecard[1]["5-NN macro-F1"].startswith(
        "0.170 [0.140, 0.200]")

    learning = dict(at_chance, accuracy=np.full(20, 0.4), contrastive_loss=np.full(20, 1.5))
    rows[1]["metrics"]["knn5_macro_f1"] = (0.37, 0.34, 0.40)
    verdict = build_verdict(training_verdict(learning, config, "big@9"), [], ("species", rows, {"a": 5, "b": 5, "c": 5}))
    assert verdict.level == "good" and verdict.best_layer == 2
    assert verdict.headline == ("For 'species': layer 2 beats log-mel by 0.08 5-NN macro-F1 (0.37 vs 0.29; "
                                "the intervals do not overlap).")
    assert report_title("big@9", verdict) == "What big@9 learned"
    rows[1]["metrics"]["knn5_macro_f1"] = (0.31, 0.27, 0.35)  # above log-mel, intervals overlapping
    verdict = build_verdict(training_verdict(learning, config, "big@9"), [], ("species", rows, {"a": 5, "b": 5, "c": 5}))
    assert verdict.level == "warn" and "not a clear win" in verdict.headline
    assert report_title("big@9", verdict) == "Report of big@9"


def test_umap_and_pynndescent_kernels_are_cached_on_disk_before_they_compile():
    # without numba's cache every report process compiles them again (11-40 s on 2 cores)
    from numba.core.caching import NullCache

    from tasks.report.jit_cache import cached_umap

    umap = cached_umap()
    import pynndescent.distances

    kernels = (umap.umap_.smooth_knn_dist, umap.umap_.compute_membership_strengths, pynndescent.distances.euclidean)
    assert all(not isinstance(kernel._cache, NullCache) for kernel in kernels)


def test_exact_knn_umap_and_neighbours_without_self():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 32)) * 3
    n = 300
    truth = np.repeat(np.arange(3), n // 3)
    x = (centres[truth] + rng.standard_normal((n, 32))).astype(np.float32)
    x[1] = x[0]  # an exact duplicate
    idx, dist = exact_cosine_knn(x, 9, block=128)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    reference = 1 - u @ u.T
    np.fill_diagonal(reference, -1)
    ref_order = np.argsort(reference, axis=1, kind="stable")[:, :9]
    assert np.all(idx[:, 0] == np.arange(n))
    assert np.allclose(np.sort(dist, 1), np.sort(np.take_along_axis(np.maximum(reference, 0), ref_order, 1), 1),
                       atol=1e-5)

    m = layer_map(x, 2, neighbours=8, umap_neighbors=10, seed=0)
    assert m.coords.shape == (n, 2) and np.isfinite(m.coords).all() and m.exact_knn and m.method == "umap"
    assert m.neighbours.shape == (n, 8) and not np.any(m.neighbours == np.arange(n)[:, None])
    assert m.neighbours[0, 0] == 1 and m.distances[0, 0] < 1e-5  # the duplicate comes first, self never
    assert np.all(np.diff(m.distances, axis=1) >= -1e-6)
    assert neighbour_agreement(m.neighbours, [str(t) for t in truth]) > 0.97
    # the map keeps the clusters apart: each point's 10 nearest on the map share its cluster
    on_map = ((m.coords[:, None, :] - m.coords[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(on_map, np.inf)
    map_idx = np.argsort(on_map, axis=1)[:, :10]
    assert np.mean(truth[map_idx] == truth[:, None]) > 0.95
    again = layer_map(x, 2, neighbours=8, umap_neighbors=10, seed=0)
    assert np.array_equal(again.coords, m.coords)  # seeded
    # the approximate graph (n > EXACT_MAX) is measured in bench/report.py: pynndescent's JIT compile
    # alone takes most of a minute on 2 cores


def test_sequence_statistics():
    assert collapse_runs(np.array([3, 3, 1, 1, 1, 3])).tolist() == [3, 1, 3]
    counts = bigram_counts([np.array([0, 0, 1, 1, 2]), np.array([2, 1])], 3)
    assert counts.tolist() == [[0, 1, 0], [0, 0, 1], [0, 1, 0]]
    assert bigram_counts([np.array([0, 0, 1])], 2, collapse=False).tolist() == [[1, 1], [0, 0]]
    freqs = 1000 / np.arange(1, 40)
    assert abs(zipf_slope(freqs) + 1) < 1e-9 and rank_frequency([0, 5, 9, 1]).tolist() == [9, 5, 1]
    table, names = unit_label_counts({"a": np.array([0, 0, 1]), "b": np.array([1, 1]), "c": np.array([0])},
                                     {"a": "x", "b": "y"}, 2)
    assert names == ["x", "y"] and table.tolist() == [[2, 0], [1, 2]]
    per_unit, overall = purity(table)
    assert per_unit.tolist() == [1.0, 2 / 3] and overall == 4 / 5


def synthetic_info(n: int, rng) -> SegmentInfo:
    labels = rng.choice(["orca", "humpback", "", "sperm whale"], n).tolist()
    hours = rng.uniform(0, 24, n)
    hours[:5] = np.nan
    return SegmentInfo(
        segment_id=[f"s{i}" for i in range(n)], recording_id=[f"r{i % 9}" for i in range(n)],
        recording=[f"rec_{i % 9}.wav" for i in range(n)], site=rng.choice(["A", "B"], n).tolist(),
        start_time=["" if np.isnan(h) else "2024-01-01T00:00:00Z" for h in hours], hour_utc=hours,
        start_s=rng.uniform(0, 100, n), valid_s=np.full(n, 10.0), rms_dbfs=rng.uniform(-60, -10, n).astype(np.float32),
        label=labels)


def test_figures_have_their_panels(tmp_path):
    rng = np.random.default_rng(1)
    n = 300
    info = synthetic_info(n, rng)
    coords = rng.standard_normal((n, 2)).astype(np.float32)
    fig = map_panels(coords, info, rng.integers(0, 5, n), "species", 3, "m@1")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:6] == ["label: species", "site", "recording (file)", "time of day (5 without a start time: hollow)",
                          "k-means cluster of layer-3 vectors (cosine)", "level: does the map just sort loudness?"]
    assert len(fig.axes) == 8  # six maps and two colour bars
    legend = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    assert len(legend) == 9 and legend[-1] == "1 other (33)"  # 8 named recordings, the rest pooled
    paths = save(fig, tmp_path / "map")
    assert all(p.stat().st_size > 10_000 for p in paths)

    fig = layer_multiples({0: coords, 1: coords, 2: coords}, info.label, "label (species)", {0: 0.4, 1: 0.5, 2: 0.9},
                          "m@1", 2)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titled) == 3 and "[main]" in titled[2] and "agreement 0.90" in titled[2]

    steps = np.arange(50.0)
    metrics = {"step": steps, "chunk": steps // 10, "loss": 3 - steps / 50, "contrastive_loss": 2.9 - steps / 50,
               "diversity_loss": np.full(50, 0.5), "accuracy": steps / 100, "grad_norm": np.full(50, 2.0),
               "learning_rate": np.full(50, 1e-4), "temperature": np.linspace(2, 0.5, 50),
               "perplexity": np.c_[np.linspace(5, 40, 50), np.linspace(4, 30, 50)], "unused_code_share": np.full(50, 0.2)}
    fig = training_curves_figure(metrics, 50, "run", 0.1, 20)
    assert len(fig.axes) == 5  # four panels and the temperature's twin axis
    assert any("chance" in t.get_text() for t in fig.axes[1].get_legend().get_texts())
    fig = codebook_health_figure(metrics, 64, {0: np.arange(1, 60.0), 1: np.arange(1, 64.0)}, 50, "m@1")
    assert len(fig.axes) == 3
    assert "5 of 64 codes never used" in fig.axes[2].get_legend().get_texts()[0].get_text()

    bigrams = rng.integers(0, 5, (10, 10))
    fig = sequence_figure(bigrams, [3, 1, 2], {"a": np.array([10.0, 5, 2])}, np.array([4.0, 2, 1]), "units", "m@1")
    assert len(fig.axes) == 3 and fig.axes[0].get_xlabel().startswith("next unit")
    fig = unit_label_figure(rng.integers(0, 20, (10, 3)), [0, 4, 2], ["x", "y", "z"], np.full(10, 0.5), 0.5,
                            "units", "species", "m@1")
    assert len(fig.axes) == 3

    mel = mel_config(RATE, HOP, FIELD)
    specs = {f"s{i}": rng.normal(-40, 5, (64, 100 + 10 * i)).astype(np.float32) for i in range(4)}
    cell = lambda i: {"segment_id": f"s{i}", "recording": "rec.wav", "start_s": 0.0, "label": "x"}  # noqa: E731
    rows = [{"query": cell(0), "neighbours": [dict(cell(j), distance=0.1 * j, same_recording=j == 1) for j in (1, 2, 3)]}]
    fig = neighbour_gallery(rows, specs, mel, "m@1", 2)
    assert len(fig.axes) == 4 and "same rec." in fig.axes[1].get_title()

    spec = rng.normal(-40, 5, (64, 500)).astype(np.float32)
    seq = np.repeat(np.arange(10), 50)
    fig = unit_timeline_figure(spec, mel, [("k-means L1", seq, unit_colours(list(range(10)), 10))],
                               [{"label": "call", "start_s": 2.0, "end_s": 4.0}], "rec.wav", 0.0, "sound", "m@1",
                               zoom=(100, 180))
    names = [ax.get_yticklabels()[0].get_text() for ax in fig.axes if len(ax.get_yticklabels()) == 1]
    assert names.count("k-means L1") == 2 and "labels: sound" in names  # strip in the full view and the zoom
    paths = save(fig, tmp_path / "timeline")
    assert all(p.stat().st_size > 10_000 for p in paths)


# --- build_report_content on the tiny real workspace, and its pages in Chromium -------------------


@pytest.fixture(scope="module")
def scored_report(tiny_workspace, tmp_path_factory):
    """A copy of the shared tiny workspace scored for 'sound' with the evaluate functions (layers,
    log-mel and MFCC baselines), its report content built into a folder that holds a stale figure and
    someone else's index.html, then its pages written: (workspace, out, content, progress, the
    index.html the build left)."""
    from tasks.catalog.evaluations import labelled_segments, write_evaluations
    from tasks.catalog.recordings import segment_refs
    from tasks.embedding.run import read_audio
    from tasks.evaluation.run import baseline_features, model_vectors, score_features
    from tasks.report.build import build_report_content
    from tasks.report.explorer_page import write_explorer
    from tasks.report.html import write_report

    root = tmp_path_factory.mktemp("scored")
    shutil.copytree(tiny_workspace.root, root / "ws")
    ws = Workspace.at(root / "ws")
    with database.writing(ws) as conn:
        labelled = labelled_segments(conn, "sound", None)
        model_id, layers = conn.execute("SELECT model_id, layers FROM embedding_models").fetchone()
        labelled = labelled.restricted_to({r[0] for r in conn.execute(
            "SELECT DISTINCT segment_id FROM embedded_segments WHERE model_id = ?", [model_id]).fetchall()})
        rows = [{"kind": "model", "features": f"layer {layer}", "layer": layer,
                 "metrics": score_features(model_vectors(conn, model_id, layer, labelled.segment_ids), labelled, 0, 20)}
                for layer in range(layers)]
        audio = read_audio(segment_refs(conn, ws, labelled.segment_ids))
        rows += [{"kind": "baseline", "features": name, "layer": None, "metrics": score_features(x, labelled, 0, 20)}
                 for name, x in baseline_features(audio, 16000).items()]
        write_evaluations(conn, "eval-browser", "sound", model_id, rows, labelled)
    out = root / "report"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "stale.png").write_bytes(b"old")
    (out / "index.html").write_text("kept")  # not ours: the HTML writer's
    seen = []
    settings = SCORED.model_copy(update={"workspace": str(ws.root)})
    content = build_report_content(ws, settings, out, lambda message, fraction: seen.append(fraction))
    left = (out / "index.html").read_text()
    write_report(content, out)
    write_explorer(content, out)
    return ws, out, content, seen, left


SCORED = ReportSettings(media_points=5, atlas_units=4, exemplars=3, neighbours=3, umap_neighbors=5, features_budget=4)


def best_layer(ws: Workspace) -> int:
    with database.reading(ws) as conn:
        return conn.execute("SELECT layer FROM evaluations WHERE kind = 'model' AND metric = 'knn5_macro_f1' "
                            "ORDER BY value DESC, layer LIMIT 1").fetchone()[0]


def test_build_report_content_on_a_tiny_workspace(scored_report):
    ws, out, content, seen, left = scored_report
    main = best_layer(ws)  # scored: the report opens on the best layer, and its units are that layer's
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    assert not (out / "figures" / "stale.png").exists() and left == "kept"
    assert content.model_id == "rep@1"
    keys = [s.key for s in content.sections]
    assert keys == ["maps", "units", "features", "timeline", "training", "learning-curve", "neighbours", "sequences", "labels"]
    # one checkpoint scored: the learning curve says how to get one, and draws nothing yet
    curve = next(s for s in content.sections if s.key == "learning-curve")
    assert not curve.figures and "--all-checkpoints" in curve.intro
    features = next(s for s in content.sections if s.key == "features")
    assert {"filterbank", "filterbank-layers", "attention-maps", "attention-heads", "maximising-inputs"} == \
        {f.key for f in features.figures}
    figures = [f for s in content.sections for f in s.figures]
    assert {f"umap-layer{main}", "umap-layers", f"unit-atlas-kmeans-layer{main}", "unit-atlas-codevector-g0",
            "unit-atlas-codevector-g1", "unit-timeline", "training-curves", "codebook-health", "neighbour-gallery",
            "unit-sequences", f"unit-labels-kmeans-layer{main}"} <= {f.key for f in figures}
    for f in figures:
        assert (out / f.png).stat().st_size > 5_000 and (out / f.svg).stat().st_size > 5_000, f.key
    assert not [c for s in content.sections for c in s.clips]  # listening moved to the unit pages
    units_section = content.sections[1]
    links = units_section.links
    assert {link.group for link in links} >= {f"k-means units of layer {main}", "quantizer codevectors, group 0"}
    for link in links:
        page = (out / link.href).read_text()
        assert link.href.startswith("units/") and "<audio" in page and "../assets/unit.js" in page
        media = re.findall(r'(?:src|href)="\.\./((?:media|figures)/[^"]+)"', page)
        assert media and all((out / unquote(src)).is_file() for src in media), (link.href, media)
    wavs = sorted((out / "media" / "units").rglob("*.wav"))
    assert wavs and all(sf.info(str(w)).duration < 4.0 for w in wavs)  # the run and a little context, not a segment
    assert content.verdict is not None and content.verdict.training
    assert content.title == report_title("rep@1", content.verdict)
    labels_section = content.sections[-1]
    assert labels_section.tables and {"unit", "purity", "top label"} <= set(labels_section.tables[0][0])

    e = content.explorer
    n = len(e.segment_id)
    assert n == 12 and e.label_column == "sound"
    for column in (e.recording, e.site, e.start_time, e.start_s, e.label, e.cluster, e.thumbnail, e.audio):
        assert len(column) == n
    assert set(e.label) <= {"tone", "clicks", "clicks + whistle"} and "clicks + whistle" in e.label
    assert sorted(e.coords) == [0, 1, 2] and sorted(e.neighbours) == [0, 1, 2]
    for layer in e.coords:
        assert e.coords[layer].shape == (n, 2) and np.isfinite(e.coords[layer]).all()
        nbr, dist = e.neighbours[layer], e.distances[layer]
        assert nbr.shape == (n, 3) and dist.shape == (n, 3) and nbr.dtype == np.int32
        assert np.all((nbr >= 0) & (nbr < n)) and not np.any(nbr == np.arange(n)[:, None])
        assert np.all(np.diff(dist, axis=1) >= -1e-6) and np.all(dist >= 0)
    media = [i for i, t in enumerate(e.thumbnail) if t]
    assert len(media) == 5 and all(e.audio[i] for i in media)
    assert all((out / e.thumbnail[i]).stat().st_size > 100 and (out / e.audio[i]).stat().st_size > 1_000 for i in media)
    assert all(e.thumbnail[i] == "" and e.audio[i] == "" for i in range(n) if i not in media)
    assert content.configuration["report"]["resolved"]["layer"] == main
    assert content.configuration["model"]["transformer layers"] == 2  # the fields that matter, not the whole config
    assert "model_config" not in content.configuration and "layerdrop" not in str(content.configuration)
    # building again into the same folder leaves the same files: test_report_flow.py's re-run


def test_clear_errors_for_a_missing_model_layer_or_embeddings(tiny_workspace, tmp_path, workspace):
    from tasks.report.build import build_report_content

    ws = tiny_workspace
    with pytest.raises(database.WorkspaceError, match="no embedding model 'nope@1'.*rep@1"):
        build_report_content(ws, ReportSettings(workspace=str(ws.root), model="nope@1"), tmp_path / "a")
    with pytest.raises(database.WorkspaceError, match="layers 0, 1, 2, not layer 7"):
        build_report_content(ws, ReportSettings(workspace=str(ws.root), layer=7), tmp_path / "b")
    with pytest.raises(database.WorkspaceError, match="no segment has a 'mood' label"):
        build_report_content(ws, ReportSettings(workspace=str(ws.root), label_column="mood"), tmp_path / "c")
    workspace.create()
    with database.writing(workspace) as conn:
        database.apply_schema(conn, workspace)
    with pytest.raises(database.WorkspaceError, match="no embeddings"):
        build_report_content(workspace, ReportSettings(workspace=str(workspace.root)), tmp_path / "d")


def test_without_an_evaluation_the_middle_layer_is_shown_and_maps_are_seeded(tiny_workspace):
    from tasks.report.build import compute_maps, resolve_scope

    settings = SCORED.model_copy(update={"workspace": str(tiny_workspace.root)})
    scope = resolve_scope(tiny_workspace, settings)
    assert (scope.layer, scope.layer_reason) == (1, "middle layer (no evaluation of this model)")
    assert scope.layers == [0, 1, 2] and scope.embedded == len(scope.ids) == 12
    first, clusters = compute_maps(tiny_workspace, scope, settings)
    again, clusters_again = compute_maps(tiny_workspace, scope, settings)
    for layer in scope.layers:  # the same settings, the same map: a re-drawn report shows the same picture
        assert np.array_equal(first[layer].coords, again[layer].coords)
        assert np.array_equal(first[layer].neighbours, again[layer].neighbours)
    assert np.array_equal(clusters, clusters_again)


@pytest.fixture()
def driver(tmp_path):
    browser = headless_chromium.start(tmp_path / "profile", 1400, 900)
    yield browser
    browser.quit()


def _wait(driver, script: str, seconds: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(lambda d: d.execute_script(script))


def test_the_verdict_and_the_scorecard_are_on_the_first_screen(scored_report, driver):
    _, out, content, _, _ = scored_report
    verdict = content.verdict
    assert verdict is not None and verdict.scorecard and verdict.figure is not None
    driver.get((out / "index.html").as_uri())
    _wait(driver, "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)")
    screen = driver.execute_script("return window.innerHeight")
    box = driver.execute_script(
        "var e = document.querySelector('#verdict .headline'); var r = e.getBoundingClientRect();"
        "return {top: r.top, bottom: r.bottom, text: e.textContent}")
    assert box["bottom"] < screen and " ".join(box["text"].split()) == verdict.headline.replace("`", "")
    # the scorecard's sentence on log-mel, read beside its baseline, is on the first screen too
    lines = driver.execute_script(
        "return Array.from(document.querySelectorAll('#verdict li')).map(li => [li.textContent, "
        "li.getBoundingClientRect().bottom])")
    log_mel = [(text, bottom) for text, bottom in lines if "log-mel" in text]
    assert log_mel and log_mel[0][1] < screen, lines
    title = driver.find_element("css selector", "h1").text
    assert title == content.title and title.startswith("What ") == (verdict.level == "good")
    # every training figure beside its chance level; the scorecard figure is in the report folder and loads
    tables = driver.execute_script(
        "return Array.from(document.querySelectorAll('#verdict table')).map(t => [t.querySelector('caption')"
        ".textContent, t.getBoundingClientRect().top, t.textContent])")
    assert tables[0][0].startswith("Scorecard") and tables[0][1] < screen  # the scorecard starts on the first screen
    assert "baseline: log-mel stats" in tables[0][2] and "chance: always the commonest label" in tables[0][2]
    assert "chance 0.0" in tables[1][2] and "ln(K+1)" in tables[1][2]
    image = driver.execute_script(
        "var i = document.querySelector('#verdict figure img'); return [i.getAttribute('src'), i.naturalWidth]")
    assert image[0] == verdict.figure.png and image[0].startswith("figures/") and image[1] > 0
    text = driver.execute_script("return document.body.innerText")
    assert "`" not in text and "&#x27;" not in text
    assert "same colour by chance" in text  # neighbour agreement is printed beside its chance level
    DOCS.mkdir(exist_ok=True)
    headless_chromium.screenshot(driver, DOCS / "report-verdict.png")
    assert headless_chromium.severe(driver) == []


def test_a_unit_page_plays_its_clip_beside_its_spectrogram(scored_report, driver):
    _, out, content, _, _ = scored_report
    # the report's own section on what the filters and units respond to, its figures loaded
    driver.get((out / "index.html").as_uri())
    _wait(driver, "return document.readyState === 'complete'")
    assert driver.execute_script("return document.querySelector('#sec-features h2').textContent") == \
        "What the filters and units respond to"
    shown = driver.execute_script("return Array.from(document.querySelectorAll('#sec-features figure img'))"
                                  ".map(i => i.complete && i.naturalWidth > 0)")
    assert len(shown) >= 4 and all(shown)
    units = next(s for s in content.sections if s.key == "units")
    assert units.links and not units.clips  # pages instead of hundreds of folded players
    driver.get((out / "index.html").as_uri())
    link = driver.find_element("css selector", ".unit-links a")
    expected = Path(unquote(urlparse(link.get_attribute("href")).path))
    assert expected.parent == out / "units" and expected.is_file()
    link.click()
    _wait(driver, "return document.readyState === 'complete' && window.ceta2vecUnitPage")
    assert Path(unquote(urlparse(driver.current_url).path)) == expected
    assert driver.execute_script("return window.ceta2vecUnitPage.clips") >= 1
    # the first exemplar: its spectrogram has loaded and its audio sits in the same card, loadable
    _wait(driver, "var i = document.querySelector('.exemplar img'); return i.complete && i.naturalWidth > 0")
    src = driver.execute_script("return document.querySelector('.exemplar audio').src")
    assert src.endswith(".wav") and Path(unquote(urlparse(src).path)).is_file()
    _wait(driver, "var a = document.querySelector('.exemplar audio'); return a.readyState >= 1 && a.duration > 0")
    duration = driver.execute_script("return document.querySelector('.exemplar audio').duration")
    assert 0.2 < duration < 4.0  # the unit's run and a little context
    assert driver.execute_script("return document.querySelector('.exemplar audio').error") is None
    # clicking the spectrogram plays the clip (a real gesture: the browser's autoplay policy allows it)
    driver.find_element("css selector", ".exemplar-spec").click()
    _wait(driver, "return document.querySelector('.exemplar audio').played.length > 0")
    mark = driver.execute_script(
        "var m = document.querySelector('.run-mark').getBoundingClientRect();"
        "var i = document.querySelector('.exemplar img').getBoundingClientRect();"
        "return [m.left >= i.left - 1, m.right <= i.right + 1, m.width > 0]")
    assert mark == [True, True, True]  # the run is marked on its spectrogram
    sections = driver.execute_script("return Array.from(document.querySelectorAll('main h2')).map(h => h.textContent)")
    assert sections[:2] == ["Listen and look", "Signature"] and "What follows it" in sections
    # the unit's maximising input plays from its spectrogram, and its saliency map has loaded
    assert sections[2] == "What excites it most"
    _wait(driver, "var a = document.getElementById('clip-max'); return a.readyState >= 1 && a.duration > 0")
    driver.find_element("css selector", "#maximiser .exemplar-spec").click()
    _wait(driver, "return document.getElementById('clip-max').played.length > 0")
    assert driver.execute_script("return document.getElementById('clip-max').error") is None
    assert driver.find_elements("css selector", "#saliency img")
    _wait(driver, "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    headless_chromium.screenshot(driver, DOCS / "unit-page.png")
    assert headless_chromium.severe(driver) == []
