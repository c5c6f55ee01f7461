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
HEADLINE_METRICS = ("probe_macro_f1", "knn5_macro_f1", "roc_auc")


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


def code_fingerprint() -> dict:
    import hashlib

    files = ("tasks/training/loop.py", "tasks/training/data.py", "tasks/training/model_config.py", "tasks/training/logmel_targets.py")
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
    from tasks.training.logmel_targets import masked_task

    return masked_task(config).chance


def pretrain(ws, settings, budget: Budget, log=print) -> tuple[int, float, dict]:
    """Train the run chunk by chunk until the step budget (or the wall-clock cap) is spent."""
    from tasks.training.run import resolve_run, train_chunk, training_index
    from tasks.workspace import database

    started = time.perf_counter()
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


def embed(ws, run: str, device) -> tuple[str, list[int], str]:
    """Every segment through the latest checkpoint, mean-pooled per layer, stored as the embed flow stores it."""
    from tasks.catalog.embeddings import pending_segments, register
    from tasks.catalog.runs import checkpoint_to_embed
    from tasks.embedding.run import all_layers, commit_batch, embed_segments
    from tasks.workspace import database

    with database.writing(ws) as conn:
        model = checkpoint_to_embed(conn, ws, run, None)
        register(conn, ws, model)
        layers = all_layers(model)
        refs = pending_segments(conn, ws, model, layers)
    staged = embed_segments(ws, model, refs, layers, ["mean", "std"], device, write_frames=False)
    with database.writing(ws) as conn:
        commit_batch(conn, ws, model, staged, layers)
    return model.model_id, layers, model.export_dir


def paired_margin(metric: str, x: np.ndarray, reference: np.ndarray, labelled, seed: int,
                  n_boot: int) -> list[float]:
    """metric(x) - metric(reference) with an interval from resampling whole recordings: the same
    draws score both, so the interval is of the difference, not of two independent numbers."""
    from tasks.evaluation.metrics import Predictions, bootstrap, knn_predictions, macro_f1, probe_predictions, roc_auc

    y, groups = labelled.labels, labelled.recordings

    def predict(features: np.ndarray) -> Predictions:
        if metric.startswith("knn"):
            return knn_predictions(features, y, groups, int(metric[3]))
        return probe_predictions(features, y, groups, seed)

    score = roc_auc if metric == "roc_auc" else macro_f1
    a, b = predict(x), predict(reference)

    def on(p: Predictions, idx: np.ndarray) -> float:
        if metric == "roc_auc" and len(np.unique(p.y_true[idx])) < 2:
            return float("nan")
        return score(Predictions(p.y_true[idx], p.y_pred[idx], None if p.score is None else p.score[idx]))

    everything = np.arange(len(y))
    low, high = bootstrap(lambda idx: on(a, idx) - on(b, idx), groups, n=n_boot, seed=seed)
    return [on(a, everything) - on(b, everything), low, high]


def random_twin_std(config: dict, audio: list[np.ndarray], frame_seconds: float, seed: int) -> dict[int, np.ndarray]:
    """Standard deviation over time of every layer of the random-weight twin (the same weights as
    evaluate_run.random_model_features draws for its means)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    from tasks.embedding.encode import embed_batch

    torch.manual_seed(seed)
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.from_dict(config)).eval()
    layers = list(range(model.config.num_hidden_layers + 1))
    out: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    for start in range(0, len(audio), 8):
        batch = audio[start : start + 8]
        for emb in embed_batch(model, [str(i) for i in range(len(batch))], batch, layers, frame_seconds,
                               torch.device("cpu")):
            for layer in layers:
                out[layer].append(emb.layers[layer].std(0))
    return {layer: np.stack(v) for layer, v in out.items()}


def score(ws, model_id: str, layers: list[int], export_dir: str, label_column: str, metric: str, seed: int,
          n_boot: int, pooling: str = "mean") -> tuple[dict, dict, str, list[float], object]:
    """The evaluate flow's scoring: every layer, log-mel and MFCC statistics, every random-weight layer.
    `pooling` "mean+std" scores [mean, std] over time of each layer, as the log-mel and MFCC
    statistics are (the evaluate flow scores means only)."""
    from transformers import Wav2Vec2Config

    from tasks.catalog.evaluations import labelled_segments
    from tasks.catalog.recordings import segment_refs
    from tasks.embedding.run import read_audio
    from tasks.evaluation.run import baseline_features, model_vectors, random_model_features, score_features
    from tasks.workspace import database

    with database.reading(ws) as conn:
        labelled = labelled_segments(conn, label_column, None)
        embedded = {r[0] for r in conn.execute(
            "SELECT DISTINCT segment_id FROM embedded_segments WHERE model_id = ?", [model_id]).fetchall()}
        labelled = labelled.restricted_to(embedded)
        features = {f"layer {layer}": np.hstack([model_vectors(conn, model_id, layer, labelled.segment_ids, how)
                                                 for how in pooling.split("+")]) for layer in layers}
        refs = segment_refs(conn, ws, labelled.segment_ids)
        rate = int(conn.execute("SELECT value FROM workspace_config WHERE key = 'sample_rate'").fetchone()[0])
        frame = conn.execute("SELECT frame_seconds FROM embedding_models WHERE model_id = ?", [model_id]).fetchone()[0]
    audio = read_audio(refs)
    features.update(baseline_features(audio, rate))
    config = Wav2Vec2Config.from_pretrained(export_dir).to_dict()
    spread = random_twin_std(config, audio, frame, seed) if "std" in pooling else {}
    for layer, x in random_model_features(config, audio, frame, seed).items():
        features[f"random layer {layer}"] = np.hstack([x, spread[layer]]) if spread else x
    rows = {}
    for name, x in features.items():
        card = score_features(x, labelled, seed, n_boot)
        rows[name] = {m: [float(v) for v in card[m]] for m in HEADLINE_METRICS if m in card}
    if metric not in next(iter(rows.values())):
        raise SystemExit(f"metric {metric} is not scored for this label set (roc_auc needs two classes)")
    margins = {name: paired_margin(metric, x, features["log-mel stats"], labelled, seed, n_boot)
               for name, x in features.items() if name != "log-mel stats"}
    best = max((n for n in rows if n.startswith("layer ")), key=lambda n: rows[n][metric][0])
    over_random = paired_margin(metric, features[best], features[f"random {best}"], labelled, seed, n_boot)
    return rows, margins, best, over_random, labelled


def run_bench(workdir: Path, corpus: str, label_column: str, pretrain_fields: dict, budget: Budget,
              sample_rate: int, segment_seconds: float, metric: str = "probe_macro_f1", seed: int = 0,
              n_boot: int = 200, synthetic: dict | None = None, pooling: str = "mean", log=print) -> BenchResult:
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
        "chunks": math.ceil(budget.steps / chunk_steps), "schedule_steps": budget.steps, "keep_last": 1})
    steps, seconds, end = pretrain(ws, settings, budget, log)
    t0 = time.perf_counter()
    model_id, layers, export = embed(ws, "bench", pick_device(settings.device))
    log(f"  embed: {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    rows, margins, best, over_random, labelled = score(ws, model_id, layers, export, label_column, metric, seed,
                                                       n_boot, pooling)
    log(f"  score: {time.perf_counter() - t0:.0f} s", flush=True)
    return BenchResult(label_column, metric, len(labelled.segment_ids), len(set(labelled.recordings)),
                       labelled.class_counts(), steps, seconds, end, rows, margins, best, over_random,
                       {**settings.model_dump(mode="json", exclude={"workspace"}), "pooling": pooling}, code)


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
    parser.add_argument("--metric", default="probe_macro_f1", choices=HEADLINE_METRICS)
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
    parser.add_argument("--pooling", default="mean", choices=["mean", "mean+std"],
                        help="segment vector of a layer: its mean over time (as the evaluate flow), or mean and std "
                             "(as the log-mel and MFCC statistics)")
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
    os.environ.setdefault("PREFECT_HOME", str(workdir / "prefect"))
    print(f"{' '.join(sys.argv[1:]) or '(defaults)'}\nworkdir {workdir}", flush=True)
    started = time.perf_counter()
    try:
        result = run_bench(
            workdir, args.corpus, args.label_column or ("call_type" if synthetic else "species"), fields,
            Budget(args.steps, args.chunk_steps, args.max_minutes),
            args.sample_rate, args.segment_seconds or (2.0 if synthetic else 4.0),
            args.metric, args.seed, args.bootstrap,
            dict(recordings_per_class=args.recordings_per_class, segments_per_recording=args.segments_per_recording,
                 snr_db=tuple(args.snr_db)) if synthetic else None, args.pooling)
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
