"""Which ingested recordings a labels file's rows name: pure path matching, no SQL."""

from __future__ import annotations

from pathlib import PurePosixPath

from schemas.records import LabelRow


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
