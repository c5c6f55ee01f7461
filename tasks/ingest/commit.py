"""The ingest's commit engine: what a run records, file by file, on the one writer connection.

Decoding runs in parallel (`tasks.ingest.recording`); everything it produces is committed here, in
groups, by the flow's own process: successes, failures, copies of either, and the run's labels.
Every file seen ends as exactly one row (ingested, unchanged, duplicate or failed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import duckdb

from schemas.records import LabelRow, StagedRecording
from schemas.settings import IngestSettings
from tasks.catalog import recordings, status
from tasks.ingest.discovery import SourceFile
from tasks.ingest.plan import IngestCounts
from tasks.workspace import Workspace, database
from tasks.workspace.staging import owner_alive, register_owner

Log = logging.Logger | logging.LoggerAdapter


@dataclass(frozen=True)
class FileOutcome:
    source: SourceFile
    staged: StagedRecording | None = None
    stage: str = ""
    reason: str = ""


def record_duplicates(
    conn: duckdb.DuckDBPyConnection,
    duplicates: list[tuple[SourceFile, str, str | None]],
    decoded: dict[str, tuple[SourceFile, str]],
    run_id: str,
    counts: IngestCounts,
    log: Log,
) -> None:
    """One row for each copy of a file already seen: a duplicate of the recording it repeats or,
    when the first copy failed, the same failure (nothing of the file was stored to repeat)."""
    failed = {}
    for path, stage, reason in counts.failures:
        if path in decoded:
            failed.setdefault(decoded[path][1], (path, stage, reason))
    for source, digest, original in duplicates:
        target = original or recordings.recordings_by_hash(conn, [digest]).get(digest)
        if target:
            if recordings.record_duplicate(conn, source.key, source.size_bytes, source.mtime_ns, digest, target):
                counts.duplicates += 1
                log.info("%s: same audio as recording %s, skipped", source.key, target)
            else:
                counts.skipped += 1  # a concurrent run committed this very path first
            continue
        first, stage, reason = failed.get(digest, (None, "internal", "its first copy in this run was not stored"))
        copy_of = f" (same bytes as {Path(first).name})" if first else ""
        record_failure(conn, FileOutcome(source, stage=stage, reason=reason + copy_of), run_id, counts, log)


def drop_staged(futures: list) -> None:
    """Remove the staged files of these tasks that were not committed (a committed one has been
    renamed into the dataset, so its staged path is gone): waits for the tasks still running."""
    for future in futures:
        try:
            outcomes = future.result()
        except BaseException:  # noqa: BLE001 - its own files were removed when it failed
            continue
        for outcome in outcomes:
            if outcome.staged is not None and outcome.staged.staged_file:
                Path(outcome.staged.staged_file).unlink(missing_ok=True)


def commit_outcomes(
    ws: Workspace, outcomes: list[FileOutcome], run_id: str, counts: IngestCounts, log, wanted: dict[str, str]
) -> None:
    """One writer connection for everything that finished since the last commit."""
    if not outcomes:
        return
    with database.writing(ws) as conn:
        if any(o.staged is not None for o in outcomes):
            recordings.ensure_dataset_config(conn, wanted)  # fixed with the first recording stored
        for outcome in outcomes:
            if outcome.staged is None:
                record_failure(conn, outcome, run_id, counts, log)
            else:
                record_success(conn, ws, outcome.staged, run_id, counts, log)


def record_failure(
    conn: duckdb.DuckDBPyConnection, outcome: FileOutcome, run_id: str, counts: IngestCounts, log: Log
) -> None:
    recordings.record_problem(
        conn, outcome.source.key, outcome.stage, outcome.reason, run_id, size_bytes=outcome.source.size_bytes or None
    )
    counts.failed += 1
    counts.failures.append((outcome.source.key, outcome.stage, outcome.reason))
    log.warning("%s: %s: %s", outcome.source.key, outcome.stage, outcome.reason)


def record_success(
    conn: duckdb.DuckDBPyConnection, ws: Workspace, staged: StagedRecording, run_id: str, counts: IngestCounts, log: Log
) -> None:
    stored = recordings.commit_recording(conn, ws, staged, run_id)
    if stored is None:  # committed meanwhile by a concurrent run, or as another path of this one
        known = recordings.known_sources(conn).get(staged.path)
        if known and known[2] == staged.recording_id:
            counts.skipped += 1
        else:
            original = recordings.recordings_by_hash(conn, [staged.content_hash])[staged.content_hash]
            recordings.record_duplicate(
                conn, staged.path, staged.size_bytes, staged.mtime_ns, staged.content_hash, original
            )
            counts.duplicates += 1
        return
    counts.bytes_added += stored
    counts.ingested += 1
    counts.segments_added += staged.segment_count
    counts.audio_seconds_added += staged.audio_seconds
    counts.warnings += len(staged.warnings)
    for warning in staged.warnings:
        log.warning("%s: %s", staged.path, warning)


def apply_labels(
    conn: duckdb.DuckDBPyConnection, labels_file: str, rows: list[LabelRow], files: list[SourceFile], log: Log
) -> None:
    stored, labelled, unmatched = recordings.apply_labels_file(conn, labels_file, rows, [f.key for f in files])
    log.info("labels: %d label rows stored for %d recordings", stored, labelled)
    if unmatched:
        log.warning(
            "labels: %d file name(s) in %s match no ingested recording, e.g. %s",
            len(unmatched),
            labels_file,
            ", ".join(unmatched[:5]),
        )


# Runs this process has open: a process runs many (`ceta2vec serve`), all under one writer tag.
_open_here: set[str] = set()


def run_alive(ws: Workspace, run_id: str, writer_tag: str | None) -> bool:
    """Whether the process running ingest `run_id` is still at it (a run of an older ceta2vec,
    with no tag, cannot be told alive)."""
    if writer_tag is None:
        return False
    if writer_tag == register_owner(ws.staging_dir):
        return run_id in _open_here
    return owner_alive(ws.staging_dir, writer_tag)


def open_run(
    ws: Workspace, settings: IngestSettings, run_id: str, flow_run_id: str | None, wanted: dict[str, str], log: Log
) -> dict[str, tuple[int, int, str]]:
    """Schema, dataset settings (a clash refused before any decoding), leftovers of killed runs
    removed and their rows marked interrupted, the run's row; returns the sources already known
    (path -> size, mtime, recording)."""
    tag = register_owner(ws.staging_dir)
    with database.writing(ws) as conn:
        database.apply_schema(conn, ws)
        recordings.ensure_dataset_config(conn, wanted, fix=False)
        for orphan in recordings.remove_orphans(conn, ws):
            log.info("removed %s left by an interrupted run", orphan)
        dead = [run for run, owner in recordings.unfinished_runs(conn) if not run_alive(ws, run, owner)]
        recordings.mark_interrupted(conn, dead)
        for run in dead:
            log.warning("ingest run %s was interrupted (its process is gone): marked interrupted; what it "
                        "committed is kept, and this run does the rest", run)
        recordings.start_run(conn, run_id, flow_run_id, settings.model_dump(mode="json"), tag)
        _open_here.add(run_id)
        return recordings.known_sources(conn)


def end_run(ws: Workspace, run_id: str, counts: IngestCounts, status: str, log: Log) -> None:
    """A run stopped before `close_run` ('failed' or 'interrupted'), with what it committed. Best
    effort: where the database cannot be written (the error that stopped the run may be why), the
    row stays 'running' and the next ingest marks it interrupted once this process is gone."""
    _open_here.discard(run_id)
    try:
        with database.writing(ws) as conn:
            recordings.finish_run(conn, run_id, counts.as_row(), status)
    except Exception as exc:  # noqa: BLE001 - the first error is the one to raise
        log.warning("could not mark ingest run %s %s: %s", run_id, status, exc)


def close_run(
    ws: Workspace,
    run_id: str,
    counts: IngestCounts,
    duplicates: list[tuple[SourceFile, str, str | None]],
    decoded: dict[str, tuple[SourceFile, str]],
    labels: tuple[str, list[LabelRow]] | None,
    files: list[SourceFile],
    new_workspace: bool,
    log: Log,
    strict: bool = False,
) -> tuple[dict, bool]:
    """The copies, the labels, the views and the run's counts (a --strict run that met a bad file
    failed); returns the workspace summary and whether the run stored nothing in a workspace it
    made (then it is to be discarded)."""
    with database.writing(ws) as conn:
        record_duplicates(conn, duplicates, decoded, run_id, counts, log)
        if labels:
            apply_labels(conn, labels[0], labels[1], files, log)
        database.refresh_segment_audio_view(conn, ws)
        recordings.finish_run(conn, run_id, counts.as_row(), "failed" if strict and counts.failed else "completed")
        _open_here.discard(run_id)
        summary = status.workspace_summary(conn)
        # every file failed: the run found no recording, as if the paths held none (exit 2, nothing kept)
        discard = new_workspace and counts.failed == counts.files_seen and recordings.holds_only_run(conn, run_id)
    return summary, discard
