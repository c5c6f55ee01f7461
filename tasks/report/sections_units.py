"""The report's sections about discrete units: the unit atlases and their pages, what the network's
filters and units respond to, the unit timeline, unit sequences, and units against labels.

Builders of `tasks/report/sections.py`'s `SECTIONS`: each draws from `ReportInputs` and never opens
the database.
"""

from __future__ import annotations

import time

import numpy as np

from tasks.model.inputs import normalise
from tasks.report.content import PageLink, ReportSection
from tasks.report.drawing import Drawing
from tasks.report.figures_units import (
    lift_text,
    sequence_figure,
    unit_atlas_figure,
    unit_colours,
    unit_label_figure,
    unit_timeline_figure,
)
from tasks.report.inputs import ATLAS_SEGMENTS, SEQUENCE_SEGMENTS, TIMELINE_MAX_S, ReportInputs, TimelineInputs
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
from tasks.report.spectrograms import log_mel, loudest_window
from tasks.report.unit_pages import sequence_context, write_unit_pages

TIMELINE_ZOOM_FRAMES = 80  # frames in the timeline's zoom: wide enough on paper to name every unit


def units_section(inputs: ReportInputs, drawing: Drawing) -> ReportSection:
    """Unit atlases (main layer's k-means units, every codevector group), and a page per atlas unit."""
    scope, settings, mel = inputs.scope, inputs.settings, inputs.mel
    refs, links, tables = [], [], []
    shown = [inv for inv in inputs.atlas_inventories if inv.key in inputs.atlases]
    recording_of, start_of = inputs.column(scope.info.recording), inputs.column(scope.info.start_s)
    where = {sid: (recording_of[sid], start_of[sid]) for sid in inputs.atlas_ids}
    for i, inv in enumerate(shown):
        drawing.say(f"unit atlas: {inv.name}", 0.57 + 0.15 * i / len(shown))
        atlas, sequences, units = inputs.atlases[inv.key], inputs.sequences[inv.key], inputs.atlas_units[inv.key]
        started = time.perf_counter()
        refs.append(drawing.figures.add(
            unit_atlas_figure(atlas, scope.model.model_id, recording_of),
            f"unit-atlas-{inv.key}", f"Unit atlas: {inv.name}",
            "Left of each row: the unit's contrast, its average log-mel window minus the average window of every "
            "frame, red where the unit is louder and blue where quieter, with cells left white unless they stand "
            "beyond chance (the unit sequences shifted in time). A unit with a clear red band, sweep or click "
            "responds to that sound; an all-white contrast is a unit of nothing in particular. Then exemplars "
            "with the unit's frames marked (blue bar), its run lengths, usage and where it is over-represented "
            "(lift: x2 = twice the base rate). Click a unit below to listen.", started))
        drawing.say(f"unit pages: {inv.name}", 0.57 + 0.15 * (i + 0.5) / len(shown))
        contexts = sequence_context(sequences, recording_of, [u.unit for u in atlas.units], mel.frame_seconds)
        for u in atlas.units:
            contexts[u.unit].lift = u.lift
        drawing.say(f"maximising inputs and saliency: {inv.name}", 0.57 + 0.15 * (i + 0.75) / len(shown))
        extras = drawing.features.unit_extras(inv, atlas, inputs.atlas_audio, inputs.centroids[inv.key])
        pages = write_unit_pages(drawing.out_dir, atlas, scope.model.model_id, inputs.atlas_specs, units,
                                 inputs.atlas_audio, where, contexts, len(sequences), drawing.warning, extras)
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
             if inputs.atlases else "No frame-level units for this model: run `ceta2vec embed` with frame vectors.")
    return ReportSection("units", "Unit atlas", intro, refs, tables=tables, links=links)


def _unit_note(unit) -> str:
    signature = f"contrast {unit.distinctness:.1f} dB" if unit.distinctness else "nothing beyond chance"
    return f"{100 * unit.share:.1f}% of frames, {signature}"


def features_section(inputs: ReportInputs, drawing: Drawing) -> ReportSection:
    """The filterbank, attention and maximising inputs; after the units section, which gave the network its
    exemplars."""
    drawing.say("what the filters and units respond to", 0.73)
    return drawing.features.section(drawing.figures, inputs.model.model_id, inputs.scope.layer, drawing.warning)


def timeline_section(inputs: ReportInputs, drawing: Drawing) -> ReportSection:
    main = inputs.main_inventory
    if main is None:
        return ReportSection("timeline", "Unit timeline", "No frame-level units for this model.")
    drawing.say("unit timeline", 0.74)
    if inputs.timeline is None:
        return ReportSection("timeline", "Unit timeline", "No recording with frame-level units to show.")
    started = time.perf_counter()
    fig, seconds = _timeline_figure(inputs, inputs.timeline)
    recording = inputs.timeline.file_name
    ref = drawing.figures.add(
        fig, "unit-timeline", f"Unit timeline: {recording}",
        "The spectrogram of one recording with the unit every frame was assigned beneath it, one strip per unit "
        "inventory, and a zoom where single frames are visible. Units that change where the sound changes, and "
        "repeat where it repeats, track acoustic events.", started)
    return ReportSection("timeline", "Unit timeline",
                         f"{recording}, {seconds:.1f} s: a recording labelled '{inputs.scope.label_column}' when there "
                         "is one (event labels first), then the longest.", [ref])


def _timeline_figure(inputs: ReportInputs, timeline: TimelineInputs):
    model, mel, label_column = inputs.model, inputs.mel, inputs.scope.label_column
    chain, spans = timeline.chain, timeline.spans
    t0 = chain[0][1]
    samples = np.concatenate([timeline.audio[c[0]] for c in chain])[: int(TIMELINE_MAX_S * mel.sample_rate)]
    spec = log_mel(normalise(samples), mel)
    n_frames = spec.shape[1]
    strips = []
    for inv in inputs.atlas_inventories:
        row = np.full(n_frames, -1, np.int64)
        for sid, start_s, _ in chain:
            seq = timeline.units[inv.key].get(sid)
            offset = int(round((start_s - t0) / mel.frame_seconds))
            if seq is None or offset >= n_frames:
                continue
            seq = seq[: n_frames - offset]
            row[offset: offset + len(seq)] = seq
        if (row >= 0).any():
            atlas = inputs.atlases.get(inv.key)
            n_units = max(inv.size, int(row.max()) + 1)
            name = f"codes g{inv.group}" if inv.source == "codevector" else f"k-means L{inv.layer}"
            strips.append((name, row, unit_colours(atlas.order if atlas else list(range(n_units)), n_units)))
    zoom = loudest_window(spec, TIMELINE_ZOOM_FRAMES) if n_frames > 2 * TIMELINE_ZOOM_FRAMES else None
    fig = unit_timeline_figure(spec, mel, strips, [s for s in spans if s["start_s"] is not None],
                               timeline.file_name, t0, label_column, model.model_id, zoom)
    whole = [s["label"] for s in spans if s["start_s"] is None]
    if whole:
        fig.axes[0].set_title(f"the whole recording is labelled {label_column} = {', '.join(whole)}", fontsize=9,
                              loc="left")
    return fig, len(samples) / mel.sample_rate


def sequences_section(inputs: ReportInputs, drawing: Drawing) -> ReportSection:
    """Unit sequence statistics: transitions, rank-frequency, usage."""
    main = inputs.main_inventory
    if main is None:
        return ReportSection("sequences", "Unit sequences", "No frame-level units for this model.")
    drawing.say("unit sequence statistics", 0.86)
    settings, model_id, sequences = inputs.settings, inputs.model.model_id, inputs.sequences
    main_seqs = sequences[main.key]
    n_main = max([main.size] + [int(s.max()) + 1 for s in main_seqs.values() if len(s)])
    bigrams = bigram_counts(main_seqs.values(), n_main)
    atlas = inputs.atlases.get(main.key)
    shown = ([u.unit for u in atlas.units] if atlas
             else [int(u) for u in np.argsort(-bigrams.sum(1))[:settings.atlas_units]])
    rank_freqs = {inv.name: rank_frequency(r["frames"] for r in inputs.stats.get(inv.key, []))
                  for inv in inputs.inventories}
    started = time.perf_counter()
    refs = [drawing.figures.add(
        sequence_figure(bigrams, shown, rank_freqs, rank_frequency(bigrams.ravel()), main.name, model_id),
        "unit-sequences", "Unit transitions and rank-frequency",
        "Left: which unit follows which (repeats merged), for the most used units in atlas order; strong "
        "off-diagonal blocks are units that form larger patterns. Right: unit frequency against rank; a straight "
        "line of slope near -1 is Zipf's law, as for the words of a language.", started)]
    table = []
    for inv in inputs.inventories:
        seqs = [s for s in sequences[inv.key].values() if len(s)]
        frames = [r["frames"] for r in inputs.stats.get(inv.key, [])]
        table.append({"inventory": inv.name, "units used": f"{len(frames)} of {inv.size}",
                      "usage perplexity": round(usage_perplexity(frames), 1),
                      "Zipf slope": round(zipf_slope(rank_frequency(frames)), 2),
                      "frames staying on the same unit": round(self_transition_share(seqs), 3),
                      "mean run (frames)": round(float(np.mean([len(s) / len(collapse_runs(s)) for s in seqs])), 2)
                      if seqs else None})
    return ReportSection(
        "sequences", "Unit sequences",
        f"Transitions over {len(inputs.sequence_ids):,} sampled segments; unit frequencies over the whole workspace.",
        refs, tables=[table])


def labels_section(inputs: ReportInputs, drawing: Drawing) -> ReportSection | None:
    """Units against labels: only with units and labels."""
    scope, main = inputs.scope, inputs.main_inventory
    if main is None or not (scope.label_column and scope.has_labels):
        return None
    drawing.say("units against labels", 0.89)
    label_of = inputs.column(scope.info.label)
    refs, tables = [], []
    inventories = [main] + [inv for inv in inputs.inventories if inv.key == "codevector-g0" and inv != main]
    for inv in inventories:
        seqs = inputs.sequences[inv.key]
        n_units = max([inv.size] + [int(s.max()) + 1 for s in seqs.values() if len(s)])
        table, names = unit_label_counts(seqs, label_of, n_units)
        if not names:
            continue
        per_unit, overall = purity(table)
        atlas = inputs.atlases.get(inv.key)
        units = ([u.unit for u in atlas.units] if atlas
                 else [int(u) for u in np.argsort(-table.sum(1))[:inputs.settings.atlas_units]])
        started = time.perf_counter()
        refs.append(drawing.figures.add(
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
