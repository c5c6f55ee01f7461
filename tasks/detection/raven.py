"""Raven selection tables (Cornell's Raven Pro/Lite): read them as annotations, write detections
as tables Raven opens.

A selection table is tab-separated text with a header row: `Selection`, `View`, `Channel`,
`Begin Time (s)`, `End Time (s)`, `Low Freq (Hz)`, `High Freq (Hz)`, and any annotation columns.
A table made over several files at once adds `Begin File` and `File Offset (s)` (where the
selection starts inside that file); a table of one file is named `<audio stem>.Table.1.selections.txt`
by Raven, which is how the file is found when no `Begin File` column says it.

Written here rather than taken from a library: crowsetta's reader (which soundevent's Raven I/O
goes through) validates the whole table with pandera and refuses it at the first bad row, needs the
frequency columns, and knows no `Begin File`; ceta2vec keeps the good rows and names each bad one.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tasks.catalog.annotations import AnnotationRow
from tasks.detection.decisions import decision
from tasks.ingest.labels import BadRow, LabelsError, seconds

BEGIN, END = "Begin Time (s)", "End Time (s)"
BEGIN_FILE, FILE_OFFSET = "Begin File", "File Offset (s)"
TABLE_SUFFIX = ".Table.1.selections.txt"
DEFAULT_LABEL_COLUMN = "Annotation"


def is_raven_table(path: Path) -> bool:
    """A tab-separated header naming Raven's begin and end columns."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return "\t" in first and BEGIN in first and END in first


def table_stem(path: Path) -> str:
    """The audio file's stem a one-file table is named after (`a.Table.1.selections.txt` -> `a`)."""
    name = path.name
    marker = name.find(".Table.")
    return name[:marker] if marker > 0 else path.stem


def read_raven(path: Path, label: str | None = None, label_column: str | None = None,
               recording: str | None = None) -> tuple[list[AnnotationRow], list[str]]:
    """The table's selections as annotations, and one line for each row that cannot be used.

    Each row is labelled `label` when given, else by its `label_column` cell (default `Annotation`).
    Its file is the row's `Begin File`, else `recording`, else the table's own name. A `positive` (or
    `present`, `decision`) column marks negatives (no/false/0); rows marked skip are left out quietly.
    Raven repeats a selection once per view (waveform, spectrogram): the repeats are read once.
    """
    try:
        handle = open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise LabelsError(f"{path}: cannot open the selection table ({exc.strerror or exc})") from None
    with handle:
        try:
            lines = list(csv.reader(handle, delimiter="\t"))
        except UnicodeDecodeError as exc:
            raise LabelsError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); "
                              "save the selection table as UTF-8") from None
        except csv.Error as exc:
            raise LabelsError(f"{path}: not a tab-separated selection table ({exc})") from None
    if not lines:
        raise LabelsError(f"{path}: the selection table is empty (no header)")
    header = [c.strip() for c in lines[0]]
    missing = [c for c in (BEGIN, END) if c not in header]
    if missing:
        raise LabelsError(f"{path}: a Raven selection table needs the columns {BEGIN!r} and {END!r} "
                          f"(missing: {', '.join(missing)}; found: {', '.join(header) or 'none'})")
    column = label_column or DEFAULT_LABEL_COLUMN
    if label is None and column not in header:
        raise LabelsError(f"{path}: no {column!r} column to take labels from; give --label NAME for every "
                          f"selection, or --label-column with one of: {', '.join(header)}")
    default_file = recording or table_stem(path)
    rows, problems, seen = [], [], set()
    for number, cells in enumerate(lines[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        try:
            if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
                raise BadRow(f"{len(cells)} fields where the header has {len(header)}")
            record = {name: (cells[i].strip() if i < len(cells) else "") for i, name in enumerate(header)}
            begin, end = seconds(record[BEGIN], BEGIN), seconds(record[END], END)
            if end <= begin:
                raise BadRow(f"{END} ({end:g}) must be after {BEGIN} ({begin:g})")
            key = (record.get("Selection", str(number)), begin, end)
            if key in seen:
                continue  # the same selection in another view
            seen.add(key)
            file = record.get(BEGIN_FILE) or default_file
            # in a table over several files, Begin Time runs on the joined timeline: the offset is the file's
            start = seconds(record[FILE_OFFSET], FILE_OFFSET) if record.get(FILE_OFFSET) else begin
            value = label or record.get(column, "")
            if not value:
                raise BadRow(f"the {column!r} cell is empty")
            positive = decision(record)
            if positive is None:
                continue  # reviewed and skipped
            rows.append(AnnotationRow(number, value, positive, start, start + (end - begin), file=file))
        except BadRow as exc:
            problems.append(f"{path}: row {number}: {exc}; row skipped")
    return rows, problems


@dataclass(frozen=True)
class Event:
    """A detected event: consecutive windows above the threshold, merged."""

    recording_id: str
    file_name: str
    channel: int  # -1: the mono mixdown
    start_s: float
    end_s: float
    label: str
    score: float  # the highest window score inside it
    windows: int
    high_freq_hz: float  # Nyquist of the original recording (Raven's selection box top)
    utc_start: object = None


def _channel(channel: int) -> int:
    return 1 if channel < 0 else channel + 1  # Raven counts channels from 1; the mixdown shows as 1


def _row(selection: int, event: Event, begin: float, combined: bool) -> list[str]:
    row = [str(selection), "Spectrogram 1", str(_channel(event.channel)), f"{begin:.6f}",
           f"{begin + event.end_s - event.start_s:.6f}", "0.0", f"{event.high_freq_hz:.1f}"]
    if combined:
        row += [event.file_name, f"{event.start_s:.6f}"]
    return row + [event.label, f"{event.score:.4f}"]


def _header(combined: bool) -> list[str]:
    return (["Selection", "View", "Channel", BEGIN, END, "Low Freq (Hz)", "High Freq (Hz)"]
            + ([BEGIN_FILE, FILE_OFFSET] if combined else []) + [DEFAULT_LABEL_COLUMN, "Score"])


def _write(path: Path, rows: Iterable[list[str]], combined: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(_header(combined))
        writer.writerows(rows)
    partial.replace(path)  # a reader never sees half a table
    return path


def write_per_file(events: list[Event], folder: Path) -> list[Path]:
    """One selection table per recording, named as Raven names its own (`<stem>.Table.1.selections.txt`)."""
    by_file: dict[tuple[str, str], list[Event]] = {}
    for event in events:
        by_file.setdefault((event.file_name, event.recording_id), []).append(event)
    stems = [Path(name).stem for name, _ in by_file]
    written = []
    for (name, recording), group in sorted(by_file.items()):
        stem = Path(name).stem if stems.count(Path(name).stem) == 1 else f"{Path(name).stem}-{recording[:8]}"
        rows = [_row(i, e, e.start_s, False) for i, e in enumerate(sorted(group, key=_order), start=1)]
        written.append(_write(folder / f"{stem}{TABLE_SUFFIX}", rows, False))
    return written


def write_combined(events: list[Event], path: Path, durations: dict[str, float]) -> Path:
    """One table over all files, as Raven makes one when the files are opened together in the order
    of `durations` ({file name: seconds}): `Begin Time (s)` runs on that joined timeline, and `Begin
    File`/`File Offset (s)` say where each selection is inside its own file."""
    offsets, total = {}, 0.0
    for name, seconds_ in durations.items():
        offsets[name] = total
        total += seconds_
    ordered = sorted(events, key=lambda e: (offsets.get(e.file_name, math.inf), _order(e)))
    rows = [_row(i, e, offsets[e.file_name] + e.start_s, True) for i, e in enumerate(ordered, start=1)]
    return _write(path, rows, True)


def _order(event: Event) -> tuple:
    return event.start_s, event.channel
