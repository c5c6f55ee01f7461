"""Build small workspaces with the plain ingest and training functions (no Prefect): fast
fixtures for the training, embedding, evaluation and report tests."""

from __future__ import annotations

from pathlib import Path

from schemas.settings import IngestSettings, PretrainSettings
from tasks.catalog import recordings
from tasks.ingest.discovery import content_hash, discover
from tasks.ingest.recording import prepare_recording
from tasks.workspace import Workspace, database


def ingest_quick(workspace: Workspace, folder: Path, **options) -> None:
    settings = IngestSettings(sources=[str(folder)], workspace=str(workspace.root), **options)
    workspace.create()
    with database.writing(workspace) as conn:
        database.apply_schema(conn, workspace)
        recordings.ensure_dataset_config(conn, {
            "sample_rate": str(settings.sample_rate), "segment_seconds": str(settings.segment_seconds),
            "hop_seconds": str(settings.hop_seconds), "final_segment": settings.final_segment,
        })
        for source in discover(settings.sources).files:
            staged = prepare_recording(source, content_hash(source.path), settings, workspace)
            recordings.commit_recording(conn, workspace, staged, "test")
        database.refresh_segment_audio_view(conn, workspace)


def train_tiny_chunk(workspace: Workspace, run: str) -> None:
    """One 2-step chunk of a 2-layer tiny model on the workspace's segments, recorded in `models`,
    `checkpoints` and `train_metrics` as the pretrain flow records it."""
    from tasks.catalog.runs import commit_chunk, metrics_as_rows, upsert_model
    from tasks.training.run import resolve_run, train_chunk, training_index

    settings = PretrainSettings(workspace=str(workspace.root), run=run, steps_per_chunk=2, chunks=1, batch_size=4,
                                crop_seconds=1.0, model_overrides={"num_hidden_layers": 2})
    with database.writing(workspace) as conn:
        spec = resolve_run(conn, workspace, settings)
        index = training_index(conn, workspace, spec)
    result = train_chunk(spec, index)
    with database.writing(workspace) as conn:
        upsert_model(conn, {"run": run, "preset": "tiny", "settings": settings.model_dump(),
                            "model_config": spec.config, "feature_encoder": spec.plan.describe(),
                            "sample_rate": index.sample_rate, "frame_rate_hz": 50.0, "receptive_field_ms": 25.0,
                            "parameters": 1, "segments_used": len(index), "hours_used": index.hours,
                            "excluded_recordings": [], "init_from": None, "chunks_done": 0, "steps_done": 0,
                            "latest_checkpoint": None, "best_checkpoint": None})
        commit_chunk(conn, workspace, run, result.checkpoint, metrics_as_rows(result.metrics))
