"""Detections out: windows above a threshold merged into events, written as Raven selection tables
(one per file, or one over all files), CSV or Parquet."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.catalog import detections as detections_catalog
from tasks.detection.raven import Event, write_combined, write_per_file
from tasks.workspace.database import WorkspaceError

Format = Literal["raven", "csv", "parquet"]


def merge_windows(rows: list[tuple], label: str, merge_gap_s: float) -> list[Event]:
    """Windows above the threshold (detections_catalog.windows_above rows, in time order per recording
    and channel) as events: a window starting at most `merge_gap_s` after the event so far ends joins it."""
    events: list[Event] = []
    current = None
    for recording, file_name, channel, start, end, score, utc, rate in rows:
        if current and current["key"] == (recording, channel) and start <= current["end"] + merge_gap_s + 1e-9:
            current["end"] = max(current["end"], end)
            current["score"] = max(current["score"], score)
            current["windows"] += 1
            continue
        if current:
            events.append(_event(current, label))
        current = {"key": (recording, channel), "file": file_name, "start": start, "end": end, "score": score,
                   "windows": 1, "rate": rate, "utc": utc}
    if current:
        events.append(_event(current, label))
    return events


def _event(c: dict, label: str) -> Event:
    return Event(c["key"][0], c["file"], c["key"][1], float(c["start"]), float(c["end"]), label, float(c["score"]),
                 c["windows"], c["rate"] / 2, c["utc"])


def classifier_for(conn: duckdb.DuckDBPyConnection, label: str, classifier_id: str | None) -> dict:
    record = (detections_catalog.classifier_row(conn, classifier_id) if classifier_id
              else detections_catalog.current_classifier(conn, label))
    if record is None:
        known = detections_catalog.classifier_labels(conn)
        raise WorkspaceError(f"no classifier for '{label}' in this workspace (classified: {', '.join(known) or 'none'}); "
                             f"run `ceta2vec classify --label {label}` first")
    return record


def detected_events(conn: duckdb.DuckDBPyConnection, label: str, threshold: float | None, merge_gap_s: float,
                    classifier_id: str | None = None) -> tuple[dict, float, list[Event]]:
    """(classifier, threshold used, events): the classifier's validated threshold unless one is given."""
    record = classifier_for(conn, label, classifier_id)
    used = record["threshold"] if threshold is None else threshold
    return record, used, merge_windows(detections_catalog.windows_above(conn, record["classifier_id"], used), label,
                                       merge_gap_s)


def write_events(conn: duckdb.DuckDBPyConnection, events: list[Event], fmt: Format, output: Path, label: str,
                 combined: bool) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    if fmt == "raven":
        if combined:
            order = detections_catalog.recordings_in_order(conn, sorted({e.recording_id for e in events}))
            return [write_combined(events, output / f"{label}.combined.selections.txt", order)]
        return write_per_file(events, output)
    columns = {"recording_id": [e.recording_id for e in events], "file": [e.file_name for e in events],
               "channel": [e.channel for e in events], "start_s": [e.start_s for e in events],
               "end_s": [e.end_s for e in events], "label": [e.label for e in events],
               "score": [e.score for e in events], "windows": [e.windows for e in events],
               "utc_start": [e.utc_start for e in events]}
    if fmt == "parquet":
        path = output / f"{label}.detections.parquet"
        pq.write_table(pa.table(columns), path)
        return [path]
    path = output / f"{label}.detections.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "start_s", "end_s", "label", "score", "windows", "channel", "utc_start", "recording_id"])
        for e in events:
            writer.writerow([e.file_name, f"{e.start_s:.3f}", f"{e.end_s:.3f}", e.label, f"{e.score:.4f}", e.windows,
                             e.channel, e.utc_start.isoformat() if e.utc_start else "", e.recording_id])
    return [path]
