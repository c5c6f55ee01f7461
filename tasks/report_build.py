"""Everything a report shows, computed from a workspace: figures, thumbnails and clips under the report
folder, and the `ReportContent` the HTML writer renders.

    out_dir/figures/*.png|svg          every figure, PNG and SVG
    out_dir/media/thumbs/<segment>.png spectrogram thumbnails of the explorer's media points
    out_dir/media/audio/<segment>.wav  their audio
    out_dir/media/units/<inventory>/unit<U>-<i>.wav   exemplar clips of the unit atlases

Re-running replaces figures/ and media/ whole, so nothing of an earlier report lingers. The
workspace is read through short read-only connections, so an ingest or embed can commit between them.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from schemas.settings import ReportSettings
from tasks import store
from tasks.figures import save
from tasks.figures_maps import layer_multiples, map_panels, neighbour_gallery
from tasks.figures_training import codebook_health_figure, training_curves_figure
from tasks.figures_units import sequence_figure, unit_atlas_figure, unit_colours, unit_label_figure, unit_timeline_figure
from tasks.report_content import AudioClip, ExplorerData, FigureRef, ReportContent, ReportSection
from tasks.report_data import (ReportModel, SegmentInfo, UnitInventory, checkpoint_step, data_summary,
                               embedded_segment_ids, frame_units, frame_vectors, kmeans_centroids, model_record,
                               recording_segments, resolve_label_column, resolve_layer, resolve_model, sample_ids,
                               segment_info, segment_labels_of, segment_vectors, timeline_recording, train_metrics,
                               unit_inventories, unit_stats)
from tasks.sequence_stats import (bigram_counts, collapse_runs, purity, rank_frequency, self_transition_share,
                                  unit_label_counts, usage_perplexity, zipf_slope)
from tasks.spectrograms import (MelConfig, frame_clip, log_mel, loudest_window, mel_config, save_thumbnail,
                                segment_audio, write_clip)
from tasks.training_data import normalise
from tasks.umap_maps import LayerMap, layer_map, neighbour_agreement, segment_clusters
from tasks.unit_atlas import UnitAtlas, build_unit_atlas
from tasks.workspace import Workspace

FIGURES = "figures"
MEDIA = "media"
ATLAS_SEGMENTS = 200  # segments sampled for unit atlases (average windows and exemplars)
SEQUENCE_SEGMENTS = 5000  # segments sampled for bigrams and units x labels
ATLAS_HALF_WIDTH_S = 0.3  # atlas windows span +-0.3 s around the frame
EXEMPLAR_CLIP_S = 1.0
TIMELINE_MAX_S = 60.0
TIMELINE_ZOOM_FRAMES = 100  # frames in the timeline's zoom: wide enough on paper to name every unit
GALLERY_QUERIES = 4
GALLERY_NEIGHBOURS = 6
MAP_CLUSTERS = 8  # one per colour of the palette
AUDIO_BATCH = 64

Progress = Callable[[str, float], None]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class _Figures:
    """Saves figures under out_dir/figures and makes their FigureRefs."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.seconds: dict[str, float] = {}

    def add(self, fig, key: str, title: str, caption: str, started: float | None = None) -> FigureRef:
        png, svg = save(fig, self.out_dir / FIGURES / key)
        if started is not None:
            self.seconds[key] = round(time.perf_counter() - started, 2)
        return FigureRef(key, title, caption, png.relative_to(self.out_dir).as_posix(),
                         svg.relative_to(self.out_dir).as_posix())


def _layers_shown(model: ReportModel, wanted: list[int] | None, main: int) -> list[int]:
    layers = sorted(set(wanted if wanted is not None else model.embedded_layers) | {main})
    missing = [layer for layer in layers if layer not in model.embedded_layers]
    if missing:
        raise store.WorkspaceError(f"{model.model_id} has segment vectors for layers "
                                   f"{', '.join(map(str, model.embedded_layers))}, not {missing}")
    return layers


def _spectrograms(ws: Workspace, ids: list[str], mel: MelConfig, keep_audio: bool = False
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Log-mel of each segment's valid audio, normalised as the model sees it (zero mean, unit variance)."""
    specs, audio = {}, {}
    for start in range(0, len(ids), AUDIO_BATCH):
        with store.reading(ws) as conn:
            batch = segment_audio(conn, ws, ids[start:start + AUDIO_BATCH])
        for sid, samples in batch.items():
            specs[sid] = log_mel(normalise(samples) if len(samples) else samples, mel)
            if keep_audio:
                audio[sid] = samples
    return specs, audio


def build_report_content(ws: Workspace, settings: ReportSettings, out_dir: Path,
                         progress: Progress | None = None) -> ReportContent:
    """Compute every figure, thumbnail and clip of the report into `out_dir` and describe them."""
    say = progress or (lambda message, fraction: None)
    out_dir = Path(out_dir)
    for sub in (FIGURES, MEDIA):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    (out_dir / FIGURES).mkdir(parents=True, exist_ok=True)
    figures = _Figures(out_dir)
    seed = settings.seed

    say("reading the workspace", 0.0)
    with store.reading(ws) as conn:
        model = resolve_model(conn, settings.model)
        label_column = resolve_label_column(conn, settings.label_column)
        layer, layer_reason = resolve_layer(conn, model, label_column, settings.layer)
        layers = _layers_shown(model, settings.layers, layer)
        all_ids = embedded_segment_ids(conn, model, layers)
        if not all_ids:
            raise store.WorkspaceError(f"{model.model_id}: no segment has vectors at every layer of {layers}; "
                                       "run `ceta2vec embed` or choose --layers")
        ids = sample_ids(all_ids, settings.max_points, seed)
        info = segment_info(conn, ids, label_column)
        counts = data_summary(conn)
        record = model_record(conn, model.run)
        metrics = train_metrics(conn, model.run)
        ckpt_step = checkpoint_step(conn, model)
        inventories = unit_inventories(conn, model)
        stats = {inv.key: unit_stats(conn, model, inv) for inv in inventories}
    mel = mel_config(model.sample_rate, model.hop, model.receptive_field)
    has_labels = any(info.label)

    # maps: one kNN graph and UMAP per layer, vectors read one layer at a time
    maps: dict[int, LayerMap] = {}
    clusters = np.zeros(len(ids), np.int32)
    for i, shown in enumerate(layers):
        say(f"UMAP and neighbours of layer {shown} ({len(ids):,} segments)", 0.02 + 0.5 * i / len(layers))
        with store.reading(ws) as conn:
            x = segment_vectors(conn, model, shown, ids)
        maps[shown] = layer_map(x, shown, settings.neighbours, settings.umap_neighbors, settings.umap_min_dist, seed)
        if shown == layer:
            clusters = segment_clusters(x, min(MAP_CLUSTERS, max(1, len(ids) // 10)), seed)
        del x
    colour_values = info.label if has_labels else [f"cluster {c}" for c in clusters]
    colour_name = f"label ({label_column})" if has_labels else f"layer-{layer} cluster"
    agreement = {shown: neighbour_agreement(m.neighbours, colour_values) for shown, m in maps.items()}

    say("drawing the maps", 0.53)
    started = time.perf_counter()
    map_figures = [figures.add(
        map_panels(maps[layer].coords, info, clusters, label_column, layer, model.model_id), f"umap-layer{layer}",
        f"UMAP of layer {layer}, coloured six ways",
        f"Each dot is a segment (mean-pooled layer-{layer} vector), placed so that segments with similar vectors "
        "sit close together. Compare the panels: clusters that follow labels are what the network learned; "
        "clusters that follow recording, site or level may be recording conditions rather than sounds.", started)]
    started = time.perf_counter()
    map_figures.append(figures.add(
        layer_multiples({k: m.coords for k, m in maps.items()}, colour_values, colour_name, agreement, model.model_id,
                        layer), "umap-layers", "UMAP of every layer",
        f"The same segments mapped at each layer, coloured by {colour_name}. The agreement in each title is the share "
        "of a segment's nearest neighbours (cosine, full dimension) that share its colour: where it rises, the "
        "layer separates them.", started))
    map_table = [{"layer": k, "map": m.method, "neighbours": "exact" if m.exact_knn else "approximate (NN-descent)",
                  f"neighbour agreement ({colour_name})": None if not np.isfinite(agreement[k]) else round(agreement[k], 3),
                  "kNN s": m.seconds.get("knn"), "UMAP s": m.seconds.get("umap")} for k, m in sorted(maps.items())]

    # unit atlases from a sample of segments' spectrograms
    by_key = {inv.key: inv for inv in inventories}
    main_inventory = by_key.get(f"kmeans-layer{layer}") or by_key.get("codevector-g0") or (inventories[0] if inventories else None)
    atlas_inventories = [inv for inv in inventories if inv.source == "codevector"]
    if main_inventory is not None and main_inventory not in atlas_inventories:
        atlas_inventories = [main_inventory] + atlas_inventories
    recording_of = dict(zip(ids, info.recording))
    start_of = dict(zip(ids, info.start_s))
    label_of = dict(zip(ids, info.label))
    atlases: dict[str, UnitAtlas] = {}
    unit_figures, unit_clips, unit_tables = [], [], []
    if atlas_inventories:
        say("spectrograms for the unit atlases", 0.56)
        atlas_ids = sample_ids(ids, ATLAS_SEGMENTS, seed)
        atlas_specs, _ = _spectrograms(ws, atlas_ids, mel)
        half_width = max(1, int(round(ATLAS_HALF_WIDTH_S / mel.frame_seconds)))
        for i, inv in enumerate(atlas_inventories):
            say(f"unit atlas: {inv.name}", 0.6 + 0.12 * i / len(atlas_inventories))
            started = time.perf_counter()
            with store.reading(ws) as conn:
                units = frame_units(conn, model, inv, atlas_ids)
                centroids = kmeans_centroids(conn, ws, model, inv.layer) if inv.source == "kmeans" else None

            def vectors_of(batch: list[str], layer_of: int = inv.layer) -> dict[str, np.ndarray]:
                with store.reading(ws) as c:
                    return frame_vectors(c, ws, model, layer_of, batch)

            atlas = build_unit_atlas(inv, atlas_specs, units, mel, stats.get(inv.key), label_of, settings.atlas_units,
                                     settings.exemplars, half_width, centroids,
                                     vectors_of if centroids is not None else None)
            if not atlas.units:
                continue
            atlases[inv.key] = atlas
            unit_figures.append(figures.add(
                unit_atlas_figure(atlas, model.model_id, recording_of), f"unit-atlas-{inv.key}",
                f"Unit atlas: {inv.name}",
                "Left of each row: the average log-mel spectrogram of windows centred on every frame assigned to the "
                "unit (dashed line); right: the unit's most typical occurrences. A unit with a clear shape in its "
                "average (a band, a sweep, a click) responds to that sound; a flat average means a unit of background.",
                started))
            unit_clips += _exemplar_clips(ws, out_dir, atlas, mel, recording_of, start_of)
            unit_tables.append([{"inventory": inv.name, "unit": u.unit, "frames": u.frames,
                                 "share %": round(100 * u.share, 2), "mean run ms": round(1000 * u.mean_run_s, 1),
                                 "labels it co-occurs with": ", ".join(f"{n} {100 * s:.0f}%" for n, s in u.labels)}
                                for u in atlas.units])

    # unit timeline of one recording
    timeline_figures, timeline_intro = [], "No frame-level units: run `ceta2vec embed` with frame vectors."
    if main_inventory is not None:
        say("unit timeline", 0.74)
        started = time.perf_counter()
        made = _timeline(ws, model, mel, main_inventory, [inv for inv in atlas_inventories], atlases, label_column)
        if made is not None:
            fig, recording, seconds = made
            timeline_figures.append(figures.add(
                fig, "unit-timeline", f"Unit timeline: {recording}",
                "The spectrogram of one recording with the unit every frame was assigned beneath it, one strip per "
                "unit inventory. Units that change where the sound changes, and repeat where it repeats, track "
                "acoustic events.", started))
            timeline_intro = (f"{recording}, {seconds:.1f} s: a labelled recording when there is one, chosen for "
                              "event labels, then length.")

    # training health
    say("training curves", 0.78)
    training_figures, training_tables = [], []
    config = record.get("model_config", {})
    if len(metrics.get("step", [])):
        started = time.perf_counter()
        training_figures.append(figures.add(
            training_curves_figure(metrics, ckpt_step, model.run, config.get("diversity_loss_weight"),
                                   config.get("num_negatives")),
            "training-curves", "Training curves",
            "Loss should fall and masked-prediction accuracy rise above chance (dashed: the true target among "
            "the distractors by luck); a loss that stalls while accuracy stays at chance means the model is not "
            "learning yet. The dotted line is the embedded checkpoint.", started))
        usage = {inv.group: np.asarray([r["frames"] for r in stats.get(inv.key, [])], np.float64)
                 for inv in inventories if inv.source == "codevector"}
        started = time.perf_counter()
        training_figures.append(figures.add(
            codebook_health_figure(metrics, config.get("num_codevectors_per_group"), usage, ckpt_step, model.model_id),
            "codebook-health", "Codebook health",
            "Perplexity is the number of codes in effective use; when it falls towards the red dashed line the "
            "codebook collapses onto a few codes. The right panel shows how evenly the embedded frames use the "
            "codes.", started))
        training_tables.append(_chunk_table(metrics))

    # nearest-neighbour gallery
    say("nearest-neighbour gallery", 0.82)
    neighbour_figures, neighbour_rows = [], []
    queries = _gallery_queries(info, seed)
    if queries and len(ids) > 1:
        started = time.perf_counter()
        rows = []
        for q in queries:
            nbrs = [int(j) for j in maps[layer].neighbours[q][:GALLERY_NEIGHBOURS] if j >= 0]
            rows.append({"query": _cell(info, q), "neighbours": [
                dict(_cell(info, j), distance=float(maps[layer].distances[q][r]),
                     same_recording=info.recording_id[j] == info.recording_id[q]) for r, j in enumerate(nbrs)]})
            neighbour_rows += [{"query": info.segment_id[q], "query file": info.recording[q], "rank": r + 1,
                                "neighbour": info.segment_id[j], "file": info.recording[j],
                                "start s": round(float(info.start_s[j]), 2), "label": info.label[j],
                                "cosine distance": round(float(maps[layer].distances[q][r]), 4)}
                               for r, j in enumerate(nbrs)]
        gallery_ids = [c["segment_id"] for row in rows for c in [row["query"]] + row["neighbours"]]
        gallery_specs, _ = _spectrograms(ws, gallery_ids, mel)
        neighbour_figures.append(figures.add(
            neighbour_gallery(rows, gallery_specs, mel, model.model_id, layer), "neighbour-gallery",
            "Nearest-neighbour gallery",
            "Each row is a query segment (red frame) and the segments nearest to it. Similar-looking neighbours from "
            "other recordings mean the vectors capture the sound; neighbours only from the same recording mean they "
            "capture the recording.", started))

    # unit sequences and labels
    say("unit sequence statistics", 0.86)
    sequence_figures, sequence_tables, label_figures, label_tables = [], [], [], []
    if main_inventory is not None:
        seq_ids = sample_ids(ids, SEQUENCE_SEGMENTS, seed)
        with store.reading(ws) as conn:
            sequences = {inv.key: frame_units(conn, model, inv, seq_ids) for inv in inventories}
        main_seqs = sequences[main_inventory.key]
        n_main = max([main_inventory.size] + [int(s.max()) + 1 for s in main_seqs.values() if len(s)])
        bigrams = bigram_counts(main_seqs.values(), n_main)
        main_atlas = atlases.get(main_inventory.key)
        shown = [u.unit for u in main_atlas.units] if main_atlas else list(np.argsort(-bigrams.sum(1))[:settings.atlas_units])
        rank_freqs = {inv.name: rank_frequency(r["frames"] for r in stats.get(inv.key, [])) for inv in inventories}
        started = time.perf_counter()
        sequence_figures.append(figures.add(
            sequence_figure(bigrams, shown, rank_freqs, rank_frequency(bigrams.ravel()), main_inventory.name,
                            model.model_id), "unit-sequences", "Unit transitions and rank-frequency",
            "Left: which unit follows which (repeats merged), for the most used units in atlas order; strong "
            "off-diagonal blocks are units that form larger patterns. Right: unit frequency against rank; a straight "
            "line of slope near -1 is Zipf's law, as in words of a language.", started))
        for inv in inventories:
            seqs = list(sequences[inv.key].values())
            used = len(stats.get(inv.key, []))
            frames = [r["frames"] for r in stats.get(inv.key, [])]
            sequence_tables.append({
                "inventory": inv.name, "units used": f"{used} of {inv.size}",
                "usage perplexity": round(usage_perplexity(frames), 1),
                "Zipf slope": round(zipf_slope(rank_frequency(frames)), 2),
                "frames staying on the same unit": round(self_transition_share(seqs), 3),
                "mean run (frames)": round(float(np.mean([len(s) / max(1, len(collapse_runs(s))) for s in seqs if len(s)]))
                                           if seqs else float("nan"), 2)})
        if label_column and has_labels:
            say("units against labels", 0.89)
            for inv in [main_inventory] + [i for i in inventories if i.key == "codevector-g0" and i != main_inventory]:
                seqs = sequences[inv.key]
                n_units = max([inv.size] + [int(s.max()) + 1 for s in seqs.values() if len(s)])
                table, names = unit_label_counts(seqs, label_of, n_units)
                if not names:
                    continue
                per_unit, overall = purity(table)
                atlas = atlases.get(inv.key)
                rows_units = ([u.unit for u in atlas.units] if atlas
                              else [int(u) for u in np.argsort(-table.sum(1))[:settings.atlas_units]])
                started = time.perf_counter()
                label_figures.append(figures.add(
                    unit_label_figure(table, rows_units, names, per_unit, overall, inv.name, label_column,
                                      model.model_id), f"unit-labels-{inv.key}", f"{inv.name} against labels",
                    "Each row: how a unit's labelled frames divide among the labels. Units with one dominant label "
                    "(high purity) are specific to that sound source or call type.", started))
                label_tables.append([{"inventory": inv.name, "unit": u, "labelled frames": int(table[u].sum()),
                                      "top label": names[int(np.argmax(table[u]))] if table[u].sum() else "",
                                      "purity": None if not np.isfinite(per_unit[u]) else round(float(per_unit[u]), 3),
                                      **{name: int(table[u, c]) for c, name in enumerate(names)}}
                                     for u in rows_units])
                label_tables.append([{"inventory": inv.name, "frame-weighted purity": round(overall, 3),
                                      "labels": len(names), "segments sampled": len(seqs)}])

    # explorer media
    say("explorer thumbnails and audio", 0.92)
    thumbnails, audio_paths = [""] * len(ids), [""] * len(ids)
    media_ids = sample_ids(ids, settings.media_points, seed + 1)
    position = {sid: i for i, sid in enumerate(ids)}
    for start in range(0, len(media_ids), AUDIO_BATCH):
        batch = media_ids[start:start + AUDIO_BATCH]
        specs, audio = _spectrograms(ws, batch, mel, keep_audio=True)
        for sid in batch:
            if sid not in specs:
                continue
            thumb = out_dir / MEDIA / "thumbs" / f"{_safe(sid)}.png"
            wav = out_dir / MEDIA / "audio" / f"{_safe(sid)}.wav"
            save_thumbnail(thumb, specs[sid])
            write_clip(wav, audio[sid], model.sample_rate)
            thumbnails[position[sid]] = thumb.relative_to(out_dir).as_posix()
            audio_paths[position[sid]] = wav.relative_to(out_dir).as_posix()
        say("explorer thumbnails and audio", 0.92 + 0.07 * min(1.0, (start + len(batch)) / max(1, len(media_ids))))

    explorer = ExplorerData(
        segment_id=list(ids), recording=info.recording, site=info.site, start_time=info.start_time,
        start_s=info.start_s.astype(np.float64), label=info.label, cluster=clusters.astype(np.int32),
        coords={k: m.coords for k, m in maps.items()}, neighbours={k: m.neighbours for k, m in maps.items()},
        distances={k: m.distances for k, m in maps.items()}, thumbnail=thumbnails, audio=audio_paths,
        label_column=label_column)

    sections = [
        ReportSection("maps", "Embedding maps",
                      f"Segments of {model.model_id} at layer {layer} ({layer_reason}) and at every layer shown. "
                      + (f"{len(ids):,} of {len(all_ids):,} segments, a seeded sample." if len(ids) < len(all_ids)
                         else f"All {len(ids):,} embedded segments."),
                      map_figures, tables=[map_table]),
        ReportSection("units", "Unit atlas",
                      "What the discrete units sound like: the quantizer's codevectors (wav2vec 2.0's own units) and "
                      f"k-means units of layer {layer}. Averages and exemplars come from {min(len(ids), ATLAS_SEGMENTS)} "
                      "sampled segments; usage counts from the whole workspace. Each exemplar clip is 1 s centred on "
                      "its frame, peak-normalised." if atlases else "No frame-level units for this model.",
                      unit_figures, unit_clips, unit_tables),
        ReportSection("timeline", "Unit timeline", timeline_intro, timeline_figures),
        ReportSection("training", "Training health",
                      f"Per-step metrics of run '{model.run}' ({len(metrics.get('step', []))} steps)."
                      if training_figures else f"No training metrics recorded for run '{model.run}'.",
                      training_figures, tables=training_tables),
        ReportSection("neighbours", "Nearest neighbours",
                      f"Queries: one segment of each of the most common labels ({label_column}), seeded."
                      if has_labels else "Queries: seeded random segments.",
                      neighbour_figures, tables=[neighbour_rows] if neighbour_rows else []),
        ReportSection("sequences", "Unit sequences",
                      f"Statistics of frame-level unit sequences over {min(len(ids), SEQUENCE_SEGMENTS):,} sampled "
                      "segments (transitions) and the whole workspace (frequencies)." if sequence_figures
                      else "No frame-level units for this model.",
                      sequence_figures, tables=[sequence_tables] if sequence_tables else []),
    ]
    if label_figures:
        sections.append(ReportSection(
            "labels", "Units and labels",
            f"How the units divide among the '{label_column}' labels (a frame takes its segment's label; "
            "unlabelled segments are left out).", label_figures, tables=label_tables))

    summary = [
        {"item": "workspace", "value": str(ws.root)},
        {"item": "recordings", "value": f"{counts['recordings']:,} ({counts['recording_hours']:.2f} h)"},
        {"item": "segments", "value": f"{counts['segments']:,} ({counts['segment_hours']:.2f} h of audio)"},
        {"item": "sites", "value": counts["sites"]},
        {"item": "recorded", "value": f"{counts['first_start']:%Y-%m-%d} to {counts['last_start']:%Y-%m-%d}"
         if counts["first_start"] else "start times unknown"},
        {"item": "model", "value": f"{model.model_id}: {model.layers} layers of {model.dim} dimensions, "
                                   f"{1000 * model.frame_seconds:.1f} ms frames, {model.sample_rate} Hz"},
        {"item": "trained", "value": f"{record.get('steps_done', '?')} steps on {record.get('hours_used', 0):.2f} h "
                                     f"({record.get('preset', '?')} preset)" if record else "not recorded"},
        {"item": "segments shown", "value": f"{len(ids):,} of {len(all_ids):,} embedded"},
        {"item": "main layer", "value": f"{layer} ({layer_reason})"},
        {"item": "label column", "value": label_column or "none"},
        {"item": "labelled segments shown", "value": f"{sum(1 for v in info.label if v):,}"},
        {"item": "unit inventories", "value": ", ".join(inv.name for inv in inventories) or "none"},
    ]
    configuration = {
        "pretraining": record.get("settings", {}),
        "model_config": config,
        "feature_encoder": record.get("feature_encoder", {}),
        "embedding": {"model": model.model_id, "dim": model.dim, "layers": model.layers,
                      "frame_seconds": model.frame_seconds, "receptive_field_samples": model.receptive_field},
        "report": {**settings.model_dump(), "resolved": {"model": model.model_id, "layer": layer, "layers": layers,
                                                          "label_column": label_column}},
        "spectrograms": {"n_fft": mel.n_fft, "hop": mel.hop, "n_mels": mel.n_mels, "fmax_hz": mel.fmax},
        "figure_seconds": figures.seconds,
    }
    say("report content ready", 1.0)
    return ReportContent(title=f"What {model.model_id} learned", model_id=model.model_id,
                         generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), summary=summary,
                         configuration=configuration, sections=sections, explorer=explorer)


def _cell(info: SegmentInfo, i: int) -> dict:
    return {"segment_id": info.segment_id[i], "recording": info.recording[i], "start_s": float(info.start_s[i]),
            "label": info.label[i]}


def _gallery_queries(info: SegmentInfo, seed: int) -> list[int]:
    """One seeded segment of each of the most common labels, or seeded random segments without labels."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(info.label, dtype=object)
    values, counts = np.unique(labels[labels != ""], return_counts=True) if (labels != "").any() else ([], [])
    chosen = []
    for value in [v for _, v in sorted(zip(-np.asarray(counts), values))][:GALLERY_QUERIES]:
        chosen.append(int(rng.choice(np.flatnonzero(labels == value))))
    rest = [i for i in rng.permutation(len(labels)) if i not in chosen]
    return (chosen + rest)[:min(GALLERY_QUERIES, len(labels))]


def _exemplar_clips(ws: Workspace, out_dir: Path, atlas: UnitAtlas, mel: MelConfig, recording_of: dict[str, str],
                    start_of: dict[str, float]) -> list[AudioClip]:
    wanted = sorted({e.segment_id for u in atlas.units for e in u.exemplars})
    clips = []
    for start in range(0, len(wanted), AUDIO_BATCH):
        with store.reading(ws) as conn:
            audio = segment_audio(conn, ws, wanted[start:start + AUDIO_BATCH])
        for u in atlas.units:
            for j, e in enumerate(u.exemplars):
                if e.segment_id not in audio:
                    continue
                path = out_dir / MEDIA / "units" / atlas.inventory.key / f"unit{u.unit}-{j + 1}.wav"
                write_clip(path, frame_clip(audio[e.segment_id], mel, e.frame, EXEMPLAR_CLIP_S), mel.sample_rate)
                at = start_of.get(e.segment_id, 0.0) + float(mel.frame_centre_sample(e.frame)) / mel.sample_rate
                clips.append((atlas.units.index(u), j, AudioClip(
                    f"{atlas.inventory.name}, unit {u.unit}, exemplar {j + 1}: "
                    f"{recording_of.get(e.segment_id, e.segment_id)} at {at:.2f} s",
                    path.relative_to(out_dir).as_posix(),
                    f"{EXEMPLAR_CLIP_S:g} s centred on the frame, peak-normalised")))
    return [c for _, _, c in sorted(clips, key=lambda t: (t[0], t[1]))]


def _timeline(ws: Workspace, model: ReportModel, mel: MelConfig, main: UnitInventory, inventories: list[UnitInventory],
              atlases: dict[str, UnitAtlas], label_column: str | None):
    with store.reading(ws) as conn:
        chosen = timeline_recording(conn, model, main, label_column)
        if chosen is None:
            return None
        recording_id, file_name = chosen
        segments = recording_segments(conn, recording_id)
        spans = segment_labels_of(conn, recording_id, label_column) if label_column else []
    chain, end = [], None
    for sid, start_s, valid_s in segments:
        if end is not None and abs(start_s - end) > mel.frame_seconds:
            if start_s < end:
                continue  # overlapping hop: the next segment that starts where this one ends
            break  # a gap: stop at the first
        chain.append((sid, start_s, valid_s))
        end = start_s + valid_s
        if end - chain[0][1] >= TIMELINE_MAX_S:
            break
    with store.reading(ws) as conn:
        audio = segment_audio(conn, ws, [c[0] for c in chain])
        units = {inv.key: frame_units(conn, model, inv, [c[0] for c in chain]) for inv in inventories}
    chain = [c for c in chain if c[0] in audio]
    if not chain:
        return None
    t0 = chain[0][1]
    samples = np.concatenate([audio[c[0]] for c in chain])[: int(TIMELINE_MAX_S * mel.sample_rate)]
    spec = log_mel(normalise(samples), mel)
    n_frames = spec.shape[1]
    strips = []
    for inv in inventories:
        row = np.full(n_frames, -1, np.int64)
        for sid, start_s, _ in chain:
            seq = units[inv.key].get(sid)
            if seq is None:
                continue
            offset = int(round((start_s - t0) / mel.frame_seconds))
            if offset >= n_frames:
                break
            seq = seq[: n_frames - offset]
            row[offset: offset + len(seq)] = seq
        if (row >= 0).any():
            atlas = atlases.get(inv.key)
            n_units = max(inv.size, int(row.max()) + 1)
            order = atlas.order if atlas else list(range(n_units))
            name = f"codes g{inv.group}" if inv.source == "codevector" else f"k-means L{inv.layer}"
            strips.append((name, row, unit_colours(order, n_units)))
    zoom = loudest_window(spec, TIMELINE_ZOOM_FRAMES) if n_frames > 2 * TIMELINE_ZOOM_FRAMES else None
    fig = unit_timeline_figure(spec, mel, strips, [s for s in spans if s["start_s"] is not None], file_name, t0,
                               label_column, model.model_id, zoom)
    whole = [s["label"] for s in spans if s["start_s"] is None]
    if whole:
        fig.axes[0].set_title(f"the whole recording is labelled {label_column} = {', '.join(whole)}", fontsize=9,
                              loc="left")
    return fig, file_name, len(samples) / mel.sample_rate


def _chunk_table(metrics: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for chunk in np.unique(metrics["chunk"]):
        keep = metrics["chunk"] == chunk
        ppl = metrics["perplexity"][keep]
        rows.append({"chunk": int(chunk), "steps": int(keep.sum()),
                     "last step": int(metrics["step"][keep].max()),
                     "loss": round(float(np.mean(metrics["loss"][keep])), 3),
                     "accuracy": round(float(np.mean(metrics["accuracy"][keep])), 3),
                     "perplexity (per group)": ", ".join(f"{v:.1f}" for v in np.nanmean(ppl, 0)) if ppl.size else "",
                     "unused codes %": round(100 * float(np.mean(metrics["unused_code_share"][keep])), 1)})
    return rows
