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


def labelled_tiny_model(root: Path, header: list[str], rows: list[list[str]], run: str,
                        apply_labels: bool = True) -> Workspace:
    """root / 'rec' ingested in 2-s segments into root / 'ws', root / 'labels.csv' written from
    `header` and `rows` (and applied, unless a test applies it later), and one 2-step chunk of a tiny
    model `run` trained."""
    import csv

    from tasks.ingest.labels import read_labels

    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    ws = Workspace.at(root / "ws")
    ingest_quick(ws, root / "rec", segment_seconds=2.0)
    if apply_labels:
        with database.writing(ws) as conn:
            recordings.apply_labels_file(conn, str(root / "labels.csv"), read_labels(root / "labels.csv"))
    train_tiny_chunk(ws, run)
    return ws


def tiny_workspace(root: Path) -> Workspace:
    """Ingested tones and clicks with labels (one event label: a whistle), a tiny model trained 2 steps,
    embedded with k-means units: root / 'ws'. Plain functions, no Prefect (the flows are tested elsewhere).
    conftest's `tiny_workspace` fixture builds it once per test session."""
    import torch
    from signals import click_train, noise, tone, write

    from tasks.catalog.embeddings import pending_segments, refresh_views, register
    from tasks.catalog.runs import checkpoint_to_embed
    from tasks.embedding.run import all_layers, commit_batch, embed_segments
    from tasks.embedding.units import assign_units, fit_kmeans, refresh_unit_stats, save_unit_model

    rate = 16000
    rows = []
    for i in range(6):
        kind = "tone" if i % 2 == 0 else "clicks"
        x = tone(500 + 300 * i, 4.0, rate, 0.3) if kind == "tone" else click_train(4.0, rate, 0.05, 0.5)
        write(root / "rec" / f"r{i}.wav", x + noise(4.0, rate, 0.01, seed=i), rate, "PCM_16")
        rows.append([f"r{i}.wav", "", "", kind])
    rows.append(["r1.wav", "2.0", "4.0", "whistle"])
    ws = labelled_tiny_model(root, ["file", "start_s", "end_s", "sound"], rows, "rep")
    with database.writing(ws) as conn:
        model = checkpoint_to_embed(conn, ws, "rep", None)
        register(conn, ws, model)
        layers = all_layers(model)
        pending = pending_segments(conn, ws, model, layers)
    staged = embed_segments(ws, model, pending, layers, ["mean"], torch.device("cpu"))
    with database.writing(ws) as conn:
        commit_batch(conn, ws, model, staged, layers)
        for layer in layers:
            centroids, inertia, frames = fit_kmeans(conn, ws, model, layer, 6, 400, 0)
            save_unit_model(conn, ws, model, layer, centroids, inertia, frames)
            assign_units(conn, ws, model, layer, centroids)
        refresh_unit_stats(conn, model)
        refresh_views(conn, ws)
    return ws
