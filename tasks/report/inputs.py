"""What a report is drawn from, read from the workspace once: `gather` resolves the settings (model, layers,
label column, the segments shown) and reads every table, vector and sample the sections draw, so that the
section builders (tasks/report/sections*.py) are functions of a `ReportInputs` that never open the database.

Two analyses happen while reading, because what they read is too large to hold: the maps (UMAP and
neighbours of one layer's vectors at a time) and the unit atlases' exemplars (frame vectors in batches,
kept only as each frame's distance to its centroid). The workspace is read through short read-only
connections, so an ingest or embed can commit between them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from schemas.records import CurvePoint
from schemas.settings import ReportSettings
from tasks.catalog.embeddings import EmbeddingModel, embedded_segment_ids, resolve_model, sample_ids, segment_vectors
from tasks.catalog.evaluations import learning_curve, read_scorecard, resolve_label_column, resolve_layer
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
from tasks.report.call_density import DensityInputs, read_density
from tasks.report.learning_curve import CURVE_METRIC, FALLBACK_METRIC
from tasks.report.spectrograms import MelConfig, log_mel, mel_config, segment_audio
from tasks.report.umap_maps import LayerMap, layer_map, segment_clusters
from tasks.report.unit_atlas import UnitAtlas, build_unit_atlas, centroid_distances
from tasks.workspace import Workspace, database

ATLAS_SEGMENTS = 200  # segments sampled for unit atlases (average windows and exemplars)
SEQUENCE_SEGMENTS = 5000  # segments sampled for bigrams and units x labels
ATLAS_HALF_WIDTH_S = 0.3  # atlas windows span +-0.3 s around the frame
TIMELINE_MAX_S = 60.0
GALLERY_QUERIES = 4
GALLERY_NEIGHBOURS = 6
MAP_CLUSTERS = 8  # one per colour of the palette
AUDIO_BATCH = 64

Progress = Callable[[str, float], None]


def _quiet(message: str, fraction: float) -> None:
    pass


@dataclass(frozen=True)
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
                 say: Progress = _quiet) -> tuple[dict[int, LayerMap], np.ndarray]:
    """Per layer shown: seeded UMAP coordinates and nearest neighbours; and the k-means clusters of the
    main layer's vectors. Vectors are read one layer at a time, so memory holds one layer."""
    maps: dict[int, LayerMap] = {}
    clusters = np.zeros(len(scope.ids), np.int32)
    for i, layer in enumerate(scope.layers):
        say(f"UMAP and neighbours of layer {layer} ({len(scope.ids):,} segments)", 0.02 + 0.4 * i / len(scope.layers))
        with database.reading(ws) as conn:
            x = segment_vectors(conn, scope.model, layer, scope.ids)
        maps[layer] = layer_map(x, layer, settings.neighbours, settings.umap_neighbors, settings.umap_min_dist,
                                settings.seed)
        if layer == scope.layer:
            clusters = segment_clusters(x, min(MAP_CLUSTERS, max(1, len(scope.ids) // 10)), settings.seed)
        del x
    return maps, clusters


@dataclass(frozen=True)
class TimelineInputs:
    """The recording the unit timeline shows: its first TIMELINE_MAX_S of contiguous segments, their audio
    and frame units (per inventory key), and its labels."""

    file_name: str
    chain: list[tuple[str, float, float]]  # (segment_id, start_s, valid_s) in order, each with audio
    audio: dict[str, np.ndarray]
    units: dict[str, dict[str, np.ndarray]]
    spans: list[dict]


@dataclass(frozen=True)
class ReportInputs:
    """Everything a report's sections draw, read once. Per unit inventory, dicts are keyed by `inv.key`."""

    settings: ReportSettings
    workspace_root: Path
    scope: ReportScope
    mel: MelConfig
    counts: dict  # data_summary
    record: dict  # the run's models row ({} when not recorded)
    inventories: list[UnitInventory]
    stats: dict[str, list[dict]]  # unit usage over the whole workspace
    metrics: dict[str, np.ndarray]  # the run's per-step training metrics
    checkpoint_step: int | None  # the step of the embedded checkpoint
    scorecard: tuple | None  # read_scorecard: (label column, rows, ...) or None
    maps: dict[int, LayerMap]
    clusters: np.ndarray  # k-means cluster of each shown segment at the main layer
    sequence_ids: list[str]  # the seeded sample of bigrams, lift and units x labels
    sequences: dict[str, dict[str, np.ndarray]]  # frame units of sequence_ids
    atlas_ids: list[str] = field(default_factory=list)  # the seeded ATLAS_SEGMENTS sample
    atlas_specs: dict[str, np.ndarray] = field(default_factory=dict)  # their log-mel spectrograms
    atlas_audio: dict[str, np.ndarray] = field(default_factory=dict)
    atlas_units: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # frame units of atlas_ids
    centroids: dict[str, np.ndarray | None] = field(default_factory=dict)  # k-means centroids (None: codevectors)
    atlases: dict[str, UnitAtlas] = field(default_factory=dict)  # the atlas inventories with units to show
    timeline: TimelineInputs | None = None
    gallery_queries: list[int] = field(default_factory=list)  # rows of scope.info the gallery queries
    gallery_specs: dict[str, np.ndarray] = field(default_factory=dict)  # queries' and neighbours' spectrograms
    density: list[DensityInputs] = field(default_factory=list)  # per label with detections
    curve: list[CurvePoint] = field(default_factory=list)  # every evaluated checkpoint of the run, by step
    curve_metric: str = CURVE_METRIC

    @property
    def model(self) -> EmbeddingModel:
        return self.scope.model

    @property
    def export_dir(self) -> Path:
        """The embedded checkpoint's export: the network the features section loads."""
        return self.workspace_root / self.model.export_dir

    @property
    def main_inventory(self) -> UnitInventory | None:
        return main_inventory(self.inventories, self.scope.layer)

    @property
    def atlas_inventories(self) -> list[UnitInventory]:
        return atlas_inventories(self.inventories, self.scope.layer)

    @property
    def main_map(self) -> LayerMap:
        return self.maps[self.scope.layer]

    def column(self, values) -> dict:
        """segment_id -> value, for a column of the shown segments."""
        return dict(zip(self.scope.ids, values))


def main_inventory(inventories: list[UnitInventory], layer: int) -> UnitInventory | None:
    """k-means units of the main layer, else the first codevector group."""
    by_key = {inv.key: inv for inv in inventories}
    return (by_key.get(f"kmeans-layer{layer}") or by_key.get("codevector-g0")
            or (inventories[0] if inventories else None))


def atlas_inventories(inventories: list[UnitInventory], layer: int) -> list[UnitInventory]:
    """The main inventory, then every codevector group."""
    main = main_inventory(inventories, layer)
    codes = [inv for inv in inventories if inv.source == "codevector"]
    return ([main] if main is not None and main not in codes else []) + codes


def gather(ws: Workspace, settings: ReportSettings, model: EmbeddingModel | None = None,
           say: Progress = _quiet) -> ReportInputs:
    """Read everything the report draws; `model` as the caller resolved it (else from the settings)."""
    say("reading the workspace", 0.0)
    scope = resolve_scope(ws, settings, model)
    model = scope.model
    with database.reading(ws) as conn:
        counts = data_summary(conn)
        record = model_record(conn, model.run)
        inventories = unit_inventories(conn, model)
        stats = {inv.key: unit_stats(conn, model, inv) for inv in inventories}
        metrics = train_metrics(conn, model.run)
        step = checkpoint_step(conn, model)
        scorecard = read_scorecard(conn, model.model_id, scope.label_column)
        curve, curve_metric = [], CURVE_METRIC
        if scorecard is not None:
            for curve_metric in (CURVE_METRIC, FALLBACK_METRIC):  # evaluations older than the pooled probe
                if curve := learning_curve(conn, model.run, scorecard[0], curve_metric):
                    break
    mel = mel_config(model.sample_rate, model.hop, model.receptive_field)
    maps, clusters = compute_maps(ws, scope, settings, say)
    sequence_ids = sample_ids(scope.ids, SEQUENCE_SEGMENTS, settings.seed)
    sequences = {}
    if main_inventory(inventories, scope.layer) is not None:
        say("unit sequences of the sampled segments", 0.43)
        with database.reading(ws) as conn:
            sequences = {inv.key: frame_units(conn, model, inv, sequence_ids) for inv in inventories}
    atlas = _atlas_inputs(ws, scope, settings, mel, inventories, stats, sequences, say)
    queries = gallery_queries(scope.info, settings.seed)
    gallery = {}
    if queries and len(scope.info) >= 2:
        say("spectrograms of the neighbour gallery", 0.52)
        gallery, _ = spectrograms(ws, [scope.info.segment_id[j] for q in queries
                                       for j in [q, *(j for _, j in gallery_neighbours(maps[scope.layer], q))]], mel)
    main = main_inventory(inventories, scope.layer)
    say("the unit timeline's recording", 0.53)
    timeline = (read_timeline(ws, scope, main, atlas_inventories(inventories, scope.layer), mel)
                if main is not None else None)
    say("detections", 0.54)
    with database.reading(ws) as conn:
        density = read_density(conn, settings.seed)
    return ReportInputs(settings, Path(ws.root), scope, mel, counts, record, inventories, stats, metrics, step,
                        scorecard, maps, clusters, sequence_ids, sequences, timeline=timeline,
                        gallery_queries=queries, gallery_specs=gallery, density=density, curve=curve,
                        curve_metric=curve_metric, **atlas)


def _atlas_inputs(ws: Workspace, scope: ReportScope, settings: ReportSettings, mel: MelConfig,
                  inventories: list[UnitInventory], stats: dict[str, list[dict]],
                  sequences: dict[str, dict[str, np.ndarray]], say: Progress) -> dict:
    """The unit atlases' sample (spectrograms, audio, frame units, centroids) and the atlases themselves."""
    shown = atlas_inventories(inventories, scope.layer)
    if not shown:
        return {}
    say("spectrograms for the unit atlases", 0.44)
    ids = sample_ids(scope.ids, ATLAS_SEGMENTS, settings.seed)
    specs, audio = spectrograms(ws, ids, mel, keep_audio=True)
    half_width = max(1, int(round(ATLAS_HALF_WIDTH_S / mel.frame_seconds)))
    labels = dict(zip(scope.ids, scope.info.label))
    facets = segment_facets(scope)
    units, centroids, atlases = {}, {}, {}
    for i, inv in enumerate(shown):
        say(f"unit atlas: {inv.name}", 0.45 + 0.07 * i / len(shown))
        with database.reading(ws) as conn:
            units[inv.key] = frame_units(conn, scope.model, inv, ids)
            centroids[inv.key] = (kmeans_centroids(conn, ws, scope.model, inv.layer) if inv.source == "kmeans"
                                  else None)
        distances = None
        if centroids[inv.key] is not None:
            def vectors_of(batch: list[str], layer: int = inv.layer) -> dict[str, np.ndarray]:
                with database.reading(ws) as c:
                    return frame_vectors(c, ws, scope.model, layer, batch)

            distances = centroid_distances({s: u for s, u in units[inv.key].items() if s in specs and len(u)},
                                           centroids[inv.key], vectors_of)
        atlas = build_unit_atlas(inv, specs, units[inv.key], mel, stats.get(inv.key), labels, settings.atlas_units,
                                 settings.exemplars, half_width, centroids[inv.key], distances=distances,
                                 facets=facets, facet_units=sequences[inv.key], seed=settings.seed)
        if atlas.units:
            atlases[inv.key] = atlas
    return {"atlas_ids": ids, "atlas_specs": specs, "atlas_audio": audio, "atlas_units": units,
            "centroids": centroids, "atlases": atlases}


def segment_facets(scope: ReportScope) -> dict[str, dict[str, str]]:
    """Each shown segment's label, site and 4-hour block of the day (UTC): what unit lift is taken over."""
    info = scope.info
    hours = [f"{int(h) // 4 * 4:02d}-{int(h) // 4 * 4 + 4:02d} h UTC" if np.isfinite(h) else "" for h in info.hour_utc]
    return {name: dict(zip(scope.ids, values)) for name, values in
            (("label", info.label), ("site", info.site), ("hour", hours))}


def spectrograms(ws: Workspace, ids: list[str], mel: MelConfig, keep_audio: bool = False
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Log-mel of each segment's valid audio, normalised as the model sees it (zero mean, unit variance),
    read AUDIO_BATCH segments at a time."""
    specs, audio = {}, {}
    for start in range(0, len(ids), AUDIO_BATCH):
        with database.reading(ws) as conn:
            batch = segment_audio(conn, ws, ids[start:start + AUDIO_BATCH])
        for sid, samples in batch.items():
            specs[sid] = log_mel(normalise(samples) if len(samples) else samples, mel)
            if keep_audio:
                audio[sid] = samples
    return specs, audio


def gallery_queries(info: SegmentInfo, seed: int) -> list[int]:
    """One seeded segment of each of the most common labels, then seeded random segments."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(info.label, dtype=object)
    labelled = labels[labels != ""]
    values, counts = np.unique(labelled, return_counts=True) if len(labelled) else (np.array([]), np.array([]))
    chosen = [int(rng.choice(np.flatnonzero(labels == value)))
              for _, value in sorted(zip(-counts, values))[:GALLERY_QUERIES]]
    rest = [int(i) for i in rng.permutation(len(labels)) if i not in chosen]
    return (chosen + rest)[:min(GALLERY_QUERIES, len(labels))]


def gallery_neighbours(main: LayerMap, query: int) -> list[tuple[int, int]]:
    """The gallery's neighbours of one query row, nearest first: (rank, row)."""
    return [(r, int(j)) for r, j in enumerate(main.neighbours[query][:GALLERY_NEIGHBOURS]) if j >= 0]


def read_timeline(ws: Workspace, scope: ReportScope, main: UnitInventory, inventories: list[UnitInventory],
                  mel: MelConfig) -> TimelineInputs | None:
    """The timeline's recording (labelled first, then the longest) as contiguous segments; None when no
    recording has frame-level units or audio."""
    model, label_column = scope.model, scope.label_column
    with database.reading(ws) as conn:
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
    with database.reading(ws) as conn:
        audio = segment_audio(conn, ws, [c[0] for c in chain])
        units = {inv.key: frame_units(conn, model, inv, [c[0] for c in chain]) for inv in inventories}
    chain = [c for c in chain if c[0] in audio]
    if not chain:
        return None
    return TimelineInputs(file_name, chain, audio, units, spans)
