"""Embed flow: a trained checkpoint → per-layer segment vectors, frame vectors and units in DuckDB.

    resolve checkpoint → segments not yet embedded → embed batch → commit (one writer) → ...
                       → k-means units per layer → unit statistics → views
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.runtime import policies as policy
from flows.runtime.completion import announce_completion
from flows.runtime.names import named_by
from flows.runtime.progress import Progress
from flows.runtime.runners import fan_out
from schemas.results import EmbedResult
from schemas.settings import EmbedSettings
from tasks.catalog import embeddings, recordings
from tasks.catalog.embeddings import EmbeddingModel, pending_segments, refresh_views, register
from tasks.catalog.recordings import SegmentRef
from tasks.catalog.runs import checkpoint_to_embed
from tasks.embedding.run import (
    StagedBatch,
    all_layers,
    commit_batch,
    embed_segments,
    plan_batches,
    remove_unclaimed_frames,
)
from tasks.embedding.units import assign_units, fit_kmeans, load_unit_model, refresh_unit_stats, save_unit_model
from tasks.model.device import pick_device
from tasks.workspace import Workspace, database

PROGRESS_EVERY_S = 2.0
# Forward batches per task: one task, one staged file and one commit per group, so Prefect's
# and DuckDB's per-call costs stay small beside the model (bench/embed.py: tiny 0.57 -> 0.62).
BATCHES_PER_TASK = 8


# Not cached: its result names staged files, which the next run's clean-up removes (the
# embedded_segments ledger is what skips work done). Retried on storage errors: a retry writes new
# staged files. No timeout: it runs on the thread pool, where Prefect cannot interrupt a blocking call.
@task(name="embed-batch", task_run_name="embed {refs[0].segment_id} (+{n_more} more)", cache_policy=NO_CACHE,
      retries=policy.IO_RETRIES, retry_delay_seconds=policy.IO_RETRY_DELAYS, retry_condition_fn=policy.retry_transient)
def embed_batch_task(ws_root: str, model: EmbeddingModel, refs: list[SegmentRef], layers: list[int],
                     settings: EmbedSettings, n_more: int) -> StagedBatch:
    return embed_segments(Workspace.at(ws_root), model, refs, layers, list(settings.poolings),
                          pick_device(settings.device), settings.frame_dtype, settings.frame_vectors,
                          forward_batch=settings.batch_size)


# Not cached: it writes unit_models and frame_units. Retried on lock/storage errors: a saved fit is
# reused and units are upserted for the frames that still lack them.
@task(name="kmeans-units", task_run_name="k-means units of layer {layer}", cache_policy=NO_CACHE,
      retries=policy.DB_RETRIES, retry_delay_seconds=policy.DB_RETRY_DELAYS, retry_condition_fn=policy.retry_transient,
      timeout_seconds=policy.LONG_READ_TIMEOUT_S)
def kmeans_task(ws_root: str, model: EmbeddingModel, layer: int, settings: EmbedSettings) -> int:
    ws = Workspace.at(ws_root)
    with database.writing(ws) as conn:
        centroids = load_unit_model(conn, ws, model.model_id, layer)
        if centroids is None:
            centroids, inertia, frames = fit_kmeans(conn, ws, model, layer, settings.units_k,
                                                    settings.kmeans_sample_frames, settings.seed)
            save_unit_model(conn, ws, model, layer, centroids, inertia, frames)
        return assign_units(conn, ws, model, layer, centroids)


# Its completion event (once it embedded new segments) starts the served classify-new deployment.
@flow(name="embed", flow_run_name=named_by("embed", ("run",), "latest"), on_completion=[announce_completion])
def embed(settings: EmbedSettings) -> EmbedResult:
    """Extract embeddings and units of every segment not yet embedded by this checkpoint."""
    log = get_run_logger()
    ws = Workspace.at(settings.workspace)
    with database.writing(ws) as conn:
        database.apply_schema(conn, ws)
        model = checkpoint_to_embed(conn, ws, settings.run, settings.chunk)
        register(conn, ws, model)
        for leftover in recordings.remove_orphans(conn, ws) + remove_unclaimed_frames(conn, ws):
            log.info("removed %s left by an interrupted run", leftover)
        layers = settings.layers if settings.layers is not None else all_layers(model)
        bad = [layer for layer in layers if not 0 <= layer < model.layers]
        if bad:
            raise database.WorkspaceError(f"{model.model_id} has layers 0..{model.layers - 1}; asked for {bad}")
        pending = pending_segments(conn, ws, model, layers)
    log.info("%s: %d segments to embed (layers %s)", model.model_id, len(pending), layers)

    batches = plan_batches(pending, settings.batch_size * BATCHES_PER_TASK)
    started, seconds = time.monotonic(), 0.0
    with Progress(len(pending), "segment", "embed", f"{model.model_id}: segments embedded (of {len(pending)})",
                  every_s=PROGRESS_EVERY_S) as shown, \
            fan_out(settings.task_runner, settings.workers, settings.dask_address, settings.dask_workers, log) as pool:
        submit = lambda refs: pool.submit(embed_batch_task, ws_root=str(ws.root), model=model, refs=refs,  # noqa: E731
                                          layers=layers, settings=settings, n_more=len(refs) - 1)
        for refs, staged in pool.windowed(submit, batches):
            with database.writing(ws) as conn:
                commit_batch(conn, ws, model, staged, layers)
            seconds += staged.audio_seconds
            shown.advance(len(refs))
    elapsed = time.monotonic() - started

    units = {}
    if settings.frame_vectors:
        for layer in settings.kmeans_layers if settings.kmeans_layers is not None else layers:
            units[layer] = kmeans_task(str(ws.root), model, layer, settings)
    with database.writing(ws) as conn:
        stats = refresh_unit_stats(conn, model)
        refresh_views(conn, ws)
        totals = embeddings.vector_totals(conn, model)
    summary = EmbedResult(
        model_id=model.model_id, checkpoint=model.export_dir, layers=layers, dim=model.dim,
        segments_embedded=len(pending), segments_in_model=totals[0], vectors_in_model=totals[1],
        audio_seconds=round(seconds, 1), real_time_factor=round(seconds / elapsed, 1) if elapsed and pending else None,
        kmeans_units_assigned=units, unit_stats_rows=stats,
    )
    create_table_artifact(key="embed-summary", table=[{"metric": k, "value": str(v)}
                                                      for k, v in summary.as_dict().items()],
                          description=f"Embedding run of {model.model_id}")
    log.info("embedded %d segments with %s (%s)", len(pending), model.model_id, summary)
    return summary
