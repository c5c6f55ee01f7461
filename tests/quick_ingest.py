"""Build small workspaces with the plain ingest functions (no Prefect): fast fixtures for
the training and embedding tests."""

from __future__ import annotations

from pathlib import Path

from schemas.settings import IngestSettings
from tasks import store
from tasks.discovery import content_hash, discover
from tasks.ingest import prepare_recording
from tasks.workspace import Workspace


def ingest_quick(workspace: Workspace, folder: Path, **options) -> None:
    settings = IngestSettings(sources=[str(folder)], workspace=str(workspace.root), **options)
    workspace.create()
    with store.writing(workspace) as conn:
        store.apply_schema(conn, workspace)
        store.ensure_dataset_config(conn, {
            "sample_rate": str(settings.sample_rate), "segment_seconds": str(settings.segment_seconds),
            "hop_seconds": str(settings.hop_seconds), "final_segment": settings.final_segment,
        })
        for source in discover(settings.sources).files:
            staged = prepare_recording(source, content_hash(source.path), settings, workspace)
            store.commit_recording(conn, workspace, staged, "test")
        store.refresh_segment_audio_view(conn, workspace)
