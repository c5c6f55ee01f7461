"""Deciding what an ingest run has to do, and counting what it did."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tasks.ingest.discovery import SourceFile


@dataclass(frozen=True)
class Plan:
    todo: list[SourceFile]  # new or changed since last seen: fingerprint them
    unchanged: list[tuple[SourceFile, str]]  # (file, recording_id) seen before with this size and mtime


def plan_files(files: list[SourceFile], known: dict[str, tuple[int, int, str]]) -> Plan:
    todo, unchanged = [], []
    for file in files:
        seen = known.get(file.key)
        if seen and seen[0] == file.size_bytes and seen[1] == file.mtime_ns:
            unchanged.append((file, seen[2]))
        else:
            todo.append(file)
    return Plan(todo, unchanged)


@dataclass(frozen=True)
class Dedup:
    unique: list[tuple[SourceFile, str]]  # (file, content hash) to decode
    duplicates: list[tuple[SourceFile, str, str | None]]  # (file, hash, recording it repeats or None: earlier in this run)


def dedupe(fingerprinted: list[tuple[SourceFile, str]], known_hashes: dict[str, str]) -> Dedup:
    """Same bytes under another name: only the first copy is decoded."""
    unique, duplicates, first_in_run = [], [], {}
    for file, digest in fingerprinted:
        if digest in known_hashes:
            duplicates.append((file, digest, known_hashes[digest]))
        elif digest in first_in_run:
            duplicates.append((file, digest, None))
        else:
            first_in_run[digest] = file
            unique.append((file, digest))
    return Dedup(unique, duplicates)


@dataclass
class IngestCounts:
    files_seen: int = 0
    ingested: int = 0
    skipped: int = 0  # unchanged since an earlier run
    duplicates: int = 0
    failed: int = 0
    warnings: int = 0
    segments_added: int = 0
    audio_seconds_added: float = 0.0
    bytes_added: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (path, stage, reason)

    @property
    def bytes_per_audio_hour(self) -> float:
        return self.bytes_added / (self.audio_seconds_added / 3600) if self.audio_seconds_added else 0.0

    def first_failure(self) -> tuple[str, str, str] | None:
        """The failed file first in discovery order (path order), not the first one recorded:
        problems met while fingerprinting are recorded before those met while decoding."""
        return min(self.failures, key=lambda failure: failure[0], default=None)

    def as_row(self) -> dict:
        row = asdict(self)
        row.pop("failures")
        row["bytes_per_audio_hour"] = round(self.bytes_per_audio_hour)
        return row


def batches(files: list[SourceFile], max_bytes: int, max_files: int) -> list[list[SourceFile]]:
    """Consecutive groups of files: a big file alone, small ones together, so per-task
    overhead stays small next to the work whatever the recorder's file size."""
    groups: list[list[SourceFile]] = []
    current: list[SourceFile] = []
    size = 0
    for file in files:
        if current and (size + file.size_bytes > max_bytes or len(current) >= max_files):
            groups.append(current)
            current, size = [], 0
        current.append(file)
        size += file.size_bytes
    if current:
        groups.append(current)
    return groups


class InOrder:
    """--strict: outcomes let through in the files' order, up to and including the first failure;
    whatever comes after it is held back for good (and never committed)."""

    def __init__(self, keys: list[str]):
        self._position = {key: i for i, key in enumerate(keys)}
        self._waiting: dict[int, tuple[object, bool]] = {}
        self._next = 0
        self.failed = False

    def add(self, outcomes: list[tuple[str, object, bool]]) -> list:
        """(key, outcome, is_failure) of finished files, in any order; returns those now due."""
        for key, outcome, failure in outcomes:
            self._waiting[self._position[key]] = (outcome, failure)
        due = []
        while not self.failed and self._next in self._waiting:
            outcome, failure = self._waiting.pop(self._next)
            due.append(outcome)
            self._next += 1
            self.failed = failure
        return due
