"""Labels from a CSV: recording-level (`file` + label columns) or event-level (+ `start_s`, `end_s`)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

RESERVED = {"file", "start_s", "end_s"}


class LabelsError(ValueError):
    """A labels CSV that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class LabelRow:
    file: str
    label_column: str
    label_value: str
    start_s: float | None
    end_s: float | None


def _seconds(value: str, column: str, path: Path, line: int) -> float | None:
    if value.strip() == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise LabelsError(f"{path}: line {line}: {column} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise LabelsError(f"{path}: line {line}: {column} must be a finite, non-negative number, got {value!r}")
    return seconds


def read_labels(path: Path) -> list[LabelRow]:
    """Every non-empty label cell of the CSV, one row each (long format)."""
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise LabelsError(f"{path}: cannot open labels file ({exc.strerror or exc})") from None
    with handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "file" not in columns:
            raise LabelsError(f"{path}: labels CSV needs a 'file' column (found: {', '.join(columns) or 'no header'})")
        label_columns = [c for c in columns if c not in RESERVED]
        if not label_columns:
            raise LabelsError(f"{path}: labels CSV has no label column beside file/start_s/end_s")
        rows: list[LabelRow] = []
        for line, record in enumerate(reader, start=2):
            record = {(k or "").strip(): (v or "").strip() for k, v in record.items()}
            if not record.get("file"):
                continue
            start = _seconds(record.get("start_s", ""), "start_s", path, line)
            end = _seconds(record.get("end_s", ""), "end_s", path, line)
            if (start is None) != (end is None):
                raise LabelsError(f"{path}: line {line}: give both start_s and end_s, or neither")
            if start is not None and end is not None and end <= start:
                raise LabelsError(f"{path}: line {line}: end_s ({end}) must be after start_s ({start})")
            for column in label_columns:
                if record.get(column):
                    rows.append(LabelRow(record["file"], column, record[column], start, end))
    return rows


def matches(label_file: str, source_path: str) -> bool:
    """A label's `file` names a source when it equals the path or its trailing components
    (`calls/a.wav` matches `/data/site1/calls/a.wav`; `a.wav` matches any folder's a.wav)."""
    wanted = PurePosixPath(label_file.replace("\\", "/")).parts
    have = PurePosixPath(source_path.replace("\\", "/")).parts
    wanted = tuple(p for p in wanted if p not in (".", ""))
    return bool(wanted) and have[-len(wanted):] == wanted


def assign_labels(rows: list[LabelRow], sources: dict[str, str]) -> tuple[list[tuple[str, LabelRow]], list[str]]:
    """Pair label rows with recordings ({source path: recording_id}); also return unmatched `file`s."""
    by_name: dict[str, list[str]] = {}
    for path in sources:
        by_name.setdefault(PurePosixPath(path.replace("\\", "/")).name, []).append(path)
    paired: list[tuple[str, LabelRow]] = []
    unmatched: list[str] = []
    for row in rows:
        name = PurePosixPath(row.file.replace("\\", "/")).name
        hits = {sources[p] for p in by_name.get(name, []) if matches(row.file, p)}
        if not hits:
            unmatched.append(row.file)
        paired.extend((recording, row) for recording in sorted(hits))
    return paired, sorted(set(unmatched))
