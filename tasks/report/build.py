"""A report's content: `gather` the inputs once (tasks/report/inputs.py), draw the verdict and every section
of `SECTIONS` from them (tasks/report/sections.py), then the explorer's data; the HTML writer renders the
`ReportContent` this returns.

Re-running replaces figures/ and media/ whole, so nothing of an earlier report lingers (the folder's
layout: tasks/report/drawing.py).
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from schemas.settings import ReportSettings
from tasks.catalog.embeddings import EmbeddingModel
from tasks.report.content import FigureRef, ReportContent
from tasks.report.drawing import FIGURES, MEDIA, Drawing, FigureWriter, Progress
from tasks.report.explorer_data import explorer_data
from tasks.report.features_report import FeatureRun
from tasks.report.figures import evaluation_figure
from tasks.report.inputs import ReportInputs, compute_maps, gather, resolve_scope  # noqa: F401 - build's names too
from tasks.report.sections import draw_sections
from tasks.report.unit_pages import UNITS_DIR
from tasks.report.verdict import Verdict, build_verdict, report_title, scorecard_key, training_verdict
from tasks.workspace import Workspace


def build_report_content(ws: Workspace, settings: ReportSettings, out_dir: Path,
                         progress: Progress | None = None, model: EmbeddingModel | None = None) -> ReportContent:
    """Compute every figure, thumbnail and clip of the report into `out_dir` and describe them."""
    say = progress or (lambda message, fraction: None)
    out_dir = Path(out_dir)
    inputs = gather(ws, settings, model, say)
    for sub in (FIGURES, MEDIA, UNITS_DIR):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    (out_dir / FIGURES).mkdir(parents=True, exist_ok=True)
    figures = FigureWriter(out_dir)
    verdict = report_verdict(inputs, figures)
    features = FeatureRun(inputs.workspace_root, inputs.export_dir, settings.features_budget, settings.seed, out_dir,
                          inputs.mel, len(inputs.atlas_inventories), say)
    drawing = Drawing(out_dir, figures, features, verdict.headline if verdict.level == "bad" else None, say)
    sections = draw_sections(inputs, drawing)
    explorer = explorer_data(ws, inputs, drawing)
    say("report content ready", 1.0)
    return ReportContent(title=report_title(inputs.model.model_id, verdict), model_id=inputs.model.model_id,
                         generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         summary=summary_rows(inputs), configuration=configuration(inputs, figures),
                         sections=sections, explorer=explorer, verdict=verdict)


def report_verdict(inputs: ReportInputs, figures: FigureWriter) -> Verdict:
    """Training health at the embedded checkpoint and the evaluate scorecard, the scorecard figure drawn
    into the report folder."""
    model, metrics = inputs.model, inputs.metrics
    health = (training_verdict(metrics, inputs.record.get("model_config", {}), model.model_id, inputs.checkpoint_step)
              if len(metrics["step"]) else None)
    used = [(f"group {inv.group}", len(inputs.stats.get(inv.key, [])), inv.size)
            for inv in inputs.inventories if inv.source == "codevector"]
    verdict = build_verdict(health, used, inputs.scorecard)
    if inputs.scorecard is not None:
        column, rows, _ = inputs.scorecard
        started = time.perf_counter()
        key = scorecard_key(column)
        png, svg = evaluation_figure(rows, column, model.model_id, figures.out_dir / FIGURES / key)
        figures.seconds[key] = round(time.perf_counter() - started, 2)
        verdict.figure = FigureRef(
            key, f"Scorecard for '{column}'",
            "Each layer's score with its 95% bootstrap interval (resampling recordings), beside the baselines "
            "computed on the same segments: log-mel and MFCC statistics and the same network with random weights. "
            "A layer helps only where its interval clears the baselines.",
            png.relative_to(figures.out_dir).as_posix(), svg.relative_to(figures.out_dir).as_posix())
    return verdict


def summary_rows(inputs: ReportInputs) -> list[dict]:
    """The data summary: workspace, recordings, model, what is shown."""
    counts, record, scope, model = inputs.counts, inputs.record, inputs.scope, inputs.model
    return [
        {"item": "workspace", "value": str(inputs.workspace_root)},
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
        {"item": "unit inventories", "value": ", ".join(inv.name for inv in inputs.inventories) or "none"},
    ]


def configuration(inputs: ReportInputs, figures: FigureWriter) -> dict:
    """The settings the report and its model were made with, and how long each figure took."""
    record, scope, model, mel = inputs.record, inputs.scope, inputs.model, inputs.mel
    return {
        "pretraining": record.get("settings", {}),
        "model": model_essentials(record.get("model_config", {}), model),
        "embedding": {"model": model.model_id, "dim": model.dim, "layers": model.layers,
                      "frame_seconds": model.frame_seconds, "receptive_field_samples": model.receptive_field},
        "report": {**inputs.settings.model_dump(), "resolved": {"model": model.model_id, "layer": scope.layer,
                                                                 "layers": scope.layers,
                                                                 "label_column": scope.label_column}},
        "spectrograms": {"n_fft": mel.n_fft, "hop": mel.hop, "n_mels": mel.n_mels, "fmax_hz": mel.fmax},
        "figure_seconds": figures.seconds,
    }


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
