"""Ingest flow: recordings → validated, segmented Parquet + DuckDB tables.

    discover → skip unchanged → fingerprint (parallel) → skip duplicates
             → decode + resample + segment (parallel) → commit (one writer) → labels → summary
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from tqdm import tqdm
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from schemas.settings import IngestSettings
from tasks import store
from tasks.discovery import Discovery, SourceFile, content_hash, discover
from tasks.ingest import StagedRecording, describe_failure, prepare_recording
from tasks.ingest_plan import IngestCounts, dedupe, plan_files
from tasks.labels import LabelRow, assign_labels, read_labels
from tasks.workspace import Workspace


class IngestRunFailed(RuntimeError):
    """Raised at the end of a --strict run that met a bad file (everything good stays committed)."""


@dataclass(frozen=True)
class FileOutcome:
    source: SourceFile
    staged: StagedRecording | None = None
    stage: str = ""
    reason: str = ""


@task(name="discover", cache_policy=NO_CACHE)
def discover_sources(sources: list[str]) -> Discovery:
    return discover(sources)


@task(name="fingerprint", task_run_name="fingerprint {source.path.name}", cache_policy=NO_CACHE,
      retries=2, retry_delay_seconds=1)
def fingerprint(source: SourceFile) -> str | FileOutcome:
    try:
        return content_hash(source.path)
    except Exception as exc:  # a file that cannot be read is an outcome, not a crash
        stage, reason = describe_failure(exc)
        return FileOutcome(source, stage=stage, reason=reason)


@task(name="ingest-file", task_run_name="ingest {source.path.name}", cache_policy=NO_CACHE)
def ingest_file(source: SourceFile, digest: str, settings: IngestSettings, root: str) -> FileOutcome:
    try:
        return FileOutcome(source, staged=prepare_recording(source, digest, settings, Workspace(Path(root))))
    except Exception as exc:
        stage, reason = describe_failure(exc)
        get_run_logger().warning("%s: %s failed: %s", source.path, stage, reason)
        return FileOutcome(source, stage=stage, reason=reason)


def _run_name() -> str:
    settings = flow_run.parameters.get("settings") or {}
    if isinstance(settings, IngestSettings):
        settings = settings.model_dump()
    site = settings.get("site") or "unsited"
    return f"ingest-{site}-{flow_run.scheduled_start_time.strftime('%Y-%m-%d')}"


@flow(name="ingest", flow_run_name=_run_name, task_runner=ThreadPoolTaskRunner(max_workers=64))
def ingest(settings: IngestSettings) -> dict:
    """Ingest recordings (files, folders, globs) into the workspace's Parquet dataset and DuckDB."""
    log = get_run_logger()
    ws = Workspace.at(settings.workspace).create()
    label_rows: list[LabelRow] = read_labels(Path(settings.labels)) if settings.labels else []
    run_id = f"ingest-{uuid.uuid4().hex[:12]}"
    counts = IngestCounts()

    with store.writing(ws) as conn:
        store.apply_schema(conn, ws)
        store.ensure_dataset_config(conn, {
            "sample_rate": str(settings.sample_rate), "segment_seconds": str(settings.segment_seconds),
            "hop_seconds": str(settings.hop_seconds), "final_segment": settings.final_segment,
        })
        for orphan in store.remove_orphans(conn, ws):
            log.info("removed %s left by an interrupted run", orphan)
        store.start_run(conn, run_id, str(flow_run.id) if flow_run.id else None, settings.model_dump(mode="json"))
        known = store.known_sources(conn)

    found = discover_sources(settings.sources)
    plan = plan_files(found.files, known)
    counts.files_seen = len(found.files) + len(found.problems)
    counts.skipped = len(plan.unchanged)
    log.info("%d files found: %d unchanged since an earlier run, %d to check, %d problems",
             len(found.files), len(plan.unchanged), len(plan.todo), len(found.problems))

    failures = [FileOutcome(SourceFile(Path(p.path), 0, 0), stage=p.stage, reason=p.reason) for p in found.problems]
    fingerprinted = []
    for source, result in zip(plan.todo, [f.result() for f in fingerprint.map(plan.todo)]):
        if isinstance(result, FileOutcome):
            failures.append(result)
        else:
            fingerprinted.append((source, result))
    with store.writing(ws) as conn:
        dedup = dedupe(fingerprinted, store.recordings_by_hash(conn, (d for _, d in fingerprinted)))
        for outcome in failures:
            _record_failure(conn, outcome, run_id, counts, log)
    for source, digest, original in dedup.duplicates:
        log.info("%s: same audio as recording %s, skipped", source.path, original or "ingested earlier in this run")

    progress = create_progress_artifact(progress=0.0, description=f"files ingested ({len(dedup.unique)} to go)")
    strict_stop = settings.strict and bool(failures)
    pending = list(dedup.unique)
    in_flight: list[PrefectFuture] = []
    done = 0
    bar = tqdm(total=len(dedup.unique), unit="file", desc="ingest", disable=None)  # shown on a terminal only
    # A sliding window of `workers` files: both cores busy, and memory bounded by the window.
    while (pending and not strict_stop) or in_flight:
        while pending and not strict_stop and len(in_flight) < settings.workers:
            source, digest = pending.pop(0)
            in_flight.append(ingest_file.submit(source, digest, settings, str(ws.root)))
        finished = next(as_completed(in_flight))
        in_flight.remove(finished)
        outcome: FileOutcome = finished.result()
        with store.writing(ws) as conn:
            if outcome.staged is None:
                _record_failure(conn, outcome, run_id, counts, log)
                strict_stop = settings.strict
            else:
                _record_success(conn, ws, outcome.staged, run_id, counts, log)
        done += 1
        bar.update()
        update_progress_artifact(progress, progress=100.0 * done / max(1, len(dedup.unique)))
    bar.close()

    with store.writing(ws) as conn:
        for source, digest, original in dedup.duplicates:
            target = original or store.recordings_by_hash(conn, [digest]).get(digest)
            if target:
                store.record_duplicate(conn, str(source.path), source.size_bytes, source.mtime_ns, digest, target)
                counts.duplicates += 1
        if settings.labels:
            _apply_labels(conn, settings.labels, label_rows, found.files, log)
        store.refresh_segment_audio_view(conn, ws)
        store.finish_run(conn, run_id, counts.as_row())
        summary = store.workspace_summary(conn)

    _publish_summary(counts, summary, run_id)
    log.info("ingest finished: %d ingested, %d unchanged, %d duplicates, %d failed, %d segments added",
             counts.ingested, counts.skipped, counts.duplicates, counts.failed, counts.segments_added)
    if settings.strict and counts.failed:
        raise IngestRunFailed(f"{counts.failed} file(s) failed and --strict was given; first: "
                              f"{counts.failures[0][0]}: {counts.failures[0][2]}")
    return {"run_id": run_id, "workspace": str(ws.root), **counts.as_row(),
            "failures": counts.failures, "workspace_summary": summary}


def _record_failure(conn, outcome: FileOutcome, run_id: str, counts: IngestCounts, log) -> None:
    store.record_problem(conn, str(outcome.source.path), outcome.stage, outcome.reason, run_id,
                         size_bytes=outcome.source.size_bytes or None)
    counts.failed += 1
    counts.failures.append((str(outcome.source.path), outcome.stage, outcome.reason))
    log.warning("%s: %s: %s", outcome.source.path, outcome.stage, outcome.reason)


def _record_success(conn, ws: Workspace, staged: StagedRecording, run_id: str, counts: IngestCounts, log) -> None:
    counts.bytes_added += store.commit_recording(conn, ws, staged, run_id)
    counts.ingested += 1
    counts.segments_added += staged.segment_count
    counts.audio_seconds_added += staged.audio_seconds
    counts.warnings += len(staged.warnings)
    for warning in staged.warnings:
        log.warning("%s: %s", staged.path, warning)


def _apply_labels(conn, labels_file: str, rows: list[LabelRow], files: list[SourceFile], log) -> None:
    known = store.known_sources(conn)
    sources = {str(f.path): known[str(f.path)][2] for f in files if str(f.path) in known}
    paired, unmatched = assign_labels(rows, sources)
    stored = store.replace_labels(conn, str(Path(labels_file).resolve()), sources.values(), paired)
    log.info("labels: %d label rows stored for %d recordings", stored, len({r for r, _ in paired}))
    if unmatched:
        log.warning("labels: %d file name(s) in %s match no ingested recording, e.g. %s",
                    len(unmatched), labels_file, ", ".join(unmatched[:5]))


def _publish_summary(counts: IngestCounts, summary: dict, run_id: str) -> None:
    row = counts.as_row()
    create_table_artifact(
        key="ingest-summary",
        table=[{"metric": k, "value": v} for k, v in row.items()]
        + [{"metric": f"workspace {k}", "value": v} for k, v in summary.items() if k != "config"],
        description=f"Ingest run {run_id}",
    )
    if counts.failures:
        create_table_artifact(
            key="ingest-failures",
            table=[{"path": p, "stage": s, "reason": r} for p, s, r in counts.failures[:500]],
            description=f"Files that could not be ingested in {run_id} (also in the ingest_errors table)",
        )
