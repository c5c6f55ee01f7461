"""Annotation files in: a labels CSV of spans, a Raven selection table, or the explorer's Export
CSV of a selection. Each reader returns the usable rows and one line per row it left out
(file, row, what is wrong); a file that cannot be read at all raises LabelsError.

    CSV       file, start_s, end_s[, label][, positive]     (spans in seconds from the file's start)
    Raven     .txt, tab-separated, Begin Time (s), End Time (s)[, Begin File, File Offset (s)], Annotation
    explorer  segment_id, recording, ... (segment mode) or frame_id, segment_id, frame, ..., time_s (frame mode)

`suggest` writes the first kind with an empty `positive` column: fill it with yes/no (or skip) and
import it again.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tasks.catalog import annotations as annotations_catalog
from tasks.catalog.annotations import AnnotationRow
from tasks.detection.decisions import decision
from tasks.detection.raven import is_raven_table, read_raven
from tasks.ingest.labels import BadRow, LabelsError, seconds
from tasks.workspace import Workspace, database

Kind = Literal["csv", "raven", "explorer", "similar"]
FRAME_WINDOW_S = 1.0  # the explorer's clip around a frame (tasks/report/explorer_frames.py WINDOW_S)


def detect_kind(path: Path) -> Kind:
    if is_raven_table(path):
        return "raven"
    header = [c.strip() for c in _csv_lines(path)[0]] if path.exists() else []
    return "explorer" if "segment_id" in header and "file" not in header else "csv"


def _csv_lines(path: Path) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            lines = list(csv.reader(handle))
    except OSError as exc:
        raise LabelsError(f"{path}: cannot open the annotation file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise LabelsError(f"{path}: not valid CSV ({exc})") from None
    if not lines:
        raise LabelsError(f"{path}: the file is empty (no header)")
    return lines


def _records(path: Path, required: tuple[str, ...]):
    lines = _csv_lines(path)
    header = [c.strip() for c in lines[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise LabelsError(f"{path}: needs the column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'})")
    for number, cells in enumerate(lines[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            yield number, None, f"{len(cells)} fields where the header has {len(header)}"
            continue
        yield number, {name: _unguarded(cell.strip()) for name, cell in zip(header, cells)}, None


def _unguarded(cell: str) -> str:
    """A cell without the apostrophe the explorer puts before = + - @ (so spreadsheets do not run it)."""
    return cell[1:] if len(cell) > 1 and cell[0] == "'" and cell[1] in "=+-@" else cell


def _label(record: dict[str, str], label: str | None) -> str:
    value = label or record.get("label", "")
    if not value:
        raise BadRow("no label: the 'label' cell is empty (or give --label)")
    return value


def read_span_csv(path: Path, label: str | None = None) -> tuple[list[AnnotationRow], list[str]]:
    """file, start_s, end_s and a label per row (`label` column, or `label` for all rows)."""
    lines = _csv_lines(path)
    if label is None and "label" not in [c.strip() for c in lines[0]]:
        raise LabelsError(f"{path}: no 'label' column; add one, or give --label NAME for every row")
    rows, problems = [], []
    for number, record, wrong in _records(path, ("file", "start_s", "end_s")):
        try:
            if wrong:
                raise BadRow(wrong)
            if not record["file"]:
                raise BadRow("the 'file' cell is empty")
            start, end = seconds(record["start_s"], "start_s"), seconds(record["end_s"], "end_s")
            if end <= start:
                raise BadRow(f"end_s ({end:g}) must be after start_s ({start:g})")
            value = _label(record, label)
            positive = decision(record)
            if positive is not None:
                rows.append(AnnotationRow(number, value, positive, start, end, file=record["file"]))
        except BadRow as exc:
            problems.append(f"{path}: row {number}: {exc}; row skipped")
    return rows, problems


def read_explorer_export(path: Path, label: str | None,
                         frame_window_s: float = FRAME_WINDOW_S) -> tuple[list[AnnotationRow], list[str]]:
    """The explorer's Export CSV: every selected segment (segment mode), or a window of
    `frame_window_s` around every selected frame (frame mode), labelled `label` (positive unless a
    decision column says otherwise)."""
    if not label:
        raise LabelsError(f"{path}: an explorer selection carries no label of its own; give --label NAME")
    header = [c.strip() for c in _csv_lines(path)[0]]
    frames = "frame_id" in header
    rows, problems = [], []
    for number, record, wrong in _records(path, ("segment_id", "time_s") if frames else ("segment_id",)):
        try:
            if wrong:
                raise BadRow(wrong)
            if not record["segment_id"]:
                raise BadRow("the 'segment_id' cell is empty")
            positive = decision(record)
            if positive is None:
                continue
            if frames:
                at = seconds(record["time_s"], "time_s")
                rows.append(AnnotationRow(number, label, positive, max(0.0, at - frame_window_s / 2),
                                          at + frame_window_s / 2, segment_id=record["segment_id"]))
            else:
                rows.append(AnnotationRow(number, label, positive, None, None, segment_id=record["segment_id"]))
        except BadRow as exc:
            problems.append(f"{path}: row {number}: {exc}; row skipped")
    return rows, problems


def read_annotations(path: Path, label: str | None = None, label_column: str | None = None,
                     recording: str | None = None) -> tuple[Kind, list[AnnotationRow], list[str]]:
    """(kind, rows, problems) of any annotation file ceta2vec reads, by its content."""
    if not path.is_file():
        raise LabelsError(f"{path}: no such annotation file")
    kind = detect_kind(path)
    if kind == "raven":
        rows, problems = read_raven(path, label, label_column, recording)
    elif kind == "explorer":
        rows, problems = read_explorer_export(path, label)
    else:
        rows, problems = read_span_csv(path, label)
    return kind, rows, problems


@dataclass(frozen=True)
class Imported:
    source: str
    kind: Kind
    stored: int
    problems: list[str]
    counts: dict  # {(label, positive): rows} now stored for the source


def import_annotations(workspace: Workspace, path: Path, label: str | None = None, label_column: str | None = None,
                       recording: str | None = None) -> Imported:
    """Read an annotation file and make its rows the workspace's annotations from that file (a re-import
    replaces them: idempotent). Bad rows are reported one line each; the good rows go in."""
    kind, rows, problems = read_annotations(path, label, label_column, recording)
    source = str(path.resolve())
    with database.writing(workspace) as conn:
        database.apply_schema(conn, workspace)
        resolved, unmatched = annotations_catalog.resolve(conn, source, rows)
        stored = annotations_catalog.replace_source(conn, source, kind, resolved)
        counts = annotations_catalog.counts_by_source(conn, source)
    return Imported(source, kind, stored, problems + unmatched, counts)


def import_similar(workspace: Workspace, segment_id: str, k: int, label: str, layer: int | None = None,
                   model_id: str | None = None, negative: bool = False) -> Imported:
    """Label a segment and its nearest neighbours (`ceta2vec similar`'s exact cosine search: the segment
    first, then the k - 1 closest) as examples of `label` (negatives with `negative`). The source names
    the query, so asking again replaces what the same query gave."""
    from tasks.catalog.embeddings import resolve_model
    from tasks.catalog.search import default_layer, similar

    if not label:
        raise LabelsError("--from-similar needs --label NAME: neighbours carry no label of their own")
    if k < 1:
        raise LabelsError(f"-k must be at least 1, got {k}")
    with database.reading(workspace) as conn:
        model = resolve_model(conn, model_id)
        layer = default_layer(model.layers) if layer is None else layer
        found = similar(conn, segment_id, k, layer, model.model_id)
    ids = [row[found.columns.index("segment_id")] for row in found.rows]
    rows = [AnnotationRow(n, label, not negative, None, None, segment_id=sid) for n, sid in enumerate(ids, start=1)]
    source = f"similar:{model.model_id}:layer {layer}:{segment_id}"
    with database.writing(workspace) as conn:
        database.apply_schema(conn, workspace)
        resolved, unmatched = annotations_catalog.resolve(conn, source, rows)
        stored = annotations_catalog.replace_source(conn, source, "similar", resolved)
        counts = annotations_catalog.counts_by_source(conn, source)
    return Imported(source, "similar", stored, unmatched, counts)
