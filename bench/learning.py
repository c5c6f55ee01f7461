"""Does pretraining learn anything a log-mel summary does not already give? One fixed budget, one answer.

Ingests a labelled corpus into a temporary workspace with the project's ingest code, pretrains
wav2vec 2.0 for a fixed budget of optimiser steps (and an optional wall-clock cap, checked between
chunks), embeds every segment with the embed code, and scores every layer with the evaluate code
(splits by recording, intervals by bootstrap over recordings) beside log-mel statistics, MFCC
statistics and the same architecture with random weights. Prints the table and the margin of each
layer over log-mel statistics on the headline metric, with a *paired* bootstrap interval (the same
resampled recordings score both feature sets), whether the two features' own intervals overlap, and
the best layer's margin over the same layer with random weights (did pretraining add anything?).

Corpora:
  synthetic  call-like signals with known classes, generated here: up- and downsweeps over the same
             band distribution (nearly the same log-mel mean and spread: their direction differs),
             click trains, harmonic stacks and tonal whistles at random pitch, each recording in its
             own coloured ocean-like noise (spectral slope, surf hump, ship hum, swell) at a random SNR.
  shared     the real recordings of ../shared/data/hydrophone, labels from its MANIFEST (species or
             call type, as bench/evaluate_real.py reads them).

Every segment is both pretrained on and scored (self-supervised pretraining sees no labels; the
probe's splits are by recording). The best layer is picked on the same data it is scored on, so its
margin is optimistic for the model: read the per-layer margins too.

Run:  .venv/bin/python bench/learning.py [--corpus synthetic|shared] [--steps 200] [--preset tiny]
          [--crop-seconds 2] [--batch-size 8] [--learning-rate 5e-4] [--mask-time-length 10]
          [--mask-time-prob 0.65] [--model-overrides KEY=VALUE ...] [--set FIELD=VALUE ...]
          [--max-minutes M] [--pooling mean|mean+std] [--sample-rate 8000] [--device cpu|cuda] [--json OUT]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "hydrophone"
CLASSES = ("upsweep", "downsweep", "pulsed", "harmonic", "whistle")
HEADLINE_METRICS = ("probe_pooled_macro_f1", "probe_macro_f1", "knn5_macro_f1", "roc_auc")


# ---------------------------------------------------------------------------------------------
# Synthetic corpus


def ocean_noise(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise shaped like a hydrophone's background: a 1/f^alpha slope (wind and distant
    shipping), a broad surf/rain hump, sometimes a ship's hum with harmonics, a slow swell."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    f[0] = f[1]
    shape = (f / 100.0) ** (-rng.uniform(0.6, 1.8) / 2)
    hump = rng.uniform(0.05, 0.4) * rate
    shape = shape * (1 + rng.uniform(0, 4) * np.exp(-0.5 * ((f - hump) / (0.2 * hump)) ** 2))
    x = np.fft.irfft(spectrum * shape, n)
    x /= x.std()
    t = np.arange(n) / rate
    if rng.random() < 0.5:
        hum = rng.uniform(40, 160)
        x += sum(rng.uniform(0.05, 0.3) / k * np.sin(2 * np.pi * k * hum * t + rng.uniform(0, 6.3))
                 for k in range(1, 5))
    x *= 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 6.3))
    return (x / x.std()).astype(np.float32)


def _tone_phase(freq: np.ndarray, rate: int) -> np.ndarray:
    return 2 * np.pi * np.cumsum(freq) / rate


def call(kind: str, rate: int, rng: np.random.Generator) -> np.ndarray:
    """One call of `kind`, 0.3-0.9 s, with a tapered envelope and random pitch."""
    from scipy.signal.windows import tukey

    n = int(rng.uniform(0.3, 0.9) * rate)
    t = np.arange(n) / rate
    nyq = rate / 2
    if kind in ("upsweep", "downsweep"):
        # Both directions draw their band from one distribution: the same bands for the same time.
        low = rng.uniform(0.06, 0.3) * nyq
        high = min(low * rng.uniform(1.6, 3.0), 0.85 * nyq)
        freq = low * (high / low) ** (t / t[-1])
        freq = freq if kind == "upsweep" else freq[::-1]
        x = np.sin(_tone_phase(freq, rate))
        if rng.random() < 0.5 and 2 * high < 0.95 * nyq:
            x += rng.uniform(0.2, 0.5) * np.sin(2 * _tone_phase(freq, rate))
    elif kind == "whistle":
        freq = rng.uniform(0.1, 0.8) * nyq * (1 + rng.uniform(0.005, 0.03) * np.sin(2 * np.pi * rng.uniform(3, 8) * t))
        x = np.sin(_tone_phase(freq, rate))
    elif kind == "harmonic":
        f0 = rng.uniform(0.03, 0.12) * nyq * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
        tilt = rng.uniform(0.5, 1.5)
        x = sum(np.sin(k * _tone_phase(f0, rate)) / k**tilt for k in range(1, 9) if k * f0.max() < 0.9 * nyq)
    elif kind == "pulsed":
        centre, width = rng.uniform(0.15, 0.8) * nyq, rng.uniform(0.3e-3, 1.2e-3)
        x = np.zeros(n)
        interval = 1 / rng.uniform(10, 80)
        k = np.arange(-int(4 * width * rate), int(4 * width * rate) + 1) / rate
        pulse = np.cos(2 * np.pi * centre * k) * np.exp(-((k / width) ** 2))
        for start in np.arange(rng.uniform(0, interval), t[-1], interval):
            i = int(start * rate)
            x[i : i + len(pulse)] += pulse[: n - i]
    else:
        raise ValueError(f"unknown call kind {kind!r}")
    x = x * tukey(n, 0.3)
    return (x / max(np.sqrt(np.mean(x**2)), 1e-12)).astype(np.float32)


def make_synthetic(folder: Path, rate: int, recordings_per_class: int, segments_per_recording: int,
                   segment_seconds: float, snr_db: tuple[float, float], seed: int) -> Path:
    """WAV recordings, one class each, a call in every segment slot; returns the labels CSV."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = folder / "labels.csv"
    seg_n = int(round(segment_seconds * rate))
    rows = []
    for r in range(recordings_per_class):
        for kind in CLASSES:
            x = ocean_noise(seg_n * segments_per_recording, rate, rng)
            snr = rng.uniform(*snr_db)
            for slot in range(segments_per_recording):
                c = call(kind, rate, rng)[: seg_n - 1]
                at = slot * seg_n + int(rng.integers(0, seg_n - len(c)))
                x[at : at + len(c)] += c * 10 ** (snr / 20)
            name = f"{kind}-{r:03d}.wav"
            sf.write(folder / name, 0.3 * x / np.abs(x).max(), rate, subtype="PCM_16")
            rows.append([name, kind, f"{snr:.1f}"])
    with open(labels, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["file", "call_type", "snr_db"])
        writer.writerows(rows)
    return labels


def shared_labels(path: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from evaluate_real import write_labels  # the same label reading as the evaluate benchmark

    write_labels(path)
    return path


# ---------------------------------------------------------------------------------------------
# Pipeline: ingest, pretrain, embed, score


@dataclass
class Budget:
    steps: int = 200
    chunk_steps: int | None = None  # steps per checkpointed chunk (default: all in one)
    max_minutes: float | None = None  # wall-clock cap on training, checked between chunks


@dataclass
class BenchResult:
    label_column: str
    metric: str
    segments: int
    recordings: int
    classes: dict
    steps_done: int
    train_seconds: float
    train_end: dict  # loss, accuracy, perplexity over the last steps
    rows: dict[str, dict[str, list[float]]]  # features -> metric -> [value, low, high]
    margins: dict[str, list[float]]  # features -> [value, low, high] of (features - log-mel)
    best_layer: str
    over_random: list[float]  # best layer - the random twin's same layer: did pretraining add anything?
    settings: dict = field(default_factory=dict)
    code: dict = field(default_factory=dict)  # hashes of the training code: others change it between trials
    curve: list[dict] = field(default_factory=list)  # per kept checkpoint: hours seen, best layer, all layers
    slope_per_hour: float = float("nan")  # of the best layer's headline metric, per hour of audio seen


def code_fingerprint() -> dict:
    import hashlib

    files = ("tasks/training/loop.py", "tasks/training/data.py", "tasks/model/config.py", "tasks/training/logmel_targets.py",
             "tasks/training/data2vec.py", "tasks/model/frontend_init.py")
    return {f: hashlib.sha256((ROOT / f).read_bytes()).hexdigest()[:10] for f in files if (ROOT / f).exists()}


def ingest(ws, sources: Path, labels: Path, sample_rate: int, segment_seconds: float) -> int:
    """The ingest flow's per-file work (decode, resample, segment, quality, commit) without Prefect."""
    from schemas.settings import IngestSettings
    from tasks.audio.failures import IngestFailure
    from tasks.catalog import recordings
    from tasks.ingest.discovery import content_hash, discover
    from tasks.ingest.labels import read_labels
    from tasks.ingest.recording import prepare_recording
    from tasks.workspace import database

    settings = IngestSettings(sources=[str(sources)], workspace=str(ws.root), sample_rate=sample_rate,
                              segment_seconds=segment_seconds)
    ws.create()
    files = discover(settings.sources).files
    with database.writing(ws) as conn:
        database.apply_schema(conn, ws)
        recordings.ensure_dataset_config(conn, {
            "sample_rate": str(settings.sample_rate), "segment_seconds": str(settings.segment_seconds),
            "hop_seconds": str(settings.hop_seconds), "final_segment": settings.final_segment,
        })
        done = 0
        for source in files:
            try:
                staged = prepare_recording(source, content_hash(source.path), settings, ws)
            except IngestFailure as failure:
                print(f"  not ingested: {source.path.name}: {failure}", flush=True)
                continue
            recordings.commit_recording(conn, ws, staged, "bench-learning")
            done += 1
        database.refresh_segment_audio_view(conn, ws)
        recordings.apply_labels_file(conn, str(labels), read_labels(labels), [str(f.path) for f in files])
    return done


def chance_accuracy(config) -> float:
    from tasks.model.objectives import masked_task

    return masked_task(config).chance


def pretrain(ws, settings, budget: Budget, log=print) -> tuple[int, float, dict]:
    """Train the run chunk by chunk until the step budget (or the wall-clock cap) is spent."""
    from tasks.training.run import resolve_run, train_chunk, training_index
    from tasks.workspace import database

    from tasks.training.activity import ensure_activity

    started = time.perf_counter()
    if settings.crop_sampling == "activity":
        with database.writing(ws) as conn:
            log(f"  activity scored for {ensure_activity(conn, ws)} segments")
    steps_done, tail = 0, []
    while steps_done < budget.steps:
        with database.reading(ws) as conn:
            spec = resolve_run(conn, ws, settings)
            index = training_index(conn, ws, spec)
        if steps_done == 0:
            log(f"  model: {spec.plan.summary()}; {len(index)} segments, {index.hours * 60:.1f} min to train on")
            chance = chance_accuracy(spec.model_config())
        result = train_chunk(spec, index)
        steps_done += len(result.metrics)
        tail = (tail + result.metrics)[-20:]
        elapsed = time.perf_counter() - started
        last = result.metrics[-min(10, len(result.metrics)):]
        log(f"  chunk {result.checkpoint.chunk}: step {steps_done}, loss {np.mean([m.loss for m in last]):.3f}, "
            f"masked-prediction accuracy {np.mean([m.accuracy for m in last]):.3f} (chance {chance:.3f}), "
            f"{elapsed:.0f} s", flush=True)
        if budget.max_minutes is not None and elapsed > 60 * budget.max_minutes and steps_done < budget.steps:
            log(f"  wall-clock cap of {budget.max_minutes} min reached after {steps_done} steps")
            break
    end = {"loss": float(np.mean([m.loss for m in tail])), "accuracy": float(np.mean([m.accuracy for m in tail])),
           "perplexity": [float(p) for p in np.mean([m.perplexity for m in tail], axis=0)],
           "chance": chance}
    return steps_done, time.perf_counter() - started, end


def embed(ws, run: str, device, chunk: int | None = None) -> tuple[str, list[int], str]:
    """Every segment through a checkpoint (default: the latest), pooled per layer every way the
    probe may choose from (mean, std, max), stored as the embed flow stores it."""
    from tasks.catalog.embeddings import pending_segments, register
    from tasks.catalog.runs import checkpoint_to_embed
    from tasks.embedding.run import all_layers, commit_batch, embed_segments
    from tasks.workspace import database

    with database.writing(ws) as conn:
        model = checkpoint_to_embed(conn, ws, run, chunk)
        register(conn, ws, model)
        layers = all_layers(model)
        refs = pending_segments(conn, ws, model, layers)
    staged = embed_segments(ws, model, refs, layers, ["mean", "std", "max"], device, write_frames=False)
    with database.writing(ws) as conn:
        commit_batch(conn, ws, model, staged, layers)
    return model.model_id, layers, model.export_dir


def predictions(metric: str, features, labelled, seed: int):
    """Cross-validated predictions of one feature set for `metric`; `features`: its pooling
    options (the pooled probe chooses among them inside the training folds) and its plain vector."""
    from tasks.evaluation.metrics import knn_predictions, pooled_probe_predictions, probe_predictions

    y, groups = labelled.labels, labelled.recordings
    if metric.startswith("knn"):
        return knn_predictions(features.vector, y, groups, int(metric[3]))
    if metric == "probe_pooled_macro_f1":
        return pooled_probe_predictions(features.options, y, groups, seed)
    return probe_predictions(features.vector, y, groups, seed)


def metric_on(metric: str, p, idx: np.ndarray) -> float:
    from tasks.evaluation.metrics import Predictions, macro_f1, roc_auc

    if metric == "roc_auc" and len(np.unique(p.y_true[idx])) < 2:
        return float("nan")
    score = roc_auc if metric == "roc_auc" else macro_f1
    return score(Predictions(p.y_true[idx], p.y_pred[idx], None if p.score is None else p.score[idx]))


def paired_margin(metric: str, a, b, labelled, seed: int, n_boot: int) -> list[float]:
    """metric(a) - metric(b) from two feature sets' predictions, with an interval from resampling
    whole recordings: the same draws score both, so the interval is of the difference, not of two
    independent numbers."""
    from tasks.evaluation.metrics import bootstrap

    everything = np.arange(len(labelled.labels))
    low, high = bootstrap(lambda idx: metric_on(metric, a, idx) - metric_on(metric, b, idx), labelled.recordings,
                          n=n_boot, seed=seed)
    return [metric_on(metric, a, everything) - metric_on(metric, b, everything), low, high]


@dataclass
class FeatureSet:
    vector: np.ndarray  # what the plain probe, k-NN and retrieval score (layers: `--pooling`; baselines: mean+std)
    options: dict  # pooling -> features, for the probe that chooses its pooling inside the training folds


def score(ws, model_id: str, layers: list[int], export_dir: str, label_column: str, metric: str, seed: int,
          n_boot: int, pooling: str = "mean", with_baselines: bool = True) -> tuple[dict, dict, str, list[float], object]:
    """The evaluate flow's scoring: every layer, all layers side by side, log-mel and MFCC
    statistics, every random-weight layer, each with the pooling options of tasks.evaluation.
    `pooling` is the plain vector of a layer ("mean" as the evaluate flow, or "mean+std")."""
    from transformers import Wav2Vec2Config

    from tasks.catalog.evaluations import labelled_segments
    from tasks.catalog.recordings import segment_refs
    from tasks.embedding.run import read_audio
    from tasks.evaluation.run import (all_layers_options, baseline_pooling_options, model_pooling_options,
                                      random_model_options, score_features)
    from tasks.workspace import database

    with database.reading(ws) as conn:
        labelled = labelled_segments(conn, label_column, None)
        embedded = {r[0] for r in conn.execute(
            "SELECT DISTINCT segment_id FROM embedded_segments WHERE model_id = ?", [model_id]).fetchall()}
        labelled = labelled.restricted_to(embedded)
        per_layer = {layer: model_pooling_options(conn, model_id, layer, labelled.segment_ids) for layer in layers}
        refs = segment_refs(conn, ws, labelled.segment_ids)
        rate = int(conn.execute("SELECT value FROM workspace_config WHERE key = 'sample_rate'").fetchone()[0])
        frame = conn.execute("SELECT frame_seconds FROM embedding_models WHERE model_id = ?", [model_id]).fetchone()[0]
    features = {f"layer {layer}": FeatureSet(options[pooling], options) for layer, options in per_layer.items()}
    everything = all_layers_options(list(per_layer.values()))
    features["all layers"] = FeatureSet(everything[pooling], everything)
    if with_baselines:
        audio = read_audio(refs)
        for name, options in baseline_pooling_options(audio, rate).items():
            features[name] = FeatureSet(options["mean+std"], options)
        config = Wav2Vec2Config.from_pretrained(export_dir).to_dict()
        for layer, options in random_model_options(config, audio, frame, seed).items():
            features[f"random layer {layer}"] = FeatureSet(options[pooling], options)
    everything_index = np.arange(len(labelled.labels))
    if not with_baselines:  # a point on the learning curve: the headline metric only, no intervals
        rows = {name: {metric: [metric_on(metric, predictions(metric, f, labelled, seed), everything_index),
                                float("nan"), float("nan")]} for name, f in features.items()}
        return rows, {}, max((n for n in rows if n.startswith("layer ")), key=lambda n: rows[n][metric][0]), [], labelled
    from tasks.evaluation.metrics import bootstrap

    predicted = {name: predictions(metric, f, labelled, seed) for name, f in features.items()}
    rows = {}
    for name, f in features.items():
        card = score_features(f.vector, labelled, seed, n_boot)
        rows[name] = {m: [float(v) for v in card[m]] for m in HEADLINE_METRICS if m in card}
        if metric == "probe_pooled_macro_f1":  # once, from the predictions the margins use too
            rows[name][metric] = [metric_on(metric, predicted[name], everything_index),
                                  *bootstrap(lambda idx: metric_on(metric, predicted[name], idx), labelled.recordings,
                                             n=n_boot, seed=seed)]
    if metric not in next(iter(rows.values())):
        raise SystemExit(f"metric {metric} is not scored for this label set (roc_auc needs two classes)")
    margins = {name: paired_margin(metric, p, predicted["log-mel stats"], labelled, seed, n_boot)
               for name, p in predicted.items() if name != "log-mel stats"}
    best = max((n for n in rows if n.startswith("layer ")), key=lambda n: rows[n][metric][0])
    over_random = paired_margin(metric, predicted[best], predicted[f"random {best}"], labelled, seed, n_boot)
    return rows, margins, best, over_random, labelled


def learning_curve(ws, run: str, settings, label_column: str, metric: str, seed: int, device, log=print) -> list[dict]:
    """The headline metric of the best layer and of all layers at every kept checkpoint, against
    hours of audio seen (steps x batch x crop): is more training still paying off?"""
    from tasks.model import checkpoints

    curve = []
    seconds_per_step = settings.batch_size * settings.grad_accum * settings.crop_seconds
    for info in checkpoints.complete(ws.checkpoints_dir / run):
        model_id, layers, export = embed(ws, run, device, info.chunk)
        rows, _, best, _, _ = score(ws, model_id, layers, export, label_column, metric, seed, 10,
                                    with_baselines=False)
        curve.append({"chunk": info.chunk, "step": info.step, "hours_seen": info.step * seconds_per_step / 3600,
                      "best_layer": best, "best": rows[best][metric][0], "all_layers": rows["all layers"][metric][0]})
        log(f"  curve: step {info.step} ({curve[-1]['hours_seen']:.2f} h seen): {best} {curve[-1]['best']:.3f}, "
            f"all layers {curve[-1]['all_layers']:.3f}", flush=True)
    return curve


def slope_per_hour(curve: list[dict], key: str = "best") -> float:
    """Least-squares slope of the curve's metric per hour of audio seen."""
    if len(curve) < 2:
        return float("nan")
    hours = np.array([c["hours_seen"] for c in curve])
    return float(np.polyfit(hours, np.array([c[key] for c in curve]), 1)[0])


def run_bench(workdir: Path, corpus: str, label_column: str, pretrain_fields: dict, budget: Budget,
              sample_rate: int, segment_seconds: float, metric: str = "probe_pooled_macro_f1", seed: int = 0,
              n_boot: int = 200, synthetic: dict | None = None, pooling: str = "mean", log=print,
              curve: bool = True) -> BenchResult:
    """Ingest → pretrain → embed → score, in `workdir`; the core of this benchmark."""
    from schemas.settings import PretrainSettings
    from tasks.model.device import pick_device
    from tasks.workspace import Workspace

    ws = Workspace.at(str(workdir / "ws"))
    code = code_fingerprint()  # as the training imports it, before anyone edits it mid-run
    if corpus == "synthetic":
        source = workdir / "audio"
        labels = make_synthetic(source, sample_rate, seed=seed, segment_seconds=segment_seconds, **(synthetic or {}))
    elif corpus == "shared":
        source, labels = SHARED, shared_labels(workdir / "labels.csv")
    else:
        raise ValueError(f"unknown corpus {corpus!r}")
    t0 = time.perf_counter()
    files = ingest(ws, source, labels, sample_rate, segment_seconds)
    log(f"  ingest: {files} recordings, {time.perf_counter() - t0:.0f} s", flush=True)
    chunk_steps = min(budget.chunk_steps or budget.steps, budget.steps)
    settings = PretrainSettings(**{
        "seed": seed, **pretrain_fields, "workspace": str(ws.root), "run": "bench", "steps_per_chunk": chunk_steps,
        "chunks": math.ceil(budget.steps / chunk_steps), "schedule_steps": budget.steps,
        "keep_last": math.ceil(budget.steps / chunk_steps)})  # every chunk's checkpoint: the learning curve
    steps, seconds, end = pretrain(ws, settings, budget, log)
    return score_trained(ws, settings, label_column, metric, seed, n_boot, pooling, steps, seconds, end, code,
                         curve, log)


def score_trained(ws, settings, label_column: str, metric: str, seed: int, n_boot: int, pooling: str,
                  steps: int, seconds: float, end: dict, code: dict, curve: bool = True, log=print) -> BenchResult:
    """Embed and score a trained bench workspace (its latest checkpoint, and the curve of every kept one)."""
    from tasks.model.device import pick_device

    device = pick_device(settings.device)
    points = learning_curve(ws, "bench", settings, label_column, metric, seed, device, log) if curve else []
    t0 = time.perf_counter()
    model_id, layers, export = embed(ws, "bench", device)
    log(f"  embed: {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    rows, margins, best, over_random, labelled = score(ws, model_id, layers, export, label_column, metric, seed,
                                                       n_boot, pooling)
    log(f"  score: {time.perf_counter() - t0:.0f} s", flush=True)
    return BenchResult(label_column, metric, len(labelled.segment_ids), len(set(labelled.recordings)),
                       labelled.class_counts(), steps, seconds, end, rows, margins, best, over_random,
                       {**settings.model_dump(mode="json", exclude={"workspace"}), "pooling": pooling}, code,
                       points, slope_per_hour(points))


def rescore(workdir: Path, label_column: str, metric: str, seed: int, n_boot: int, pooling: str,
            curve: bool = True) -> BenchResult:
    """Score a workspace an earlier run kept (`--workdir`) with today's scoring, without training again."""
    from schemas.settings import PretrainSettings
    from tasks.model import checkpoints
    from tasks.workspace import Workspace, database

    ws = Workspace.at(str(workdir / "ws"))
    import torch

    latest = checkpoints.complete(ws.checkpoints_dir / "bench")[-1]
    stored = torch.load(latest.path / "state.pt", map_location="cpu", weights_only=False)["settings"]
    with database.writing(ws) as conn:
        # today's scoring embeds with every pooling it chooses from: vectors of an earlier run go
        for model_id, table in conn.execute(
                "SELECT model_id, embedding_table FROM embedding_models WHERE run = 'bench'").fetchall():
            conn.execute(f"DELETE FROM {table}")
            conn.execute("DELETE FROM embedded_segments WHERE model_id = ?", [model_id])
    settings = PretrainSettings(**stored)
    return score_trained(ws, settings, label_column, metric, seed, n_boot, pooling, latest.step, float("nan"),
                         {"loss": float("nan"), "accuracy": float("nan"), "perplexity": [], "chance": float("nan")},
                         code_fingerprint(), curve)


# ---------------------------------------------------------------------------------------------
# Output


def _ci(values: list[float] | None) -> str:
    if not values:
        return ""
    value, low, high = values
    return f"{value:+.3f} [{low:+.3f}, {high:+.3f}]" if math.isfinite(low) else f"{value:+.3f}"


def _plain(values: list[float] | None) -> str:
    return _ci(values).replace("+", "") if values else ""


def overlap(a: list[float], b: list[float]) -> bool:
    return a[1] <= b[2] and b[1] <= a[2]


def print_result(result: BenchResult) -> None:
    metrics = [m for m in HEADLINE_METRICS if m in result.rows["log-mel stats"]]
    print(f"\n'{result.label_column}': {result.segments} segments, {result.recordings} recordings; "
          f"classes {json.dumps(result.classes)}")
    print(f"pretraining: {result.steps_done} steps in {result.train_seconds:.0f} s; last steps: loss "
          f"{result.train_end['loss']:.3f}, masked-prediction accuracy {result.train_end['accuracy']:.3f} "
          f"(chance {result.train_end['chance']:.3f}), "
          f"perplexity {[round(p, 1) for p in result.train_end['perplexity']]}")
    print(f"model layers and random twin pooled over time as: {result.settings.get('pooling', 'mean')}")
    header = ["features", *metrics, f"{result.metric} - log-mel (paired)"]
    lines = [[name, *(_plain(card.get(m)) for m in metrics), _ci(result.margins.get(name))]
             for name, card in result.rows.items()]
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *lines]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    best, logmel = result.rows[result.best_layer][result.metric], result.rows["log-mel stats"][result.metric]
    margin = result.margins[result.best_layer]
    print(f"\nbest layer by {result.metric}: {result.best_layer} {_plain(best)}; log-mel stats {_plain(logmel)}")
    print(f"margin best layer - log-mel: {_ci(margin)} (paired bootstrap over recordings); "
          f"intervals {'overlap' if overlap(best, logmel) else 'do not overlap'}; "
          f"{'the model is ahead' if margin[1] > 0 else 'log-mel is ahead' if margin[2] < 0 else 'no clear winner'}")
    print(f"margin best layer - the same layer with random weights: {_ci(result.over_random)} (paired)")
    if result.curve:
        print(f"\nlearning curve ({result.metric}, point values; log-mel stats {logmel[0]:.3f}, "
              f"random {result.best_layer} {result.rows['random ' + result.best_layer][result.metric][0]:.3f}):")
        for c in result.curve:
            print(f"  step {c['step']:>6}  {c['hours_seen']:7.3f} h seen  best {c['best_layer']}: {c['best']:.3f}  "
                  f"all layers: {c['all_layers']:.3f}")
        print(f"slope of the best layer: {result.slope_per_hour:+.3f} per hour of audio seen")


def _key_values(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=["synthetic", "shared"], default="synthetic")
    parser.add_argument("--label-column", help="default: call_type (synthetic), species (shared)")
    parser.add_argument("--metric", default="probe_pooled_macro_f1", choices=HEADLINE_METRICS,
                        help="headline: the linear probe with its pooling (mean, mean+std, mean+max) chosen inside "
                             "the training folds (default), the mean-pooled probe, 5-NN, or ROC-AUC")
    parser.add_argument("--sample-rate", type=int, default=8000, help="Hz the corpus is ingested at")
    parser.add_argument("--segment-seconds", type=float, help="default: 2 (synthetic), 4 (shared)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--chunk-steps", type=int, help="steps per checkpointed chunk (default: all)")
    parser.add_argument("--max-minutes", type=float, help="wall-clock cap on training, checked between chunks")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "base"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-seconds", type=float, default=2.0)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--mask-time-prob", type=float)
    parser.add_argument("--mask-time-length", type=int)
    parser.add_argument("--model-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Wav2Vec2Config fields, e.g. num_codevectors_per_group=32 diversity_loss_weight=0.5")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="other PretrainSettings fields")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--pooling", default="mean", choices=["mean", "mean+std", "mean+max"],
                        help="plain segment vector of a layer (k-NN, the plain probe): its mean over time (as the "
                             "evaluate flow), or with its std or max")
    parser.add_argument("--no-curve", action="store_true", help="skip the learning curve (scores every checkpoint)")
    parser.add_argument("--rescore", help="score the workspace an earlier run kept in this --workdir, no training")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is shared)")
    parser.add_argument("--recordings-per-class", type=int, default=12)
    parser.add_argument("--segments-per-recording", type=int, default=4)
    parser.add_argument("--snr-db", type=float, nargs=2, default=[-6.0, 6.0])
    parser.add_argument("--workdir", help="keep the workspace here (default: a temporary folder, removed)")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    synthetic = args.corpus == "synthetic"
    fields = {"preset": args.preset, "batch_size": args.batch_size, "crop_seconds": args.crop_seconds,
              "device": args.device, "model_overrides": _key_values(args.model_overrides), **_key_values(args.set)}
    for name in ("learning_rate", "mask_time_prob", "mask_time_length"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ceta2vec-learning-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(workdir / "prefect"))
    print(f"{' '.join(sys.argv[1:]) or '(defaults)'}\nworkdir {workdir}", flush=True)
    started = time.perf_counter()
    label_column = args.label_column or ("call_type" if synthetic else "species")
    if args.rescore:
        result = rescore(Path(args.rescore), label_column, args.metric, args.seed, args.bootstrap, args.pooling,
                         not args.no_curve)
        print_result(result)
        if args.json:
            Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], **asdict(result)}, indent=1))
        return 0
    try:
        result = run_bench(
            workdir, args.corpus, label_column, fields,
            Budget(args.steps, args.chunk_steps, args.max_minutes),
            args.sample_rate, args.segment_seconds or (2.0 if synthetic else 4.0),
            args.metric, args.seed, args.bootstrap,
            dict(recordings_per_class=args.recordings_per_class, segments_per_recording=args.segments_per_recording,
                 snr_db=tuple(args.snr_db)) if synthetic else None, args.pooling, curve=not args.no_curve)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print_result(result)
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], **asdict(result)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
