"""Ingest flow: recordings → validated, segmented Parquet + DuckDB tables.

    discover → skip unchanged → fingerprint (parallel) → skip duplicates
             → decode + resample + segment (parallel) → commit (one writer) → labels → summary
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run, task_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runtime import policies as policy
from flows.runtime.names import named_by
from flows.runtime.progress import Progress, readable
from flows.runtime.runners import FanOut, fan_out
from schemas.records import LabelRow
from schemas.results import IngestResult
from schemas.settings import IngestSettings
from tasks.audio.failures import disk_full
from tasks.catalog import recordings, status
from tasks.ingest import commit
from tasks.ingest.commit import FileOutcome
from tasks.ingest.discovery import Discovery, SourceFile, content_hash, discover, printable
from tasks.ingest.labels import read_labels
from tasks.ingest.plan import IngestCounts, InOrder, batches, dedupe, plan_files
from tasks.ingest.recording import describe_failure, prepare_recording
from tasks.workspace import Workspace, database
from tasks.workspace.storage import configure_storage
from tasks.workspace.transient_errors import is_transient


class IngestRunFailed(RuntimeError):
    """Raised at the end of a --strict run that met a bad file (everything good stays committed)."""


# Small files travel in groups so Prefect's per-task bookkeeping stays small beside the work.
FINGERPRINT_BATCH = dict(max_bytes=1 << 30, max_files=256)
INGEST_BATCH = dict(max_bytes=64 << 20, max_files=64)
COMMIT_EVERY_S = 0.5


# Retried (all three only read, or write staged files under fresh names) on transient errors only.
# No timeout on the two submitted to the thread pool: there Prefect cannot interrupt a blocking
# read (flows/runtime/policies.py); discover runs in the flow's own thread.
@task(name="discover", cache_policy=NO_CACHE, retries=policy.IO_RETRIES, retry_delay_seconds=policy.IO_RETRY_DELAYS,
      retry_condition_fn=policy.retry_transient, timeout_seconds=policy.DISCOVER_TIMEOUT_S)
def discover_sources(sources: list[str]) -> Discovery:
    return discover(sources)


def _batch_run_name(verb: str):
    def name() -> str:
        files = task_run.parameters.get("files") or [item[0] for item in task_run.parameters.get("items", [])]
        more = f" (+{len(files) - 1} more)" if len(files) > 1 else ""
        return f"{verb} {printable(files[0].path.name)}{more}" if files else verb
    return name


# Not cached: a cached failure would outlive its cure, and unchanged paths are skipped already.
@task(name="fingerprint", task_run_name=_batch_run_name("fingerprint"), cache_policy=NO_CACHE,
      retries=policy.IO_RETRIES, retry_delay_seconds=policy.IO_RETRY_DELAYS, retry_condition_fn=policy.retry_transient)
def fingerprint(files: list[SourceFile]) -> list[str | FileOutcome]:
    results: list[str | FileOutcome] = []
    for source in files:
        try:
            results.append(content_hash(source.path))
        except Exception as exc:  # a file that cannot be read is an outcome, not a crash
            if is_transient(exc) and policy.attempts_left():
                raise  # the batch again after a pause; on the last attempt it is the file's outcome
            stage, reason = describe_failure(exc)
            results.append(FileOutcome(source, stage=stage, reason=reason))
    return results


# Not cached: its result names staged files, which the next run's clean-up removes.
@task(name="ingest-files", task_run_name=_batch_run_name("ingest"), cache_policy=NO_CACHE,
      retries=policy.IO_RETRIES, retry_delay_seconds=policy.IO_RETRY_DELAYS, retry_condition_fn=policy.retry_transient)
def ingest_files(items: list[tuple[SourceFile, str]], settings: IngestSettings, root: str) -> list[FileOutcome]:
    outcomes = []
    for source, digest in items:
        try:
            outcomes.append(FileOutcome(source, staged=prepare_recording(source, digest, settings, Workspace(Path(root)))))
        except Exception as exc:
            # A full disk is no fault of the file: the whole run stops (no retry, no error row).
            if disk_full(exc) or (is_transient(exc) and policy.attempts_left()):
                for done in outcomes:  # this attempt's staged files: a retry writes them again
                    if done.staged and done.staged.staged_file:
                        Path(done.staged.staged_file).unlink(missing_ok=True)
                raise
            stage, reason = describe_failure(exc)
            outcomes.append(FileOutcome(source, stage=stage, reason=reason))
    return outcomes


@flow(name="ingest", flow_run_name=named_by("ingest", ("site",), "unsited"), task_runner=ThreadPoolTaskRunner(max_workers=64))
def ingest(settings: IngestSettings) -> IngestResult:
    """Ingest recordings (files, folders, globs) into the workspace's Parquet dataset and DuckDB."""
    with fan_out(settings.task_runner, settings.workers, settings.dask_address, settings.dask_workers,
                 get_run_logger()) as pool:
        return _ingest(settings, pool)


def _ingest(settings: IngestSettings, pool: FanOut) -> IngestResult:
    log = get_run_logger()
    ws = Workspace.at(settings.workspace)
    # Read before anything is written: a CSV that cannot be used refuses the run with the workspace untouched.
    label_warnings: list[str] = []
    label_rows: list[LabelRow] = read_labels(Path(settings.labels), label_warnings) if settings.labels else []
    for warning in label_warnings:
        log.warning("labels: %s", warning)
    run_id = f"ingest-{uuid.uuid4().hex[:12]}"
    counts = IngestCounts()
    wanted = {"sample_rate": str(settings.sample_rate), "segment_seconds": str(settings.segment_seconds),
              "hop_seconds": str(settings.hop_seconds), "final_segment": settings.final_segment}

    found = discover_sources(settings.sources)
    counts.files_seen = len(found.files) + len(found.problems)
    if not found.files:
        # A mistyped path must not create a workspace or fix its settings; the caller says what was wrong.
        for problem in found.problems:
            counts.failed += 1
            counts.failures.append((problem.path, problem.stage, problem.reason))
            log.warning("%s: %s: %s", problem.path, problem.stage, problem.reason)
        log.warning("nothing to ingest: no recording found in %s", ", ".join(settings.sources))
        return ingest_result(None, ws, counts, 0, label_warnings, status.summary_of(ws))

    # A run that finds no readable recording leaves no workspace behind where there was none (below).
    root_existed, new_workspace = ws.root.exists(), not ws.exists()
    ws.create()
    configure_storage(ws.root, settings.storage)  # fixed by the first ingest; refused if changed later
    known = commit.open_run(ws, settings, run_id, str(flow_run.id) if flow_run.id else None, wanted, log)

    try:
        plan = plan_files(found.files, known)
        counts.skipped = len(plan.unchanged)
        log.info("%d files found: %d unchanged since an earlier run, %d to check, %d problems",
                 len(found.files), len(plan.unchanged), len(plan.todo), len(found.problems))

        failures = [FileOutcome(SourceFile(Path(p.path), 0, 0), stage=p.stage, reason=p.reason)
                    for p in found.problems]
        fingerprinted = []
        groups = batches(plan.todo, **FINGERPRINT_BATCH)
        # pairs, not zip(groups, ...): groups finish in any order
        for group, results in pool.windowed(lambda g: pool.submit(fingerprint, files=g), groups):
            for source, result in zip(group, results):
                if isinstance(result, FileOutcome):
                    failures.append(result)
                else:
                    fingerprinted.append((source, result))
        fingerprinted.sort(key=lambda pair: pair[0].key)  # discovery order, whichever group finished first
        with database.writing(ws) as conn:
            dedup = dedupe(fingerprinted, recordings.recordings_by_hash(conn, (d for _, d in fingerprinted)))
            for outcome in failures:
                commit.record_failure(conn, outcome, run_id, counts, log)
        unique, duplicates = dedup.unique, dedup.duplicates
        if settings.strict and failures:
            # --strict stops at the first bad file in discovery order (a bad source path: before any file)
            first = "" if found.problems else min(o.source.key for o in failures)
            unique = [(s, d) for s, d in unique if s.key < first]
            duplicates = [item for item in duplicates if item[0].key < first]

        total = len(unique)
        # every commit updates the artifact (every_s=0): commits are COMMIT_EVERY_S apart already
        shown = Progress(total, "file", "ingest", f"files ingested (of {total})", every_s=0)
        by_key = {source.key: (source, digest) for source, digest in unique}
        groups = batches([source for source, _ in unique], **INGEST_BATCH)
        in_order = InOrder([source.key for source, _ in unique]) if settings.strict else None
        stop = [False]
        waiting: list[FileOutcome] = []
        submitted: list = []
        last_commit = time.monotonic()

        def submit(group):
            future = pool.submit(ingest_files, items=[by_key[s.key] for s in group], settings=settings,
                                 root=str(ws.root))
            submitted.append(future)
            return future

        try:
            for _, outcomes in pool.windowed(submit, groups, stop=lambda: stop[0]):
                if in_order is not None:  # commit in discovery order, and nothing after the first failure
                    outcomes = in_order.add([(o.source.key, o, o.staged is None) for o in outcomes])
                    stop[0] = in_order.failed
                waiting.extend(outcomes)
                if time.monotonic() - last_commit >= COMMIT_EVERY_S:
                    commit.commit_outcomes(ws, waiting, run_id, counts, log, wanted)
                    shown.advance(len(waiting))
                    waiting, last_commit = [], time.monotonic()
            commit.commit_outcomes(ws, waiting, run_id, counts, log, wanted)
        except BaseException:
            commit.drop_staged(submitted)
            shown.close(completed=False)
            raise
        if in_order is not None:
            commit.drop_staged(submitted)  # the files after the first failure: decoded, never committed
        shown.advance(len(waiting))
        shown.close()

        labels = (settings.labels, label_rows) if settings.labels else None
        summary, discard = commit.close_run(ws, run_id, counts, duplicates, by_key, labels, found.files,
                                            new_workspace, log, settings.strict)
    except Exception:
        commit.end_run(ws, run_id, counts, "failed", log)
        raise
    except BaseException:  # Ctrl-C, or a signal Prefect turned into an exception
        commit.end_run(ws, run_id, counts, "interrupted", log)
        raise

    _publish_summary(counts, summary, run_id)
    if discard:
        ws.remove_unused(root_existed)
        log.warning("nothing to ingest: no readable recording in %s", ", ".join(settings.sources))
        return ingest_result(None, ws, counts, 0, label_warnings, status.summary_of(ws))
    log.info("ingest finished: %d ingested, %d unchanged, %d duplicates, %d failed, %d segments added",
             counts.ingested, counts.skipped, counts.duplicates, counts.failed, counts.segments_added)
    if settings.strict and counts.failed:
        path, _, reason = counts.first_failure()
        raise IngestRunFailed(f"{counts.failed} file(s) failed and --strict was given; first: {path}: {reason}")
    return ingest_result(run_id, ws, counts, len(found.files), label_warnings, summary)


def ingest_result(run_id: str | None, ws: Workspace, counts: IngestCounts, recordings_found: int,
                  label_warnings: list[str], workspace_summary: dict) -> IngestResult:
    return IngestResult(run_id=run_id, workspace=str(ws.root), **counts.as_row(), recordings_found=recordings_found,
                        failures=counts.failures, label_warnings=label_warnings, workspace_summary=workspace_summary)


def _publish_summary(counts: IngestCounts, summary: dict, run_id: str) -> None:
    row = counts.as_row()
    create_table_artifact(
        key="ingest-summary",
        table=[{"metric": k.replace("_", " "), "value": readable(v)} for k, v in row.items()]
        + [{"metric": f"workspace {k.replace('_', ' ')}", "value": readable(v)} for k, v in summary.items()
           if k != "config"],
        description=f"Ingest run {run_id}",
    )
    if counts.failures:
        create_table_artifact(
            key="ingest-failures",
            table=[{"path": p, "stage": s, "reason": r} for p, s, r in counts.failures[:500]],
            description=f"Files that could not be ingested in {run_id} (also in the ingest_errors table)",
        )
