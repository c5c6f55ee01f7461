"""Finding recordings among files, folders and glob patterns, and fingerprinting their content."""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from tasks.audio.decode import SUPPORTED_EXTENSIONS, UNSUPPORTED_AUDIO_EXTENSIONS
from tasks.audio.failures import IngestFailure

HASH_BLOCK = 4 << 20


def printable(path: str | Path) -> str:
    """The path as text that DuckDB, Prefect and JSON can hold.

    A name whose bytes are not UTF-8 reaches Python with lone surrogates, which none of them
    accept; such a name is given with each undecodable byte as `\\xNN` (Python's backslashreplace),
    from which the bytes can be read back. Every other path is itself.
    """
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return text


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute; may hold surrogates (open it with this)
    size_bytes: int
    mtime_ns: int

    @property
    def key(self) -> str:
        """The path as stored in the workspace and shown in logs (see `printable`)."""
        return printable(self.path)


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


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _candidate(path: Path, named_explicitly: bool) -> SourceFile | SourceProblem | None:
    suffix = path.suffix.lower()
    shown = printable(path)
    if suffix in UNSUPPORTED_AUDIO_EXTENSIONS:
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        return SourceProblem(shown, "discover", f"unsupported format '{printable(suffix)}' (supported: {supported})")
    if suffix not in SUPPORTED_EXTENSIONS:
        if not named_explicitly:
            return None  # a folder's notes, CSVs and images are not recordings
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        return SourceProblem(shown, "discover",
                             f"unsupported file type '{printable(suffix) or '(none)'}' (supported: {supported})")
    try:
        info = path.stat()  # after links: a link is what it points at
    except PermissionError:
        return SourceProblem(shown, "read", "permission denied (cannot stat the file)")
    except OSError as exc:
        dangling = exc.errno == errno.ENOENT and path.is_symlink()
        reason = "a link to nothing" if dangling else exc.strerror or str(exc)
        return SourceProblem(shown, "read", f"cannot stat the file ({reason})")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO blocks its reader until someone writes; /dev/zero never ends.
        return SourceProblem(shown, "discover", f"not a regular file ({file_kind(info.st_mode)}); only files are read")
    return SourceFile(path, info.st_size, info.st_mtime_ns)


def discover(sources: list[str]) -> Discovery:
    """Expand sources into a sorted, de-duplicated list of candidate recordings.

    Folders are searched recursively for audio extensions; glob patterns are expanded
    (`**` recurses). A named file or pattern that matches nothing is reported, not ignored.
    """
    found: dict[Path, SourceFile] = {}
    problems: dict[str, SourceProblem] = {}
    audio_named_folders: dict[Path, str] = {}  # each yields a recording or an error row (_empty_folders)

    def folder(path: Path, why: str = "no recording was found in it") -> None:
        if path.suffix.lower() in SUPPORTED_EXTENSIONS | UNSUPPORTED_AUDIO_EXTENSIONS:
            audio_named_folders.setdefault(path.absolute(), why)

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
                problems[source] = SourceProblem(printable(source), "discover", "glob pattern matches no files")
            for match in matches:
                path = Path(match)
                if path.is_dir():
                    folder(path, "a glob pattern does not search the folders it matches: give the folder itself")
                    continue
                take(path, explicit=False)
            continue
        path = Path(expanded)
        if path.is_dir():
            folder(path)

            def unlisted(e: OSError) -> None:
                shown = printable(e.filename)
                problems.setdefault(shown, SourceProblem(shown, "discover", f"cannot list folder ({e.strerror})"))

            for root, dirs, names in os.walk(path, onerror=unlisted):
                dirs.sort()
                for name in dirs:  # a link to a folder is listed here too, and not followed
                    link = os.path.islink(os.path.join(root, name))
                    folder(Path(root) / name, "links to folders inside a folder are not followed" if link
                           else "no recording was found in it")
                for name in sorted(names):
                    take(Path(root) / name, explicit=False)
        elif path.exists() or path.is_symlink():
            take(path, explicit=True)
        else:
            problems[source] = SourceProblem(printable(path.absolute()), "discover", "no such file or folder")
    for problem in _empty_folders(audio_named_folders, found):
        problems.setdefault(problem.path, problem)
    return Discovery(files=sorted(found.values(), key=lambda f: str(f.path)), problems=list(problems.values()))


def _empty_folders(folders: dict[Path, str], found: dict[Path, SourceFile]) -> list[SourceProblem]:
    """Folders named like recordings (`dir.wav`) from which no recording came: an error row each,
    since their name says a recording was meant (one holding recordings is just a folder)."""
    holding = {parent for path in found for parent in path.parents}
    return [SourceProblem(printable(path), "discover", f"{'a link to a folder' if path.is_symlink() else 'a folder'}, "
                          f"not an audio file ({why})") for path, why in folders.items() if path not in holding]


def open_regular(path: Path):
    """(binary file, size) of a regular file; IngestFailure for anything else.

    Opened without blocking and checked on the open descriptor, so a file swapped for a FIFO or
    a device after discovery cannot hang the run either.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IngestFailure("read", f"not a regular file ({file_kind(info.st_mode)}); only files are read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), info.st_size
    except BaseException:
        os.close(fd)
        raise


def content_hash(path: Path) -> str:
    """BLAKE2b of the file's bytes: the identity of a recording, whatever its name."""
    digest = hashlib.blake2b(digest_size=20)
    try:
        handle, left = open_regular(path)
        with handle:  # never past the size it had when opened: a file that keeps growing still ends
            while left > 0 and (chunk := handle.read(min(HASH_BLOCK, left))):
                digest.update(chunk)
                left -= len(chunk)
    except PermissionError:
        raise IngestFailure("read", "permission denied") from None
    except FileNotFoundError:
        raise IngestFailure("read", "file disappeared before it could be read") from None
    except OSError as exc:
        raise IngestFailure("read", f"read failed ({exc.strerror or exc})") from None
    return digest.hexdigest()


def recording_id(content_digest: str) -> str:
    return content_digest[:16]
