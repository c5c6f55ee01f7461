"""Pretrain flow: wav2vec 2.0 from scratch on the workspace's segments, one checkpointed chunk per task.

    resolve run → re-commit checkpoints a crash left uncommitted → chunk → commit → chunk → ...

Killing it anywhere and re-running continues from the last complete chunk; raising `chunks`
continues a finished run.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.runtime import policies as policy
from flows.runtime.limits import gpu as gpu_slot
from flows.runtime.names import named_by
from flows.runtime.progress import Progress
from schemas.names import artifact_key
from schemas.records import StepMetrics
from schemas.results import PretrainResult
from schemas.settings import PretrainSettings
from tasks.catalog import runs, status
from tasks.model import checkpoints
from tasks.model.device import pick_device
from tasks.training.activity import ensure_activity
from tasks.training.run import (
    ChunkResult,
    RunSpec,
    collapse_warning,
    resolve_run,
    stored_settings,
    train_chunk,
    training_index,
)
from tasks.workspace import Workspace, database

PROGRESS_EVERY_S = 2.0


# Not cached (it writes the models row); retried on a lock held past the wait: its writes are upserts.
@task(name="prepare-run", cache_policy=NO_CACHE, retries=policy.DB_RETRIES, retry_delay_seconds=policy.DB_RETRY_DELAYS,
      retry_condition_fn=policy.retry_transient, timeout_seconds=policy.PREPARE_RUN_TIMEOUT_S)
def prepare_run(settings: PretrainSettings) -> RunSpec:
    ws = Workspace.at(settings.workspace)
    log = get_run_logger()
    with database.writing(ws) as conn:
        database.apply_schema(conn, ws)
        spec = resolve_run(conn, ws, settings)
        if spec.settings.crop_sampling == "activity":
            if scored := ensure_activity(conn, ws):
                log.info("activity scored for %d segments: crops are drawn towards it", scored)
        index = training_index(conn, ws, spec)
        model = spec.model_config()
        from transformers import Wav2Vec2ForPreTraining  # only for the parameter count

        parameters = sum(p.numel() for p in Wav2Vec2ForPreTraining(model).parameters())
        runs.upsert_model(conn, {
            "run": spec.run, "preset": spec.settings.preset, "settings": stored_settings(spec),
            "model_config": spec.config, "feature_encoder": spec.plan.describe(),
            "sample_rate": spec.plan.sample_rate, "frame_rate_hz": spec.plan.frame_rate_hz,
            "receptive_field_ms": 1000 * spec.plan.receptive_field_seconds, "parameters": parameters,
            "segments_used": len(index), "hours_used": index.hours,
            "excluded_recordings": spec.settings.exclude_recordings, "init_from": spec.settings.init_from,
            **asdict(runs.run_progress(conn, spec.run)),
        })
        for info, metrics in runs.uncommitted_checkpoints(conn, spec.run, spec.run_dir):
            log.info("recording chunk %d of %s, written before an interruption", info.chunk, spec.run)
            runs.commit_chunk(conn, ws, spec.run, info, metrics)
    log.info("run %s (%s preset, %.1f M parameters): %s", spec.run, spec.settings.preset, parameters / 1e6, spec.plan.summary())
    log.info("training data: %d segments, %.3f h", len(index), index.hours)
    return spec


# Not cached: the checkpoint folder is the record of a chunk done. Retried on storage errors only
# (a retry starts again from the latest complete checkpoint: the same steps, the same losses);
# its timeout is set per run from the chunk's size (policy.chunk_timeout_s).
@task(name="train-chunk", task_run_name="train {spec.run} chunk {chunk}", cache_policy=NO_CACHE,
      retries=1, retry_delay_seconds=30, retry_condition_fn=policy.retry_transient_not_timeouts)
def run_chunk(spec: RunSpec, chunk: int) -> ChunkResult:
    ws = Workspace.at(spec.settings.workspace)
    written = next((i for i in checkpoints.complete(spec.run_dir) if i.chunk == chunk), None)
    if written is not None:  # an earlier attempt wrote it and then failed (pruning, say): not trained twice
        return ChunkResult.written(written)
    with database.reading(ws) as conn:
        index = training_index(conn, ws, spec)
    log = get_run_logger()
    steps = spec.settings.steps_per_chunk
    shown = Progress(steps, "step", f"chunk {chunk}", f"{spec.run}: steps of chunk {chunk}", every_s=PROGRESS_EVERY_S)

    def on_step(m: StepMetrics) -> None:
        if shown.advance(loss=f"{m.loss:.3f}", acc=f"{m.accuracy:.2f}"):
            log.debug("step %d: loss %.4f (contrastive %.4f, diversity %.4f), accuracy %.3f, perplexity %s, "
                      "lr %.2e, temperature %.3f, %.1f audio-s/s", m.step, m.loss, m.contrastive_loss,
                      m.diversity_loss, m.accuracy, [round(p, 1) for p in m.perplexity], m.learning_rate,
                      m.temperature, m.audio_seconds_per_second)

    with shown, gpu_slot(pick_device(spec.settings.device)):  # CUDA chunks of concurrent runs take turns
        return train_chunk(spec, index, on_step, on_log=log.info)  # on_log: torchrun's output (nproc > 1)


@task(name="copy-checkpoints", task_run_name="copy the checkpoints of {run_dir} to {url}", cache_policy=NO_CACHE,
      retries=policy.IO_RETRIES, retry_delay_seconds=policy.IO_RETRY_DELAYS, retry_condition_fn=policy.retry_transient)
def mirror_checkpoints(run_dir: str, url: str) -> list[str]:
    from tasks.workspace.storage import mirror_checkpoints as mirror

    copied = mirror(Path(run_dir), url)
    get_run_logger().info("checkpoints copied to %s/checkpoints/%s: %s", url.rstrip("/"), Path(run_dir).name,
                          ", ".join(copied) or "already there")
    return copied


@flow(name="pretrain", flow_run_name=named_by("pretrain", ("run", "preset"), "tiny"))
def pretrain(settings: PretrainSettings) -> PretrainResult:
    """Pretrain wav2vec 2.0 on the workspace's segments in resumable, checkpointed chunks."""
    log = get_run_logger()
    ws = Workspace.at(settings.workspace)
    _require_segments(ws)
    spec = prepare_run(settings)
    with database.reading(ws) as conn:
        start = runs.chunks_done(conn, spec.run)
    if start >= spec.settings.chunks:
        log.info("run %s already has %d chunk(s); raise --chunks to continue it", spec.run, start)
    summaries = []
    for chunk in range(start + 1, spec.settings.chunks + 1):
        s = spec.settings
        result = run_chunk.with_options(timeout_seconds=policy.chunk_timeout_s(
            s.steps_per_chunk, s.grad_accum, s.batch_size, s.crop_seconds))(spec, chunk)
        rows = runs.metrics_as_rows(result.metrics)
        with database.writing(ws) as conn:
            runs.commit_chunk(conn, ws, spec.run, result.checkpoint, rows)
        if ws.storage.remote:  # a workspace whose segments are on object storage keeps its checkpoints there too
            mirror_checkpoints(str(spec.run_dir), ws.storage.url)
        summary = _chunk_summary(result)
        summaries.append(summary)
        create_table_artifact(
            key=f"train-metrics-{artifact_key(spec.run)}",
            table=_metric_rows(result.metrics),
            description=f"{spec.run} chunk {chunk}: training health per step (all steps: table train_metrics)",
        )
        log.info("chunk %d done: %s", chunk, chunk_line(summary))
        warning = collapse_warning(result.metrics, spec.model_config().num_codevectors_per_group)
        if warning:
            log.warning("%s: %s", spec.run, warning)
        if result.health:
            (log.info if result.health["verdict"] == "learning" else log.warning)("%s", result.health["sentence"])
    if ws.storage.remote and not summaries:  # catch up: chunks recorded after an interruption, copies lost
        mirror_checkpoints(str(spec.run_dir), ws.storage.url)
    if summaries:
        create_table_artifact(key=f"pretrain-{artifact_key(spec.run)}", table=summaries,
                              description=f"Chunks trained in this run of {spec.run}")
    return PretrainResult(run=spec.run, run_dir=str(spec.run_dir), chunks_trained=len(summaries),
                          chunks_done=spec.settings.chunks if summaries else start, summaries=summaries,
                          frontend=spec.plan.summary())


def _require_segments(ws: Workspace) -> None:
    """Refuse, in words, a workspace with nothing to train on (else DuckDB's "No files found that
    match the pattern" surfaces from deep inside the training index)."""
    if not status.summary_of(ws)["segments"]:
        raise database.WorkspaceError(f"{ws.root} holds no segments to train on (no recording was ingested); "
                                   f"run `ceta2vec ingest SOURCE --workspace {ws.root}` first")


METRIC_ROWS_SHOWN = 100


def _metric_rows(metrics: list[StepMetrics]) -> list[dict]:
    every = max(1, len(metrics) // METRIC_ROWS_SHOWN)
    return [
        {"step": m.step, "loss": round(m.loss, 4), "contrastive": round(m.contrastive_loss, 4),
         "diversity": round(m.diversity_loss, 4), "accuracy": round(m.accuracy, 3),
         "perplexity": [round(p, 1) for p in m.perplexity], "unused_codes": round(m.unused_code_share, 3),
         "grad_norm": round(m.grad_norm, 3), "lr": f"{m.learning_rate:.2e}", "temperature": round(m.temperature, 3),
         "audio_s_per_s": round(m.audio_seconds_per_second, 1)}
        for m in metrics[::every]
    ]


def chunk_line(summary: dict) -> str:
    """A chunk's summary in words, for the log (the summary itself is a row of the run's artifact)."""
    return (f"steps {summary['steps']}, mean loss {summary['mean_loss']:.4f} (last {summary['last_loss']:.4f}), "
            f"accuracy {summary['accuracy']:.3f}, codebook perplexity {' / '.join(map(str, summary['perplexity']))}, "
            f"unused codes {100 * summary['unused_codes']:.1f}%, {summary['audio_s_per_s']:.1f} s of audio per "
            f"second; health: {summary['health']}")


def _chunk_summary(result: ChunkResult) -> dict:
    m = result.metrics
    last = m[-1]
    return {
        "chunk": result.checkpoint.chunk, "steps": f"{m[0].step}-{last.step}",
        "mean_loss": round(result.checkpoint.mean_loss, 4), "last_loss": round(last.loss, 4),
        "accuracy": round(sum(x.accuracy for x in m) / len(m), 4),
        "perplexity": [round(p, 1) for p in last.perplexity], "unused_codes": round(last.unused_code_share, 3),
        "audio_s_per_s": round(sum(x.audio_seconds for x in m) / sum(x.audio_seconds / x.audio_seconds_per_second for x in m), 1),
        "health": result.health["verdict"] if result.health else "unknown",
        "health_sentence": result.health["sentence"] if result.health else None,
        "checkpoint": str(result.checkpoint.path),
    }
