"""Everything a report shows, computed from a workspace: figures, thumbnails and clips under the report
folder, and the `ReportContent` the HTML writer renders.

    out_dir/figures/*.png|svg                        every figure, PNG and SVG
    out_dir/media/thumbs/<segment>.png               spectrogram thumbnails of the explorer's media points
    out_dir/media/audio/<segment>.wav                their audio
    out_dir/media/units/<inventory>/unit<U>-<i>.wav  exemplar clips of the unit atlases

Re-running replaces figures/ and media/ whole, so nothing of an earlier report lingers. The
workspace is read through short read-only connections, so an ingest or embed can commit between them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from schemas.names import file_stem
from schemas.settings import ReportSettings
from tasks.catalog.embeddings import EmbeddingModel, embedded_segment_ids, resolve_model, sample_ids, segment_vectors
from tasks.catalog.evaluations import read_scorecard, resolve_label_column, resolve_layer
from tasks.catalog.recordings import SegmentInfo, data_summary, recording_segments, segment_info, segment_labels_of
from tasks.catalog.runs import checkpoint_step, model_record, train_metrics
from tasks.catalog.units import (
    UnitInventory,
    frame_units,
    frame_vectors,
    kmeans_centroids,
    timeline_recording,
    unit_inventories,
    unit_stats,
)
from tasks.model.inputs import normalise
from tasks.report.call_density import density_section
from tasks.report.content import ExplorerData, FigureRef, PageLink, ReportContent, ReportSection
from tasks.report.explorer_frames import explorer_columns, explorer_frames
from tasks.report.explorer_review import review_batches
from tasks.report.features_report import FeatureRun
from tasks.report.figures import evaluation_figure, save
from tasks.report.figures_maps import layer_multiples, map_panels, neighbour_gallery
from tasks.report.figures_training import codebook_health_figure, training_curves_figure
from tasks.report.figures_units import (
    lift_text,
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
    self_transition_share,
    unit_label_counts,
    usage_perplexity,
    zipf_slope,
)
from tasks.report.spectrograms import (
    MelConfig,
    log_mel,
    loudest_window,
    mel_config,
    save_thumbnail,
    segment_audio,
    write_clip,
)
from tasks.report.umap_maps import LayerMap, layer_map, neighbour_agreement, segment_clusters
from tasks.report.unit_atlas import UnitAtlas, build_unit_atlas
from tasks.report.unit_pages import UNITS_DIR, sequence_context, write_unit_pages
from tasks.report.verdict import Verdict, build_verdict, report_title, scorecard_key, training_verdict
from tasks.workspace import Workspace, database

FIGURES = "figures"
MEDIA = "media"
ATLAS_SEGMENTS = 200  # segments sampled for unit atlases (average windows and exemplars)
SEQUENCE_SEGMENTS = 5000  # segments sampled for bigrams and units x labels
ATLAS_HALF_WIDTH_S = 0.3  # atlas windows span +-0.3 s around the frame
TIMELINE_MAX_S = 60.0
TIMELINE_ZOOM_FRAMES = 80  # frames in the timeline's zoom: wide enough on paper to name every unit
GALLERY_QUERIES = 4
GALLERY_NEIGHBOURS = 6
MAP_CLUSTERS = 8  # one per colour of the palette
AUDIO_BATCH = 64

Progress = Callable[[str, float], None]


def _safe(name: str) -> str:
    return file_stem(name)


class FigureWriter:
    """Saves figures under out_dir/figures, makes their FigureRefs and times each (draw + save)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.seconds: dict[str, float] = {}

    def add(self, fig, key: str, title: str, caption: str, started: float | None = None) -> FigureRef:
        png, svg = save(fig, self.out_dir / FIGURES / key)
        if started is not None:
            self.seconds[key] = round(time.perf_counter() - started, 2)
        return FigureRef(key, title, caption, png.relative_to(self.out_dir).as_posix(),
                         svg.relative_to(self.out_dir).as_posix())


@dataclass
class ReportScope:
    """What the report is about, resolved from the settings: model, layers, label column, segments shown."""

    model: EmbeddingModel
    label_column: str | None
    layer: int
    layer_reason: str
    layers: list[int]
    embedded: int  # segments with vectors at every layer shown
    ids: list[str]  # the seeded sample shown (all of them up to max_points)
    info: SegmentInfo

    @property
    def has_labels(self) -> bool:
        return any(self.info.label)


def resolve_scope(ws: Workspace, settings: ReportSettings, model: EmbeddingModel | None = None) -> ReportScope:
    """What the report shows; `model` as the caller resolved it (else resolved here from the settings)."""
    with database.reading(ws) as conn:
        model = model or resolve_model(conn, settings.model)
        label_column = resolve_label_column(conn, settings.label_column)
        layer, reason = resolve_layer(conn, model, label_column, settings.layer)
        layers = sorted(set(settings.layers if settings.layers is not None else model.embedded_layers) | {layer})
        missing = [shown for shown in layers if shown not in model.embedded_layers]
        if missing:
            raise database.WorkspaceError(f"{model.model_id} has segment vectors for layers "
                                       f"{', '.join(map(str, model.embedded_layers))}, not {missing}")
        all_ids = embedded_segment_ids(conn, model, layers)
        if not all_ids:
            raise database.WorkspaceError(f"{model.model_id}: no segment has vectors at every layer of {layers}; "
                                       "run `ceta2vec embed` or choose --layers")
        ids = sample_ids(all_ids, settings.max_points, settings.seed)
        info = segment_info(conn, ids, label_column)
    return ReportScope(model, label_column, layer, reason, layers, len(all_ids), ids, info)


def compute_maps(ws: Workspace, scope: ReportScope, settings: ReportSettings,
                 say: Progress = lambda message, fraction: None) -> tuple[dict[int, LayerMap], np.ndarray]:
    """Per layer shown: seeded UMAP coordinates and nearest neighbours; and the k-means clusters of the
    main layer's vectors. Vectors are read one layer at a time, so memory holds one layer."""
    maps: dict[int, LayerMap] = {}
    clusters = np.zeros(len(scope.ids), np.int32)
    for i, layer in enumerate(scope.layers):
        say(f"UMAP and neighbours of layer {layer} ({len(scope.ids):,} segments)", 0.02 + 0.5 * i / len(scope.layers))
        with database.reading(ws) as conn:
            x = segment_vectors(conn, scope.model, layer, scope.ids)
        maps[layer] = layer_map(x, layer, settings.neighbours, settings.umap_neighbors, settings.umap_min_dist,
                                settings.seed)
        if layer == scope.layer:
            clusters = segment_clusters(x, min(MAP_CLUSTERS, max(1, len(scope.ids) // 10)), settings.seed)
        del x
    return maps, clusters


def map_section(scope: ReportScope, maps: dict[int, LayerMap], clusters: np.ndarray,
                figures: FigureWriter) -> ReportSection:
    info, layer, model_id = scope.info, scope.layer, scope.model.model_id
    colour_values = info.label if scope.has_labels else [f"cluster {c}" for c in clusters]
    colour_name = f"label ({scope.label_column})" if scope.has_labels else f"layer-{layer} cluster"
    agreement = {k: neighbour_agreement(m.neighbours, colour_values) for k, m in maps.items()}
    by_chance, commonest = agreement_levels(colour_values)
    started = time.perf_counter()
    refs = [figures.add(
        map_panels(maps[layer].coords, info, clusters, scope.label_column, layer, model_id), f"umap-layer{layer}",
        f"UMAP of layer {layer}, coloured six ways",
        f"Each dot is a segment (mean-pooled layer-{layer} vector), placed so that segments with similar vectors "
        "sit close together. Compare the panels: clusters that follow labels are what the network learned; "
        "clusters that follow recording, site or level may be recording conditions rather than sounds.", started)]
    started = time.perf_counter()
    refs.append(figures.add(
        layer_multiples({k: m.coords for k, m in maps.items()}, colour_values, colour_name, agreement, model_id, layer,
                        by_chance),
        "umap-layers", "UMAP of every layer",
        f"The same segments mapped at each layer, coloured by {colour_name}. The agreement in each title is the share "
        "of a segment's nearest neighbours (cosine, full dimension) that share its colour: where it rises above the "
        "chance levels in the table below, the layer separates them.", started))
    table = [{"layer": k, "map": m.method, "neighbours": "exact" if m.exact_knn else "approximate (NN-descent)",
              f"neighbour agreement ({colour_name})": None if not np.isfinite(agreement[k]) else round(agreement[k], 3),
              "same colour by chance (random neighbours)": round(by_chance, 3),
              "always the commonest colour": round(commonest, 3),
              "kNN s": m.seconds.get("knn"), "UMAP s": m.seconds.get("umap")} for k, m in sorted(maps.items())]
    shown = (f"{len(scope.ids):,} of {scope.embedded:,} segments, a seeded sample." if len(scope.ids) < scope.embedded
             else f"All {len(scope.ids):,} embedded segments.")
    return ReportSection("maps", "Embedding maps",
                         f"Segments of {model_id} at layer {layer} ({scope.layer_reason}) and at every layer shown. "
                         + shown, refs, tables=[table])


def agreement_levels(values: list[str]) -> tuple[float, float]:
    """What neighbour agreement is worth beside: the share of neighbour pairs that agree when neighbours
    are drawn at random (sum of squared colour shares), and the share of the commonest colour (what
    answering it always would score)."""
    named = [v for v in values if v]
    if not named:
        return float("nan"), float("nan")
    _, counts = np.unique(np.asarray(named, dtype=object), return_counts=True)
    p = counts / counts.sum()
    return float((p ** 2).sum()), float(p.max())


@dataclass
class _Context:
    ws: Workspace
    settings: ReportSettings
    out_dir: Path
    scope: ReportScope
    mel: MelConfig
    figures: FigureWriter
    inventories: list[UnitInventory]
    stats: dict[str, list[dict]]
    say: Progress
    atlases: dict[str, UnitAtlas] = field(default_factory=dict)
    sequence_ids: list[str] = field(default_factory=list)  # the seeded sample of bigrams, lift and units x labels
    sequences: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # inventory key -> its frame units
    warning: str | None = None  # the verdict on a model that has not learned, repeated on every unit page
    features: FeatureRun | None = None  # the network itself: filterbank, attention, maximising inputs, saliency

    @property
    def main_inventory(self) -> UnitInventory | None:
        """k-means units of the main layer, else the first codevector group."""
        by_key = {inv.key: inv for inv in self.inventories}
        return (by_key.get(f"kmeans-layer{self.scope.layer}") or by_key.get("codevector-g0")
                or (self.inventories[0] if self.inventories else None))

    @property
    def atlas_inventories(self) -> list[UnitInventory]:
        main = self.main_inventory
        codes = [inv for inv in self.inventories if inv.source == "codevector"]
        return ([main] if main is not None and main not in codes else []) + codes

    def column(self, values) -> dict:
        return dict(zip(self.scope.ids, values))


def build_report_content(ws: Workspace, settings: ReportSettings, out_dir: Path,
                         progress: Progress | None = None, model: EmbeddingModel | None = None) -> ReportContent:
    """Compute every figure, thumbnail and clip of the report into `out_dir` and describe them."""
    say = progress or (lambda message, fraction: None)
    out_dir = Path(out_dir)
    say("reading the workspace", 0.0)
    scope = resolve_scope(ws, settings, model)
    for sub in (FIGURES, MEDIA, UNITS_DIR):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    (out_dir / FIGURES).mkdir(parents=True, exist_ok=True)
    with database.reading(ws) as conn:
        counts = data_summary(conn)
        record = model_record(conn, scope.model.run)
        inventories = unit_inventories(conn, scope.model)
        stats = {inv.key: unit_stats(conn, scope.model, inv) for inv in inventories}
    model = scope.model
    mel = mel_config(model.sample_rate, model.hop, model.receptive_field)
    figures = FigureWriter(out_dir)
    ctx = _Context(ws, settings, out_dir, scope, mel, figures, inventories, stats, say,
                   sequence_ids=sample_ids(scope.ids, SEQUENCE_SEGMENTS, settings.seed))

    verdict = _verdict(ctx, record)
    ctx.warning = verdict.headline if verdict.level == "bad" else None
    ctx.features = FeatureRun(ws.root, ws.root / model.export_dir, settings.features_budget, settings.seed, out_dir,
                              mel, len(ctx.atlas_inventories), say)
    maps, clusters = compute_maps(ws, scope, settings, say)
    say("drawing the maps", 0.53)
    sections = [map_section(scope, maps, clusters, figures), _units_section(ctx),
                _features_section(ctx), _timeline_section(ctx),
                _training_section(ctx, record), _neighbours_section(ctx, maps[scope.layer])]
    sections += _sequence_sections(ctx)
    density = density_section(ws, figures, settings.seed)  # only a workspace with detections has one
    if density is not None:
        sections.append(density)
    explorer = _explorer(ctx, maps, clusters)

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
        {"item": "segments shown", "value": f"{len(scope.ids):,} of {scope.embedded:,} embedded"},
        {"item": "main layer", "value": f"{scope.layer} ({scope.layer_reason})"},
        {"item": "label column", "value": scope.label_column or "none"},
        {"item": "labelled segments shown", "value": f"{sum(1 for v in scope.info.label if v):,}"},
        {"item": "unit inventories", "value": ", ".join(inv.name for inv in inventories) or "none"},
    ]
    configuration = {
        "pretraining": record.get("settings", {}),
        "model": model_essentials(record.get("model_config", {}), model),
        "embedding": {"model": model.model_id, "dim": model.dim, "layers": model.layers,
                      "frame_seconds": model.frame_seconds, "receptive_field_samples": model.receptive_field},
        "report": {**settings.model_dump(), "resolved": {"model": model.model_id, "layer": scope.layer,
                                                          "layers": scope.layers, "label_column": scope.label_column}},
        "spectrograms": {"n_fft": mel.n_fft, "hop": mel.hop, "n_mels": mel.n_mels, "fmax_hz": mel.fmax},
        "figure_seconds": figures.seconds,
    }
    say("report content ready", 1.0)
    return ReportContent(title=report_title(model.model_id, verdict), model_id=model.model_id,
                         generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), summary=summary,
                         configuration=configuration, sections=sections, explorer=explorer, verdict=verdict)


def model_essentials(config: dict, model: EmbeddingModel) -> dict:
    """The Wav2Vec2Config fields that say what the model is (sizes, codebook, negatives, masking, frame
    rate), not the hundred defaults it carries."""
    keys = {"hidden_size": "hidden size", "num_hidden_layers": "transformer layers",
            "num_attention_heads": "attention heads", "intermediate_size": "feed-forward size",
            "conv_dim": "conv channels", "conv_stride": "conv strides", "conv_kernel": "conv kernels",
            "num_codevector_groups": "codebook groups", "num_codevectors_per_group": "codes per group",
            "codevector_dim": "codevector size", "num_negatives": "negatives (distractors)",
            "mask_time_prob": "masked share of frames", "mask_time_length": "mask span (frames)",
            "diversity_loss_weight": "diversity loss weight"}
    out = {label: config[key] for key, label in keys.items() if key in config}
    out["frame rate"] = f"{1 / model.frame_seconds:.0f} frames/s ({1000 * model.frame_seconds:.1f} ms)"
    out["receptive field"] = f"{model.receptive_field} samples ({1000 * model.receptive_field / model.sample_rate:.1f} ms)"
    return out


def _verdict(ctx: _Context, record: dict) -> Verdict:
    """Training health at the embedded checkpoint and the evaluate scorecard, the scorecard figure drawn
    into the report folder."""
    model = ctx.scope.model
    with database.reading(ctx.ws) as conn:
        metrics = train_metrics(conn, model.run)
        step = checkpoint_step(conn, model)
        scorecard = read_scorecard(conn, model.model_id, ctx.scope.label_column)
    health = (training_verdict(metrics, record.get("model_config", {}), model.model_id, step)
              if len(metrics["step"]) else None)
    used = [(f"group {inv.group}", len(ctx.stats.get(inv.key, [])), inv.size)
            for inv in ctx.inventories if inv.source == "codevector"]
    verdict = build_verdict(health, used, scorecard)
    if scorecard is not None:
        column, rows, _ = scorecard
        started = time.perf_counter()
        key = scorecard_key(column)
        png, svg = evaluation_figure(rows, column, model.model_id, ctx.out_dir / FIGURES / key)
        ctx.figures.seconds[key] = round(time.perf_counter() - started, 2)
        verdict.figure = FigureRef(
            key, f"Scorecard for '{column}'",
            "Each layer's score with its 95% bootstrap interval (resampling recordings), beside the baselines "
            "computed on the same segments: log-mel and MFCC statistics and the same network with random weights. "
            "A layer helps only where its interval clears the baselines.",
            png.relative_to(ctx.out_dir).as_posix(), svg.relative_to(ctx.out_dir).as_posix())
    return verdict


def _spectrograms(ws: Workspace, ids: list[str], mel: MelConfig, keep_audio: bool = False
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Log-mel of each segment's valid audio, normalised as the model sees it (zero mean, unit variance)."""
    specs, audio = {}, {}
    for start in range(0, len(ids), AUDIO_BATCH):
        with database.reading(ws) as conn:
            batch = segment_audio(conn, ws, ids[start:start + AUDIO_BATCH])
        for sid, samples in batch.items():
            specs[sid] = log_mel(normalise(samples) if len(samples) else samples, mel)
            if keep_audio:
                audio[sid] = samples
    return specs, audio


def _facets(ctx: _Context) -> dict[str, dict[str, str]]:
    """Each shown segment's label, site and 4-hour block of the day (UTC): what unit lift is taken over."""
    info = ctx.scope.info
    hours = [f"{int(h) // 4 * 4:02d}-{int(h) // 4 * 4 + 4:02d} h UTC" if np.isfinite(h) else "" for h in info.hour_utc]
    return {"label": ctx.column(info.label), "site": ctx.column(info.site), "hour": ctx.column(hours)}


def _sequence_sample(ctx: _Context, inventory: UnitInventory) -> dict[str, np.ndarray]:
    """Frame units of the seeded sequence sample (SEQUENCE_SEGMENTS), read once per inventory."""
    if inventory.key not in ctx.sequences:
        with database.reading(ctx.ws) as conn:
            ctx.sequences[inventory.key] = frame_units(conn, ctx.scope.model, inventory, ctx.sequence_ids)
    return ctx.sequences[inventory.key]


def _units_section(ctx: _Context) -> ReportSection:
    """Unit atlases (main layer's k-means units, every codevector group), and a page per atlas unit."""
    scope, settings = ctx.scope, ctx.settings
    refs, links, tables = [], [], []
    inventories = ctx.atlas_inventories
    facets = _facets(ctx)
    if inventories:
        ctx.say("spectrograms for the unit atlases", 0.56)
        atlas_ids = sample_ids(scope.ids, ATLAS_SEGMENTS, settings.seed)
        specs, audio = _spectrograms(ctx.ws, atlas_ids, ctx.mel, keep_audio=True)
        half_width = max(1, int(round(ATLAS_HALF_WIDTH_S / ctx.mel.frame_seconds)))
        where = {sid: (ctx.column(scope.info.recording)[sid], ctx.column(scope.info.start_s)[sid]) for sid in atlas_ids}
        for i, inv in enumerate(inventories):
            ctx.say(f"unit atlas: {inv.name}", 0.6 + 0.12 * i / len(inventories))
            started = time.perf_counter()
            with database.reading(ctx.ws) as conn:
                units = frame_units(conn, scope.model, inv, atlas_ids)
                centroids = kmeans_centroids(conn, ctx.ws, scope.model, inv.layer) if inv.source == "kmeans" else None

            def vectors_of(batch: list[str], layer: int = inv.layer) -> dict[str, np.ndarray]:
                with database.reading(ctx.ws) as c:
                    return frame_vectors(c, ctx.ws, scope.model, layer, batch)

            sequences = _sequence_sample(ctx, inv)
            atlas = build_unit_atlas(inv, specs, units, ctx.mel, ctx.stats.get(inv.key),
                                     ctx.column(scope.info.label), settings.atlas_units, settings.exemplars,
                                     half_width, centroids, vectors_of if centroids is not None else None,
                                     facets=facets, facet_units=sequences, seed=settings.seed)
            if not atlas.units:
                continue
            ctx.atlases[inv.key] = atlas
            refs.append(ctx.figures.add(
                unit_atlas_figure(atlas, scope.model.model_id, ctx.column(scope.info.recording)),
                f"unit-atlas-{inv.key}", f"Unit atlas: {inv.name}",
                "Left of each row: the unit's contrast, its average log-mel window minus the average window of every "
                "frame, red where the unit is louder and blue where quieter, with cells left white unless they stand "
                "beyond chance (the unit sequences shifted in time). A unit with a clear red band, sweep or click "
                "responds to that sound; an all-white contrast is a unit of nothing in particular. Then exemplars "
                "with the unit's frames marked (blue bar), its run lengths, usage and where it is over-represented "
                "(lift: x2 = twice the base rate). Click a unit below to listen.", started))
            ctx.say(f"unit pages: {inv.name}", 0.6 + 0.12 * (i + 0.5) / len(inventories))
            contexts = sequence_context(sequences, ctx.column(scope.info.recording), [u.unit for u in atlas.units],
                                        ctx.mel.frame_seconds)
            for u in atlas.units:
                contexts[u.unit].lift = u.lift
            ctx.say(f"maximising inputs and saliency: {inv.name}", 0.6 + 0.12 * (i + 0.75) / len(inventories))
            extras = ctx.features.unit_extras(inv, atlas, audio, centroids) if ctx.features else {}
            pages = write_unit_pages(ctx.out_dir, atlas, scope.model.model_id, specs, units, audio, where, contexts,
                                     len(sequences), ctx.warning, extras)
            links += [PageLink(f"unit {u.unit}", pages[u.unit], _unit_note(u), inv.name) for u in atlas.units]
            tables.append([{"inventory": inv.name, "unit": u.unit, "frames": u.frames,
                            "share %": round(100 * u.share, 2), "mean run ms": round(1000 * u.mean_run_s, 1),
                            "contrast dB": round(u.distinctness, 2), "group": u.group,
                            "over-represented (lift)": "; ".join(lift_text(u.lift)) or "none above the base rate"}
                           for u in atlas.units])
    intro = ("What the discrete units sound like: the quantizer's codevectors (wav2vec 2.0's own units) and "
             f"k-means units of layer {scope.layer}. Contrasts and exemplars come from "
             f"{min(len(scope.ids), ATLAS_SEGMENTS)} sampled segments, lift and transitions from "
             f"{min(len(scope.ids), SEQUENCE_SEGMENTS):,}, usage counts from the whole workspace. Each unit has a page "
             "where its exemplars play beside their spectrograms. In the tables, contrast dB is the RMS of the "
             "unit's contrast over the cells beyond chance (0: nothing beyond chance) and group numbers "
             "near-duplicates (units whose contrasts correlate above 0.85)."
             if ctx.atlases else "No frame-level units for this model: run `ceta2vec embed` with frame vectors.")
    return ReportSection("units", "Unit atlas", intro, refs, tables=tables, links=links)


def _features_section(ctx: _Context) -> ReportSection:
    ctx.say("what the filters and units respond to", 0.73)
    return ctx.features.section(ctx.figures, ctx.scope.model.model_id, ctx.scope.layer, ctx.warning)


def _unit_note(unit) -> str:
    signature = f"contrast {unit.distinctness:.1f} dB" if unit.distinctness else "nothing beyond chance"
    return f"{100 * unit.share:.1f}% of frames, {signature}"


def _timeline_section(ctx: _Context) -> ReportSection:
    main = ctx.main_inventory
    if main is None:
        return ReportSection("timeline", "Unit timeline", "No frame-level units for this model.")
    ctx.say("unit timeline", 0.74)
    started = time.perf_counter()
    made = _timeline(ctx, main)
    if made is None:
        return ReportSection("timeline", "Unit timeline", "No recording with frame-level units to show.")
    fig, recording, seconds = made
    ref = ctx.figures.add(
        fig, "unit-timeline", f"Unit timeline: {recording}",
        "The spectrogram of one recording with the unit every frame was assigned beneath it, one strip per unit "
        "inventory, and a zoom where single frames are visible. Units that change where the sound changes, and "
        "repeat where it repeats, track acoustic events.", started)
    return ReportSection("timeline", "Unit timeline",
                         f"{recording}, {seconds:.1f} s: a recording labelled '{ctx.scope.label_column}' when there "
                         "is one (event labels first), then the longest.", [ref])


def _timeline(ctx: _Context, main: UnitInventory):
    model, mel, label_column = ctx.scope.model, ctx.mel, ctx.scope.label_column
    inventories = ctx.atlas_inventories
    with database.reading(ctx.ws) as conn:
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
                continue  # overlapping hops: take the next segment that starts where this one ends
            break  # a gap: stop there
        chain.append((sid, start_s, valid_s))
        end = start_s + valid_s
        if end - chain[0][1] >= TIMELINE_MAX_S:
            break
    with database.reading(ctx.ws) as conn:
        audio = segment_audio(conn, ctx.ws, [c[0] for c in chain])
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
            offset = int(round((start_s - t0) / mel.frame_seconds))
            if seq is None or offset >= n_frames:
                continue
            seq = seq[: n_frames - offset]
            row[offset: offset + len(seq)] = seq
        if (row >= 0).any():
            atlas = ctx.atlases.get(inv.key)
            n_units = max(inv.size, int(row.max()) + 1)
            name = f"codes g{inv.group}" if inv.source == "codevector" else f"k-means L{inv.layer}"
            strips.append((name, row, unit_colours(atlas.order if atlas else list(range(n_units)), n_units)))
    zoom = loudest_window(spec, TIMELINE_ZOOM_FRAMES) if n_frames > 2 * TIMELINE_ZOOM_FRAMES else None
    fig = unit_timeline_figure(spec, mel, strips, [s for s in spans if s["start_s"] is not None], file_name, t0,
                               label_column, model.model_id, zoom)
    whole = [s["label"] for s in spans if s["start_s"] is None]
    if whole:
        fig.axes[0].set_title(f"the whole recording is labelled {label_column} = {', '.join(whole)}", fontsize=9,
                              loc="left")
    return fig, file_name, len(samples) / mel.sample_rate


def _training_section(ctx: _Context, record: dict) -> ReportSection:
    ctx.say("training curves", 0.78)
    model = ctx.scope.model
    with database.reading(ctx.ws) as conn:
        metrics = train_metrics(conn, model.run)
        step = checkpoint_step(conn, model)
    if not len(metrics["step"]):
        return ReportSection("training", "Training health", f"No training metrics recorded for run '{model.run}'.")
    config = record.get("model_config", {})
    started = time.perf_counter()
    refs = [ctx.figures.add(
        training_curves_figure(metrics, step, model.run, config.get("diversity_loss_weight"),
                               config.get("num_negatives")),
        "training-curves", "Training curves",
        "Loss should fall and masked-prediction accuracy rise above chance (dashed: the true target picked among "
        "the distractors by luck); a loss that stalls while accuracy stays at chance means the model is not "
        "learning yet. The dotted line is the embedded checkpoint.", started)]
    usage = {inv.group: np.asarray([r["frames"] for r in ctx.stats.get(inv.key, [])], np.float64)
             for inv in ctx.inventories if inv.source == "codevector"}
    started = time.perf_counter()
    refs.append(ctx.figures.add(
        codebook_health_figure(metrics, config.get("num_codevectors_per_group"), usage, step, model.model_id),
        "codebook-health", "Codebook health",
        "Perplexity is the number of codes in effective use; when it falls towards the red dashed line the codebook "
        "collapses onto a few codes. The right panel shows how evenly the embedded frames use the codes.", started))
    return ReportSection("training", "Training health",
                         f"Per-step metrics of run '{model.run}' ({len(metrics['step'])} steps).", refs,
                         tables=[_chunk_table(metrics)])


def _chunk_table(metrics: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for chunk in np.unique(metrics["chunk"]):
        keep = metrics["chunk"] == chunk
        ppl = metrics["perplexity"][keep]
        rows.append({"chunk": int(chunk), "steps": int(keep.sum()), "last step": int(metrics["step"][keep].max()),
                     "loss": round(float(np.mean(metrics["loss"][keep])), 3),
                     "accuracy": round(float(np.mean(metrics["accuracy"][keep])), 3),
                     "perplexity (per group)": ", ".join(f"{v:.1f}" for v in np.nanmean(ppl, 0)) if ppl.size else "",
                     "unused codes %": round(100 * float(np.mean(metrics["unused_code_share"][keep])), 1)})
    return rows


def _neighbours_section(ctx: _Context, main: LayerMap) -> ReportSection:
    ctx.say("nearest-neighbour gallery", 0.82)
    info, layer = ctx.scope.info, ctx.scope.layer
    queries = _gallery_queries(info, ctx.settings.seed)
    intro = (f"Queries: one segment of each of the most common labels ({ctx.scope.label_column}), seeded."
             if ctx.scope.has_labels else "Queries: seeded random segments.")
    if not queries or len(info) < 2:
        return ReportSection("neighbours", "Nearest neighbours", "Too few segments for neighbours.")
    started = time.perf_counter()
    rows, table = [], []
    for q in queries:
        nbrs = [(r, int(j)) for r, j in enumerate(main.neighbours[q][:GALLERY_NEIGHBOURS]) if j >= 0]
        rows.append({"query": _cell(info, q), "neighbours": [
            dict(_cell(info, j), distance=float(main.distances[q][r]),
                 same_recording=info.recording_id[j] == info.recording_id[q]) for r, j in nbrs]})
        table += [{"query": info.segment_id[q], "query file": info.recording[q], "rank": r + 1,
                   "neighbour": info.segment_id[j], "file": info.recording[j],
                   "start s": round(float(info.start_s[j]), 2), "label": info.label[j],
                   "cosine distance": round(float(main.distances[q][r]), 4)} for r, j in nbrs]
    specs, _ = _spectrograms(ctx.ws, [c["segment_id"] for row in rows for c in [row["query"]] + row["neighbours"]],
                             ctx.mel)
    ref = ctx.figures.add(
        neighbour_gallery(rows, specs, ctx.mel, ctx.scope.model.model_id, layer), "neighbour-gallery",
        "Nearest-neighbour gallery",
        "Each row is a query segment (red frame) and the segments nearest to it. Similar-looking neighbours from "
        "other recordings mean the vectors capture the sound; neighbours only from the same recording mean they "
        "capture the recording.", started)
    return ReportSection("neighbours", "Nearest neighbours", intro, [ref], tables=[table])


def _cell(info: SegmentInfo, i: int) -> dict:
    return {"segment_id": info.segment_id[i], "recording": info.recording[i], "start_s": float(info.start_s[i]),
            "label": info.label[i]}


def _gallery_queries(info: SegmentInfo, seed: int) -> list[int]:
    """One seeded segment of each of the most common labels, then seeded random segments."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(info.label, dtype=object)
    labelled = labels[labels != ""]
    values, counts = np.unique(labelled, return_counts=True) if len(labelled) else (np.array([]), np.array([]))
    chosen = [int(rng.choice(np.flatnonzero(labels == value)))
              for _, value in sorted(zip(-counts, values))[:GALLERY_QUERIES]]
    rest = [int(i) for i in rng.permutation(len(labels)) if i not in chosen]
    return (chosen + rest)[:min(GALLERY_QUERIES, len(labels))]


def _sequence_sections(ctx: _Context) -> list[ReportSection]:
    """Unit sequence statistics, and units against labels when there are labels."""
    main = ctx.main_inventory
    if main is None:
        return [ReportSection("sequences", "Unit sequences", "No frame-level units for this model.")]
    ctx.say("unit sequence statistics", 0.86)
    scope, settings, model_id = ctx.scope, ctx.settings, ctx.scope.model.model_id
    seq_ids = ctx.sequence_ids
    sequences = {inv.key: _sequence_sample(ctx, inv) for inv in ctx.inventories}
    main_seqs = sequences[main.key]
    n_main = max([main.size] + [int(s.max()) + 1 for s in main_seqs.values() if len(s)])
    bigrams = bigram_counts(main_seqs.values(), n_main)
    atlas = ctx.atlases.get(main.key)
    shown = ([u.unit for u in atlas.units] if atlas
             else [int(u) for u in np.argsort(-bigrams.sum(1))[:settings.atlas_units]])
    rank_freqs = {inv.name: rank_frequency(r["frames"] for r in ctx.stats.get(inv.key, [])) for inv in ctx.inventories}
    started = time.perf_counter()
    refs = [ctx.figures.add(
        sequence_figure(bigrams, shown, rank_freqs, rank_frequency(bigrams.ravel()), main.name, model_id),
        "unit-sequences", "Unit transitions and rank-frequency",
        "Left: which unit follows which (repeats merged), for the most used units in atlas order; strong "
        "off-diagonal blocks are units that form larger patterns. Right: unit frequency against rank; a straight "
        "line of slope near -1 is Zipf's law, as for the words of a language.", started)]
    table = []
    for inv in ctx.inventories:
        seqs = [s for s in sequences[inv.key].values() if len(s)]
        frames = [r["frames"] for r in ctx.stats.get(inv.key, [])]
        table.append({"inventory": inv.name, "units used": f"{len(frames)} of {inv.size}",
                      "usage perplexity": round(usage_perplexity(frames), 1),
                      "Zipf slope": round(zipf_slope(rank_frequency(frames)), 2),
                      "frames staying on the same unit": round(self_transition_share(seqs), 3),
                      "mean run (frames)": round(float(np.mean([len(s) / len(collapse_runs(s)) for s in seqs])), 2)
                      if seqs else None})
    sections = [ReportSection(
        "sequences", "Unit sequences",
        f"Transitions over {len(seq_ids):,} sampled segments; unit frequencies over the whole workspace.", refs,
        tables=[table])]
    if scope.label_column and scope.has_labels:
        ctx.say("units against labels", 0.89)
        label_section = _labels_section(ctx, sequences)
        if label_section is not None:
            sections.append(label_section)
    return sections


def _labels_section(ctx: _Context, sequences: dict[str, dict[str, np.ndarray]]) -> ReportSection | None:
    scope, main = ctx.scope, ctx.main_inventory
    label_of = ctx.column(scope.info.label)
    refs, tables = [], []
    inventories = [main] + [inv for inv in ctx.inventories if inv.key == "codevector-g0" and inv != main]
    for inv in inventories:
        seqs = sequences[inv.key]
        n_units = max([inv.size] + [int(s.max()) + 1 for s in seqs.values() if len(s)])
        table, names = unit_label_counts(seqs, label_of, n_units)
        if not names:
            continue
        per_unit, overall = purity(table)
        atlas = ctx.atlases.get(inv.key)
        units = ([u.unit for u in atlas.units] if atlas
                 else [int(u) for u in np.argsort(-table.sum(1))[:ctx.settings.atlas_units]])
        started = time.perf_counter()
        refs.append(ctx.figures.add(
            unit_label_figure(table, units, names, per_unit, overall, inv.name, scope.label_column,
                              scope.model.model_id), f"unit-labels-{inv.key}", f"{inv.name} against labels",
            "Each row: how a unit's labelled frames divide among the labels. A unit whose purity clears the dashed "
            "line (the share of the most common label) is specific to a sound source or call type.", started))
        base = table.sum(0) / max(1, table.sum())
        majority = float(base.max()) if len(base) else 0.0
        tables.append([{"inventory": inv.name, "unit": u, "labelled frames": int(table[u].sum()),
                        "top label": names[int(np.argmax(table[u]))] if table[u].sum() else "",
                        "purity": None if not np.isfinite(per_unit[u]) else round(float(per_unit[u]), 3),
                        "top label's lift over its base rate": round(float(per_unit[u] / base[int(np.argmax(table[u]))]), 2)
                        if table[u].sum() and np.isfinite(per_unit[u]) else None,
                        **{name: int(table[u, c]) for c, name in enumerate(names)}} for u in units])
        tables.append([{"inventory": inv.name, "frame-weighted purity": round(overall, 3),
                        "majority label's share (purity by chance)": round(majority, 3), "labels": len(names),
                        "segments sampled": len(seqs)}])
    if not refs:
        return None
    return ReportSection("labels", "Units and labels",
                         f"How the units divide among the '{scope.label_column}' labels (a frame takes its segment's "
                         "label; unlabelled segments are left out).", refs, tables=tables)


def _explorer(ctx: _Context, maps: dict[int, LayerMap], clusters: np.ndarray) -> ExplorerData:
    """The explorer's columns, with a thumbnail and a clip for `media_points` seeded segments."""
    ctx.say("explorer thumbnails and audio", 0.92)
    scope, info = ctx.scope, ctx.scope.info
    thumbnails, audio_paths = [""] * len(scope.ids), [""] * len(scope.ids)
    media_ids = sample_ids(scope.ids, ctx.settings.media_points, ctx.settings.seed + 1)
    position = {sid: i for i, sid in enumerate(scope.ids)}
    for start in range(0, len(media_ids), AUDIO_BATCH):
        batch = media_ids[start:start + AUDIO_BATCH]
        specs, audio = _spectrograms(ctx.ws, batch, ctx.mel, keep_audio=True)
        for sid in batch:
            if sid not in specs:
                continue
            thumb = ctx.out_dir / MEDIA / "thumbs" / f"{_safe(sid)}.png"
            wav = ctx.out_dir / MEDIA / "audio" / f"{_safe(sid)}.wav"
            save_thumbnail(thumb, specs[sid])
            write_clip(wav, audio[sid], ctx.mel.sample_rate)
            thumbnails[position[sid]] = thumb.relative_to(ctx.out_dir).as_posix()
            audio_paths[position[sid]] = wav.relative_to(ctx.out_dir).as_posix()
        ctx.say("explorer thumbnails and audio", 0.92 + 0.07 * (start + len(batch)) / len(media_ids))
    ctx.say(f"explorer frames: UMAP of up to {ctx.settings.frame_points:,} frames", 0.99)
    frames = explorer_frames(ctx.ws, scope.model, scope.layer, ctx.inventories, ctx.main_inventory, scope.ids,
                             info.valid_s, media_ids, ctx.mel, ctx.settings.frame_points, ctx.settings.umap_neighbors,
                             ctx.settings.umap_min_dist, ctx.settings.seed)
    ctx.say("explorer review: suggested windows of each classifier", 0.995)
    review = review_batches(ctx.ws, ctx.out_dir, MEDIA, ctx.mel, seed=ctx.settings.seed)
    return ExplorerData(
        segment_id=list(scope.ids), recording=info.recording, site=info.site, start_time=info.start_time,
        start_s=info.start_s.astype(np.float64), label=info.label, cluster=clusters.astype(np.int32),
        coords={k: m.coords for k, m in maps.items()}, neighbours={k: m.neighbours for k, m in maps.items()},
        distances={k: m.distances for k, m in maps.items()}, thumbnail=thumbnails, audio=audio_paths,
        label_column=scope.label_column, main_layer=scope.layer, valid_s=info.valid_s, rms_dbfs=info.rms_dbfs,
        hour_utc=info.hour_utc, frames=frames, review=review,
        **explorer_columns(ctx.ws, scope.ids, scope.label_column, ctx.mel))
