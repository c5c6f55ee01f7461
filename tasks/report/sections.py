"""The report's sections, in the order the page shows them: `SECTIONS` lists the builders.

A builder is a function `(inputs, drawing) -> ReportSection | None` that draws from `ReportInputs`
(tasks/report/inputs.py) and never opens the database; None leaves its section out. A new section is
one such function, listed in `SECTIONS` (and, when it needs something not yet read, a field of
`ReportInputs` filled by `gather`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from tasks.report.call_density import density_section
from tasks.report.content import ReportSection
from tasks.report.drawing import Drawing, FigureWriter
from tasks.report.figures_maps import layer_multiples, map_panels, neighbour_gallery
from tasks.report.figures_training import codebook_health_figure, training_curves_figure
from tasks.report.inputs import ReportInputs, ReportScope, gallery_neighbours
from tasks.report.sections_units import (
    features_section,
    labels_section,
    sequences_section,
    timeline_section,
    units_section,
)
from tasks.report.learning_curve import learning_curve_figure, summarise
from tasks.report.umap_maps import LayerMap, neighbour_agreement

SectionBuilder = Callable[[ReportInputs, Drawing], "ReportSection | None"]


def maps_section(inputs: ReportInputs, drawing: Drawing) -> ReportSection:
    drawing.say("drawing the maps", 0.56)
    return map_section(inputs.scope, inputs.maps, inputs.clusters, drawing.figures)


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


def training_section(inputs: ReportInputs, drawing: Drawing) -> ReportSection:
    drawing.say("training curves", 0.78)
    model, metrics, step, figures = inputs.model, inputs.metrics, inputs.checkpoint_step, drawing.figures
    if not len(metrics["step"]):
        return ReportSection("training", "Training health", f"No training metrics recorded for run '{model.run}'.")
    config = inputs.record.get("model_config", {})
    started = time.perf_counter()
    refs = [figures.add(
        training_curves_figure(metrics, step, model.run, config.get("diversity_loss_weight"),
                               config.get("num_negatives")),
        "training-curves", "Training curves",
        "Loss should fall and masked-prediction accuracy rise above chance (dashed: the true target picked among "
        "the distractors by luck); a loss that stalls while accuracy stays at chance means the model is not "
        "learning yet. The dotted line is the embedded checkpoint.", started)]
    usage = {inv.group: np.asarray([r["frames"] for r in inputs.stats.get(inv.key, [])], np.float64)
             for inv in inputs.inventories if inv.source == "codevector"}
    started = time.perf_counter()
    refs.append(figures.add(
        codebook_health_figure(metrics, config.get("num_codevectors_per_group"), usage, step, model.model_id),
        "codebook-health", "Codebook health",
        "Perplexity is the number of codes in effective use; when it falls towards the red dashed line the codebook "
        "collapses onto a few codes. The right panel shows how evenly the embedded frames use the codes.", started))
    return ReportSection("training", "Training health",
                         f"Per-step metrics of run '{model.run}' ({len(metrics['step'])} steps).", refs,
                         tables=[chunk_table(metrics)])


def chunk_table(metrics: dict[str, np.ndarray]) -> list[dict]:
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


def neighbours_section(inputs: ReportInputs, drawing: Drawing) -> ReportSection:
    drawing.say("nearest-neighbour gallery", 0.82)
    scope, main, queries = inputs.scope, inputs.main_map, inputs.gallery_queries
    info = scope.info
    intro = (f"Queries: one segment of each of the most common labels ({scope.label_column}), seeded."
             if scope.has_labels else "Queries: seeded random segments.")
    if not queries or len(info) < 2:
        return ReportSection("neighbours", "Nearest neighbours", "Too few segments for neighbours.")
    started = time.perf_counter()
    rows, table = [], []
    for q in queries:
        nbrs = gallery_neighbours(main, q)
        rows.append({"query": _cell(info, q), "neighbours": [
            dict(_cell(info, j), distance=float(main.distances[q][r]),
                 same_recording=info.recording_id[j] == info.recording_id[q]) for r, j in nbrs]})
        table += [{"query": info.segment_id[q], "query file": info.recording[q], "rank": r + 1,
                   "neighbour": info.segment_id[j], "file": info.recording[j],
                   "start s": round(float(info.start_s[j]), 2), "label": info.label[j],
                   "cosine distance": round(float(main.distances[q][r]), 4)} for r, j in nbrs]
    ref = drawing.figures.add(
        neighbour_gallery(rows, inputs.gallery_specs, inputs.mel, scope.model.model_id, scope.layer),
        "neighbour-gallery", "Nearest-neighbour gallery",
        "Each row is a query segment (red frame) and the segments nearest to it. Similar-looking neighbours from "
        "other recordings mean the vectors capture the sound; neighbours only from the same recording mean they "
        "capture the recording.", started)
    return ReportSection("neighbours", "Nearest neighbours", intro, [ref], tables=[table])


def _cell(info, i: int) -> dict:
    return {"segment_id": info.segment_id[i], "recording": info.recording[i], "start_s": float(info.start_s[i]),
            "label": info.label[i]}


def detections_section(inputs: ReportInputs, drawing: Drawing) -> ReportSection | None:
    """Only a workspace with detections has one."""
    return density_section(inputs.density, drawing.figures)


# The page's sections, in order.
def learning_curve_section(inputs: ReportInputs, drawing: Drawing) -> ReportSection | None:
    """The headline metric against hours of audio seen, when the run's checkpoints were evaluated."""
    if not inputs.curve:
        return None
    drawing.say("the learning curve", 0.79)
    column = inputs.scorecard[0] if inputs.scorecard else ""
    summary = summarise(inputs.curve, inputs.curve_metric)
    refs = []
    if len(inputs.curve) >= 2:
        started = time.perf_counter()
        refs.append(drawing.figures.add(
            learning_curve_figure(inputs.curve, inputs.curve_metric, inputs.model.run, column), "learning-curve",
            "Learning curve",
            "Each point is a checkpoint of the run, scored by `ceta2vec evaluate --all-checkpoints` (splits by "
            "recording; bars: 95 % intervals over recordings; the label is the best layer). Dashed lines and bands: "
            "the baselines scored on the same segments. A curve still rising says more training may pay off; a flat "
            "one below log-mel statistics says this recipe will not get there by itself.", started))
    table = [{"chunk": p.chunk, "step": p.step, "hours seen": f"{p.hours_seen:.3f}", "best layer": p.best_layer,
              "best": f"{p.best[0]:.3f}", "all layers": "—" if p.all_layers is None else f"{p.all_layers[0]:.3f}",
              "log-mel stats": f"{p.baselines.get('log-mel stats', (float('nan'),))[0]:.3f}"} for p in inputs.curve]
    return ReportSection("learning-curve", "Is more training paying off?", summary.text, refs, tables=[table])


SECTIONS: tuple[SectionBuilder, ...] = (
    maps_section, units_section, features_section, timeline_section, training_section, learning_curve_section,
    neighbours_section,
    sequences_section, labels_section, detections_section,
)


def draw_sections(inputs: ReportInputs, drawing: Drawing,
                  builders: tuple[SectionBuilder, ...] = SECTIONS) -> list[ReportSection]:
    """Every section the inputs have, in the order of `builders`."""
    return [section for section in (build(inputs, drawing) for build in builders) if section is not None]

