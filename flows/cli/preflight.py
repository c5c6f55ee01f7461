"""A flow command's user errors, found before its Prefect server starts.

A missing folder, a model the workspace never embedded or a layer it does not have would otherwise
surface inside the flow run: after the server's start-up (seconds to tens of seconds on a busy
machine), and once in each of the run's log lines, its final state and the CLI's own message. The
checks here read the workspace as the flow will, with the same functions where they are cheap to
import (none loads torch or Prefect), and raise the error the CLI prints as its one line. What they
cannot see (the data itself) is still the flow's to refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from schemas.settings import (
    EmbedSettings,
    EvaluateSettings,
    IngestSettings,
    PipelineSettings,
    PretrainSettings,
    ReportSettings,
)
from tasks.workspace import Workspace


class NothingToIngest(ValueError):
    """No recording among the sources: a typo, not an empty run."""

    def __init__(self, failures: list[tuple[str, str, str]]):
        why = "; ".join(f"{path}: {reason}" for path, _, reason in failures[:3])
        super().__init__(f"nothing to ingest: no recording found ({why or 'no audio files'}); check the paths "
                         "(files, folders or quoted glob patterns of .wav/.flac/.mp3/.ogg/.aiff recordings)")


def _sources(sources: list[str]) -> None:
    from tasks.ingest.discovery import discover

    found = discover(sources)
    if not found.files:
        raise NothingToIngest([(p.path, p.stage, p.reason) for p in found.problems])


def _labels(path: str | None) -> set[str]:
    """The label columns of a labels CSV; LabelsError when it cannot be read as one."""
    if not path:
        return set()
    from tasks.ingest.labels import read_labels

    return {row.label_column for row in read_labels(Path(path), warnings=[])}


def _ingest(settings: IngestSettings, sources_required: bool = True) -> None:
    from tasks.catalog.recordings import ensure_dataset_config
    from tasks.workspace import database

    _labels(settings.labels)
    workspace = Workspace.at(settings.workspace)
    if sources_required:
        _sources(settings.sources)
    if workspace.exists():  # the settings a workspace's first ingest fixed
        with database.reading(workspace) as conn:
            ensure_dataset_config(conn, {"sample_rate": str(settings.sample_rate),
                                         "segment_seconds": str(settings.segment_seconds),
                                         "hop_seconds": str(settings.hop_seconds),
                                         "final_segment": settings.final_segment}, fix=False)


def _pipeline(settings: PipelineSettings) -> None:
    from tasks.pipeline.plan import ingest_settings

    # A re-run continues a workspace whose recordings have moved since (its ingest stage finds nothing new).
    _ingest(ingest_settings(settings), sources_required=not Workspace.at(settings.workspace).exists())


def _pretrain(settings: PretrainSettings) -> None:
    from tasks.catalog.runs import committed_chunks
    from tasks.workspace import database

    if not settings.init_from or (Path(settings.init_from).expanduser() / "config.json").is_file():
        return
    with database.reading(Workspace.at(settings.workspace)) as conn:
        started = committed_chunks(conn, settings.run_name)
    if not started:  # a run that has chunks continues from them and never reads init_from again
        raise ValueError(f"--init-from {settings.init_from}: no checkpoint there (a save_pretrained folder "
                         "with config.json, such as <workspace>/checkpoints/RUN/chunk-N/hf)")


def _embed(settings: EmbedSettings) -> None:
    """The checkpoint `embed` would pick, and the layers asked of it."""
    from tasks.catalog.runs import checkpoint_to_embed
    from tasks.workspace import database
    from tasks.workspace.database import WorkspaceError

    workspace = Workspace.at(settings.workspace)
    with database.reading(workspace) as conn:
        model = checkpoint_to_embed(conn, workspace, settings.run, settings.chunk)
    bad = [layer for layer in (settings.layers or []) + (settings.kmeans_layers or []) if not 0 <= layer < model.layers]
    if bad:
        raise WorkspaceError(f"{model.model_id} has layers 0..{model.layers - 1}; asked for {sorted(set(bad))}")


def _evaluate(settings: EvaluateSettings) -> None:
    from tasks.catalog.embeddings import resolve_model
    from tasks.catalog.evaluations import label_columns
    from tasks.workspace import database
    from tasks.workspace.database import WorkspaceError

    in_file = _labels(settings.labels)
    with database.reading(Workspace.at(settings.workspace)) as conn:
        resolve_model(conn, settings.model)
        known = set(label_columns(conn)) | in_file
    if settings.label_column not in known:
        raise WorkspaceError(f"no segment has a '{settings.label_column}' label (label columns: "
                             f"{', '.join(sorted(known)) or 'none'}); give the labels with --labels CSV")


def _report(settings: ReportSettings) -> None:
    from tasks.catalog.embeddings import resolve_model
    from tasks.catalog.evaluations import resolve_label_column, resolve_layer
    from tasks.workspace import database
    from tasks.workspace.database import WorkspaceError

    with database.reading(Workspace.at(settings.workspace)) as conn:
        model = resolve_model(conn, settings.model)
        label_column = resolve_label_column(conn, settings.label_column)
        resolve_layer(conn, model, label_column, settings.layer)
    missing = sorted(set(settings.layers or []) - set(model.embedded_layers))
    if missing:
        raise WorkspaceError(f"{model.model_id} has segment vectors for layers "
                             f"{', '.join(map(str, model.embedded_layers))}, not {missing}")


CHECKS: dict[type[BaseModel], Callable] = {
    IngestSettings: _ingest, PipelineSettings: _pipeline, PretrainSettings: _pretrain, EmbedSettings: _embed,
    EvaluateSettings: _evaluate, ReportSettings: _report,
}


def check(settings: BaseModel) -> None:
    """Raise the first user error in a flow's settings that the workspace and the file system show."""
    if not isinstance(settings, ReportSettings) and getattr(settings, "workspace", None):  # a report only reads it
        from tasks.workspace.database import not_writable

        if (refused := not_writable(Workspace.at(settings.workspace))) is not None:
            raise refused
    checked = CHECKS.get(type(settings))
    if checked:
        checked(settings)
