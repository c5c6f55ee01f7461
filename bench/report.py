"""Report benchmark: can the figures and the explorer's maps be made for 100,000 segments on 2 cores?

Part 1, for each N (default 10,000 and 100,000): a synthetic workspace (DuckDB tables only, no audio)
with N segments in N/10 recordings at 3 sites, clustered Gaussian segment vectors of dimension 256
at 3 layers (clusters tighter at deeper layers, plus a per-recording offset), labels per recording.
Then the report's own code path for the maps: `resolve_scope` (reading metadata), `compute_maps`
(per layer: cosine kNN, exact up to 20,000 points and pynndescent beyond, then seeded UMAP), the
k-means clusters of the main layer, `map_section` (the two map figures drawn and saved as PNG and
SVG) and the ExplorerData columns. It prints the seconds of each step, the recall@8 of the
neighbour lists against exact search (on 500 queries) and the peak RSS.

Part 2: the figures whose inputs the report caps whatever N is (unit atlas: 200 segments; sequences
and units x labels: 5,000 segments; timeline: 60 s; gallery: 4 x 7 segments; training: the run's
steps), drawn from synthetic inputs of those sizes, timed once.

Part 3 (--features tiny small): seconds per unit of "What the filters and units respond to" for
each preset at 16 kHz with random weights: activation maximisation of 24 k-means-like units batched
(the report's clip length and starts, 20 steps), occlusion and gradient saliency of one exemplar per
unit, beside the seconds of one plain forward pass of the same batch (the baseline).

Run:  .venv/bin/python bench/report.py [--sizes 10000 100000] [--dim 256] [--layers 3] [--seed 0]
      .venv/bin/python bench/report.py --sizes --features tiny small     # part 3 alone
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.settings import ReportSettings  # noqa: E402
from schemas.tables import embedding_table, embedding_table_ddl  # noqa: E402
from tasks.catalog.embeddings import refresh_views  # noqa: E402
from tasks.report.drawing import FigureWriter  # noqa: E402
from tasks.report.inputs import compute_maps, resolve_scope  # noqa: E402
from tasks.report.sections import map_section  # noqa: E402
from tasks.report.content import ExplorerData  # noqa: E402
from tasks.report.umap_maps import EXACT_MAX, unit_rows  # noqa: E402
from tasks.workspace import (
    Workspace,  # noqa: E402
    database,  # noqa: E402
)

LABELS = ["orca", "humpback", "sperm whale", "bowhead", "dolphin", "ship", "rain", "none"]


def synthetic_workspace(root: Path, n: int, dim: int, layers: int, seed: int) -> Workspace:
    """N segments of 10 s in N/10 recordings; vectors clustered by recording class, tighter at deeper layers."""
    rng = np.random.default_rng(seed)
    ws = Workspace.at(root).create()
    n_rec = max(1, n // 10)
    clusters = 20
    rec_cluster = rng.integers(0, clusters, n_rec)
    with database.writing(ws) as conn:
        database.apply_schema(conn, ws)
        database.ensure_dataset_config(conn, {"sample_rate": "16000", "segment_seconds": "10.0", "hop_seconds": "10.0",
                                           "final_segment": "pad"})
        conn.execute(f"""
            INSERT INTO recordings
            SELECT printf('rec%07d', i), printf('hash%07d', i), printf('/data/site%d/rec%07d.wav', i % 3, i),
                   printf('rec%07d.wav', i), 1000, 'WAV', 'PCM_16', 16000, 1, 1600000, 100.0,
                   TIMESTAMPTZ '2024-06-01 00:00:00+00' + to_seconds(i * 997 % 2592000), 'file name',
                   printf('site%d', i % 3), '2024-06-01', 16000, 'mix', 10, 1000, 'segments/x.parquet',
                   []::VARCHAR[], 'bench', now()
            FROM range({n_rec}) t(i)""")
        conn.execute(f"""
            INSERT INTO segments
            SELECT printf('seg%08d', i), printf('rec%07d', i // 10), -1, i % 10, (i % 10) * 10.0, (i % 10) * 10.0 + 10,
                   10.0, r.start_time + to_seconds((i % 10) * 10), r.start_time + to_seconds((i % 10) * 10 + 10), 16000,
                   -40 + 15 * sin(i), -20, 0, 0, 0, false, 0, r.site, '2024-06-01', 'segments/x.parquet'
            FROM range({n_rec * 10}) t(i) JOIN recordings r ON r.recording_id = printf('rec%07d', i // 10)""")
        labels = pa.table({"recording_id": [f"rec{i:07d}" for i in range(n_rec)],
                           "label_value": [LABELS[c % len(LABELS)] for c in rec_cluster]})
        conn.register("bench_labels", labels)
        conn.execute("INSERT INTO labels SELECT recording_id, 'species', label_value, NULL, NULL, 'bench.csv' "
                     "FROM bench_labels")
        conn.unregister("bench_labels")
        model_id, table = "bench@1", embedding_table("bench@1")
        conn.execute(embedding_table_ddl(table, dim))
        conn.execute("INSERT INTO embedding_models VALUES (?, 'bench', 1, '', '', ?, ?, 0.02, ?, ?)",
                     [model_id, dim, layers, table, datetime.now(timezone.utc)])
        centres = rng.standard_normal((clusters, dim)).astype(np.float32)
        rec_offset = 0.6 * rng.standard_normal((n_rec, dim)).astype(np.float32)
        seg_rec = np.arange(n_rec * 10) // 10
        ids = [f"seg{i:08d}" for i in range(n_rec * 10)]
        for layer in range(layers):
            noise = 1.6 - 0.5 * layer  # structure emerges with depth
            for start in range(0, len(ids), 50_000):
                rows = seg_rec[start:start + 50_000]
                x = (centres[rec_cluster[rows]] + rec_offset[rows]
                     + noise * rng.standard_normal((len(rows), dim)).astype(np.float32))
                part = pa.table({"segment_id": ids[start:start + 50_000],
                                 "layer": pa.array(np.full(len(rows), layer, np.int16)),
                                 "pooling": ["mean"] * len(rows),
                                 "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim)})
                conn.register("bench_vectors", part)
                conn.execute(f"INSERT INTO {table} SELECT segment_id, layer, pooling, vector::FLOAT[{dim}] "
                             "FROM bench_vectors")
                conn.unregister("bench_vectors")
        refresh_views(conn, ws)
    return ws


def recall_against_exact(ws: Workspace, scope, neighbours: np.ndarray, layer: int, queries: int, seed: int) -> float:
    from tasks.catalog.embeddings import segment_vectors

    with database.reading(ws) as conn:
        u = unit_rows(segment_vectors(conn, scope.model, layer, scope.ids))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(u), min(queries, len(u)), replace=False)
    sims = u[chosen] @ u.T
    sims[np.arange(len(chosen)), chosen] = -np.inf
    k = neighbours.shape[1]
    exact = np.argpartition(-sims, k, axis=1)[:, :k]
    return float(np.mean([len(set(exact[i]) & set(neighbours[q])) / k for i, q in enumerate(chosen)]))


def maps_run(n: int, dim: int, layers: int, seed: int, out: Path) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"ceta2vec-bench-report-{n}-"))
    try:
        started = time.perf_counter()
        ws = synthetic_workspace(root / "ws", n, dim, layers, seed)
        build_s = time.perf_counter() - started
        settings = ReportSettings(workspace=str(ws.root), max_points=n, seed=seed)
        started = time.perf_counter()
        scope = resolve_scope(ws, settings)
        scope_s = time.perf_counter() - started
        steps: list[tuple[float, str]] = []
        started = time.perf_counter()
        maps, clusters = compute_maps(ws, scope, settings, lambda m, f: steps.append((time.perf_counter(), m)))
        maps_s = time.perf_counter() - started
        figures = FigureWriter(out / f"n{n}")
        started = time.perf_counter()
        section = map_section(scope, maps, clusters, figures)
        figures_s = time.perf_counter() - started
        started = time.perf_counter()
        info = scope.info
        explorer = ExplorerData(
            segment_id=scope.ids, recording=info.recording, site=info.site, start_time=info.start_time,
            start_s=info.start_s, label=info.label, cluster=clusters, coords={k: m.coords for k, m in maps.items()},
            neighbours={k: m.neighbours for k, m in maps.items()}, distances={k: m.distances for k, m in maps.items()},
            thumbnail=[""] * n, audio=[""] * n, label_column=scope.label_column, main_layer=scope.layer)
        explorer_s = time.perf_counter() - started
        assert len(explorer.segment_id) == n and all(c.shape == (n, 2) for c in explorer.coords.values())
        recall = recall_against_exact(ws, scope, maps[scope.layer].neighbours, scope.layer, 500, seed)
        return {"n": n, "workspace_s": build_s, "scope_s": scope_s, "maps_s": maps_s, "figures_s": figures_s,
                "explorer_s": explorer_s, "per_layer": {k: m.seconds for k, m in maps.items()},
                "figure_seconds": figures.seconds, "exact": maps[scope.layer].exact_knn, "recall": recall,
                "agreement": section.tables[0], "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def capped_figures(out: Path, seed: int) -> dict[str, float]:
    """Draw + save time of the figures whose inputs are capped, on synthetic inputs of the capped sizes."""
    from tasks.catalog.units import UnitInventory
    from tasks.report.inputs import ATLAS_SEGMENTS, SEQUENCE_SEGMENTS
    from tasks.report.figures import save
    from tasks.report.figures_maps import neighbour_gallery
    from tasks.report.figures_training import codebook_health_figure, training_curves_figure
    from tasks.report.figures_units import (
        sequence_figure,
        unit_atlas_figure,
        unit_colours,
        unit_label_figure,
        unit_timeline_figure,
    )
    from tasks.report.sequence_stats import bigram_counts, purity, rank_frequency, unit_label_counts
    from tasks.report.spectrograms import mel_config
    from tasks.report.unit_atlas import build_unit_atlas

    rng = np.random.default_rng(seed)
    mel = mel_config(16000, 320, 400)
    times: dict[str, float] = {}
    k, frames = 50, 499

    def sequence() -> np.ndarray:
        runs = rng.integers(1, 6, frames)
        return np.repeat(rng.integers(0, k, frames), runs)[:frames].astype(np.int16)

    specs = {f"s{i}": rng.normal(-30, 8, (64, frames + 2)).astype(np.float32) for i in range(ATLAS_SEGMENTS)}
    units = {s: sequence() for s in specs}
    centroids = rng.standard_normal((k, 256)).astype(np.float32)
    vectors = {s: centroids[u] + 0.5 * rng.standard_normal((len(u), 256)).astype(np.float32) for s, u in units.items()}
    labels = {s: LABELS[i % 5] for i, s in enumerate(specs)}
    started = time.perf_counter()
    atlas = build_unit_atlas(UnitInventory("kmeans", 3, 0, k), specs, units, mel, None, labels, 24, 5, 15, centroids,
                             lambda batch: {s: vectors[s] for s in batch})
    times["unit atlas: compute (200 segments)"] = time.perf_counter() - started
    started = time.perf_counter()
    save(unit_atlas_figure(atlas, "bench@1"), out / "unit-atlas")
    times["unit atlas: figure"] = time.perf_counter() - started

    spec = rng.normal(-30, 8, (64, 3000)).astype(np.float32)
    strips = [(f"strip {i}", np.concatenate([sequence() for _ in range(7)])[:3000].astype(np.int64),
               unit_colours(atlas.order, k)) for i in range(3)]
    started = time.perf_counter()
    save(unit_timeline_figure(spec, mel, strips, [], "rec.wav", 0.0, None, "bench@1", (1000, 1080)), out / "timeline")
    times["unit timeline (60 s, 3 strips)"] = time.perf_counter() - started

    steps = np.arange(1000.0)
    metrics = {"step": steps, "chunk": steps // 100, "loss": 3 - steps / 1000 + rng.normal(0, 0.05, 1000),
               "contrastive_loss": 2.9 - steps / 1000, "diversity_loss": np.full(1000, 0.3),
               "accuracy": steps / 2000, "grad_norm": rng.uniform(0.3, 3, 1000), "learning_rate": np.full(1000, 1e-4),
               "temperature": np.linspace(2, 0.5, 1000), "perplexity": rng.uniform(20, 60, (1000, 2)),
               "unused_code_share": rng.uniform(0, 0.3, 1000)}
    started = time.perf_counter()
    save(training_curves_figure(metrics, 1000, "bench", 0.1, 100), out / "training")
    times["training curves (1000 steps)"] = time.perf_counter() - started
    started = time.perf_counter()
    save(codebook_health_figure(metrics, 320, {0: rng.integers(1, 1000, 300), 1: rng.integers(1, 1000, 310)}, 1000,
                                "bench@1"), out / "codebook")
    times["codebook health"] = time.perf_counter() - started

    gallery_specs = {f"g{i}": rng.normal(-30, 8, (64, 500)).astype(np.float32) for i in range(28)}
    cell = lambda i: {"segment_id": f"g{i}", "recording": "rec.wav", "start_s": 0.0, "label": "x"}  # noqa: E731
    rows = [{"query": cell(7 * r), "neighbours": [dict(cell(7 * r + j), distance=0.01 * j, same_recording=False)
                                                  for j in range(1, 7)]} for r in range(4)]
    started = time.perf_counter()
    save(neighbour_gallery(rows, gallery_specs, mel, "bench@1", 3), out / "gallery")
    times["neighbour gallery (4 x 7)"] = time.perf_counter() - started

    sequences = {f"q{i}": sequence() for i in range(SEQUENCE_SEGMENTS)}
    started = time.perf_counter()
    bigrams = bigram_counts(sequences.values(), k)
    save(sequence_figure(bigrams, [u.unit for u in atlas.units], {"units": rank_frequency(np.bincount(
        np.concatenate(list(sequences.values())), minlength=k))}, rank_frequency(bigrams.ravel()), "units", "bench@1"),
         out / "sequences")
    times["unit sequences (5000 segments)"] = time.perf_counter() - started
    started = time.perf_counter()
    table, names = unit_label_counts(sequences, {s: LABELS[i % 8] for i, s in enumerate(sequences)}, k)
    per_unit, overall = purity(table)
    save(unit_label_figure(table, [u.unit for u in atlas.units], names, per_unit, overall, "units", "species",
                           "bench@1"), out / "unit-labels")
    times["units x labels (5000 segments)"] = time.perf_counter() - started
    return times


def features_per_unit(preset: str, seed: int, units: int = 24, steps: int = 20) -> dict[str, float]:
    """Seconds per unit of maximisation (20 steps) and saliency on a random-weight `preset` network."""
    import torch
    from transformers import Wav2Vec2ForPreTraining

    from tasks.model.config import build_config
    from tasks.model.frontend import plan_feature_encoder
    from tasks.report.features_report import CLIP_S, MAX_SECONDS, MAX_STARTS, REPORT_BANDS_PER_PATCH, REPORT_PATCH_S
    from tasks.report.maximise import maximise
    from tasks.report.network import Unit, _for_analysis, activations, layer_frames, normalise_batch
    from tasks.report.saliency import gradient_saliency, occlusion_saliency, stft_for

    rate = 16000
    torch.manual_seed(seed)
    model = _for_analysis(Wav2Vec2ForPreTraining(build_config(preset, plan_feature_encoder(rate))), torch.device("cpu"))
    rng = np.random.default_rng(seed)
    clip = (0.1 * rng.standard_normal(int(2 * CLIP_S * rate))).astype(np.float32)
    with torch.no_grad():
        frames = layer_frames(model, normalise_batch(torch.as_tensor(clip[None])), {1})[1][0]
    chosen = [Unit("kmeans", u, 1, centroid=tuple(float(v) for v in frames[u % len(frames)])) for u in range(units)]
    batch = torch.as_tensor(rng.standard_normal((units * MAX_STARTS, int(MAX_SECONDS * rate))).astype(np.float32))
    started = time.perf_counter()
    with torch.no_grad():
        activations(model, batch, [u for u in chosen for _ in range(MAX_STARTS)])
    forward = time.perf_counter() - started
    started = time.perf_counter()
    maximise(model, chosen, rate, MAX_SECONDS, MAX_STARTS, steps, seed=seed)
    maximise_s = time.perf_counter() - started
    stft = stft_for(rate)
    started = time.perf_counter()
    for unit in chosen[:4]:
        occlusion_saliency(model, clip, unit, (5, 6), stft, REPORT_BANDS_PER_PATCH, REPORT_PATCH_S)
        gradient_saliency(model, clip, unit, (5, 6), stft)
    saliency_s = (time.perf_counter() - started) / 4
    return {"forward of the batch (baseline), s": forward, f"maximisation, {steps} steps, s per unit": maximise_s / units,
            "maximisation / forward of the batch": maximise_s / forward,
            "saliency (occlusion + gradient), s per unit": saliency_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--features", nargs="*", default=[], choices=["tiny", "small", "base"],
                        help="Presets for part 3 (seconds per unit of maximisation and saliency).")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "report"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"exact kNN up to {EXACT_MAX:,} points, pynndescent beyond; seeded UMAP (single-threaded by design)")
    for n in args.sizes:
        r = maps_run(n, args.dim, args.layers, args.seed, out)
        print(f"\nN = {n:,} segments, dim {args.dim}, {args.layers} layers "
              f"(synthetic workspace built in {r['workspace_s']:.1f} s)")
        print(f"  {'step':44s} {'seconds':>8s}")
        print(f"  {'read scope and metadata (resolve_scope)':44s} {r['scope_s']:8.1f}")
        for layer, s in r["per_layer"].items():
            kind = "exact" if r["exact"] else "pynndescent"
            print(f"  {f'layer {layer}: kNN ({kind})':44s} {s['knn']:8.1f}")
            print(f"  {f'layer {layer}: UMAP':44s} {s['umap']:8.1f}")
        print(f"  {'compute_maps total (+ reads, k-means)':44s} {r['maps_s']:8.1f}")
        for key, s in r["figure_seconds"].items():
            print(f"  {f'figure {key} (draw + PNG + SVG)':44s} {s:8.1f}")
        print(f"  {'ExplorerData columns':44s} {r['explorer_s']:8.1f}")
        total = r["scope_s"] + r["maps_s"] + r["figures_s"] + r["explorer_s"]
        print(f"  {'maps + neighbours path, total':44s} {total:8.1f}")
        print(f"  recall@8 of the main layer's neighbours vs exact (500 queries): {r['recall']:.3f}")
        print(f"  peak RSS so far: {r['rss_mb']:.0f} MB")
    if args.sizes:
        print("\nfigures with capped inputs (the same at any N)")
        for key, s in capped_figures(out / "capped", args.seed).items():
            print(f"  {key:44s} {s:8.1f}")
    import torch

    for preset in args.features:
        print(f"\nwhat the units respond to, {preset} preset, 16 kHz, {torch.get_num_threads()} threads")
        for key, value in features_per_unit(preset, args.seed).items():
            print(f"  {key:52s} {value:8.2f}")


if __name__ == "__main__":
    main()
