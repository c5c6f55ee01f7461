"""Finding recordings among files, folders and glob patterns, and fingerprinting their content."""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from tasks.audio import SUPPORTED_EXTENSIONS, UNSUPPORTED_AUDIO_EXTENSIONS
from tasks.failures import IngestFailure

HASH_BLOCK = 4 << 20


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class SourceProblem:
    path: str
    stage: str
    reason: str


@dataclass(frozen=True)
class Discovery:
    files: list[SourceFile]
    problems: list[SourceProblem]


def _has_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _candidate(path: Path, named_explicitly: bool) -> SourceFile | SourceProblem | None:
    suffix = path.suffix.lower()
    if suffix in UNSUPPORTED_AUDIO_EXTENSIONS:
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        return SourceProblem(str(path), "discover", f"unsupported format '{suffix}' (supported: {supported})")
    if suffix not in SUPPORTED_EXTENSIONS:
        if not named_explicitly:
            return None  # a folder's notes, CSVs and images are not recordings
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        return SourceProblem(str(path), "discover", f"unsupported file type '{suffix or '(none)'}' (supported: {supported})")
    try:
        stat = path.stat()
    except PermissionError:
        return SourceProblem(str(path), "read", "permission denied (cannot stat the file)")
    except OSError as exc:
        return SourceProblem(str(path), "read", f"cannot stat the file ({exc.strerror or exc})")
    return SourceFile(path, stat.st_size, stat.st_mtime_ns)


def discover(sources: list[str]) -> Discovery:
    """Expand sources into a sorted, de-duplicated list of candidate recordings.

    Folders are searched recursively for audio extensions; glob patterns are expanded
    (`**` recurses). A named file or pattern that matches nothing is reported, not ignored.
    """
    found: dict[Path, SourceFile] = {}
    problems: dict[str, SourceProblem] = {}

    def take(path: Path, explicit: bool) -> None:
        item = _candidate(path.absolute(), explicit)
        if isinstance(item, SourceFile):
            found[item.path] = item
        elif isinstance(item, SourceProblem):
            problems[item.path] = item

    for source in sources:
        expanded = os.path.expanduser(source)
        if _has_glob(expanded) and not Path(expanded).exists():
            matches = sorted(glob.glob(expanded, recursive=True))
            if not matches:
                problems[source] = SourceProblem(source, "discover", "glob pattern matches no files")
            for match in matches:
                path = Path(match)
                if path.is_dir():
                    continue
                take(path, explicit=False)
            continue
        path = Path(expanded)
        if path.is_dir():
            for root, dirs, names in os.walk(path, onerror=lambda e: problems.setdefault(
                    str(e.filename), SourceProblem(str(e.filename), "discover", f"cannot list folder ({e.strerror})"))):
                dirs.sort()
                for name in sorted(names):
                    take(Path(root) / name, explicit=False)
        elif path.exists() or path.is_symlink():
            take(path, explicit=True)
        else:
            problems[source] = SourceProblem(str(path.absolute()), "discover", "no such file or folder")
    return Discovery(files=sorted(found.values(), key=lambda f: str(f.path)), problems=list(problems.values()))


def content_hash(path: Path) -> str:
    """BLAKE2b of the file's bytes: the identity of a recording, whatever its name."""
    digest = hashlib.blake2b(digest_size=20)
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_BLOCK):
                digest.update(chunk)
    except PermissionError:
        raise IngestFailure("read", "permission denied") from None
    except FileNotFoundError:
        raise IngestFailure("read", "file disappeared before it could be read") from None
    except OSError as exc:
        raise IngestFailure("read", f"read failed ({exc.strerror or exc})") from None
    return digest.hexdigest()


def recording_id(content_digest: str) -> str:
    return content_digest[:16]
