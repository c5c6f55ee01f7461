"""Labels from a CSV: recording-level (`file` + label columns) or event-level (+ `start_s`, `end_s`)."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

from schemas.records import LabelRow

RESERVED = {"file", "start_s", "end_s"}
log = logging.getLogger(__name__)


class LabelsError(ValueError):
    """A labels CSV that cannot be used; the message names the file and the problem."""


class BadRow(ValueError):
    """One row that cannot be used; the others still are."""


def seconds(value: str, column: str) -> float:
    """A cell of seconds (a label's start or end, in any annotation file)."""
    try:
        number = float(value)
    except ValueError:
        raise BadRow(f"{column} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise BadRow(f"{column} must be a finite, non-negative number, got {value!r}")
    return number


def _seconds(value: str, column: str) -> float | None:
    return None if value == "" else seconds(value, column)


def _header(path: Path, reader) -> list[str]:
    try:
        header = next(reader, None) or []
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} in the header); "
                          "save it as UTF-8 CSV") from None
    columns = [c.strip() for c in header]
    if "file" not in columns:
        raise LabelsError(f"{path}: labels CSV needs a 'file' column (found: {', '.join(columns) or 'no header'})")
    twice = sorted({c for c in columns if c and columns.count(c) > 1})
    if twice:  # which of the two would win is a guess; the file says two things
        raise LabelsError(f"{path}: column(s) {', '.join(map(repr, twice))} appear more than once in the header; "
                          "rename or remove the repeats")
    if not [c for c in columns if c and c not in RESERVED]:
        raise LabelsError(f"{path}: labels CSV has no label column beside file/start_s/end_s")
    return columns


def _row(columns: list[str], cells: list[str]) -> list[LabelRow]:
    if len(cells) != len(columns):
        raise BadRow(f"{len(cells)} fields where the header has {len(columns)}")
    record = {column: cell.strip() for column, cell in zip(columns, cells) if column}
    labels = {c: v for c, v in record.items() if c not in RESERVED and v}
    if not record["file"]:
        raise BadRow("the 'file' cell is empty")
    start = _seconds(record.get("start_s", ""), "start_s")
    end = _seconds(record.get("end_s", ""), "end_s")
    if (start is None) != (end is None):
        raise BadRow("give both start_s and end_s, or neither")
    if start is not None and end is not None and end <= start:
        raise BadRow(f"end_s ({end:g}) must be after start_s ({start:g})")
    return [LabelRow(record["file"], c, v, start, end) for c, v in labels.items()]


def read_labels(path: Path, warnings: list[str] | None = None) -> list[LabelRow]:
    """Every non-empty label cell of the CSV, one row each (long format).

    A file that cannot be read as a labels CSV at all (missing, not UTF-8 text, no `file` column,
    a column named twice) raises LabelsError. A row that cannot be used is left out with a warning
    naming the file and line (appended to `warnings`, else logged), and the other rows are kept.
    """
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise LabelsError(f"{path}: cannot open labels file ({exc.strerror or exc})") from None
    problems: list[str] = []
    rows: list[LabelRow] = []
    with handle:
        reader = csv.reader(handle)
        columns = _header(path, reader)
        while True:
            try:
                cells = next(reader, None)
            except UnicodeDecodeError as exc:
                raise LabelsError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} after line "
                                  f"{reader.line_num}); save it as UTF-8 CSV") from None
            except csv.Error as exc:
                raise LabelsError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from None
            if cells is None:
                break
            if not any(c.strip() for c in cells):
                continue  # a blank line
            try:
                rows.extend(_row(columns, cells))
            except BadRow as exc:
                problems.append(f"{path}: line {reader.line_num}: {exc}; row skipped")
    if warnings is None:
        for problem in problems:
            log.warning("%s", problem)
    else:
        warnings.extend(problems)
    return rows
