"""Files in `staging/` carry the tag of the process writing them, so one run's clean-up removes
what a dead process left and never what a live one (another flow run, a Dask worker) is writing.

Each writing process holds an exclusive `flock` on `<workspace>/.writers/<tag>.lock` for its
lifetime; the kernel releases it however the process ends (kill -9 included), which is how a
clean-up tells a live owner from a dead one.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import threading
import uuid
from pathlib import Path

SEPARATOR = "--"
OWNERS = ".writers"  # beside staging/, which stays empty between runs

_lock = threading.Lock()
_tag: tuple[int, str] | None = None  # (pid, tag): a forked child gets a tag of its own
_handles: dict[str, object] = {}  # owners folder -> open, locked lock file, kept for the process's life


def _process_tag() -> str:
    global _tag
    if _tag is None or _tag[0] != os.getpid():
        _tag = (os.getpid(), uuid.uuid4().hex[:12])
        _handles.clear()  # a child's inherited locks belong to its parent's tag
    return _tag[1]


def owned_path(staging_dir: Path, name: str) -> Path:
    """`staging_dir/<tag>--<name>`, with this process registered as the tag's live owner."""
    return staging_dir / f"{register_owner(staging_dir)}{SEPARATOR}{name}"


def register_owner(staging_dir: Path) -> str:
    """This process's tag, registered as the tag's live owner beside `staging_dir` (until it ends)."""
    with _lock:
        tag = _process_tag()
        owners = staging_dir.parent / OWNERS
        while str(owners) not in _handles:
            owners.mkdir(parents=True, exist_ok=True)
            lock = owners / f"{tag}.lock"
            handle = open(lock, "a+b")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                same = os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                _handles[str(owners)] = handle
                atexit.register(_release, lock, handle)
            else:  # a clean-up took the fresh, not yet locked file for a dead owner's: lock a new one
                handle.close()
    return tag


def _release(lock: Path, handle) -> None:
    """On a normal exit; after a kill the next clean-up removes the lock file."""
    if _tag is not None and _tag[0] == os.getpid():
        lock.unlink(missing_ok=True)
        handle.close()


def release_owner(staging_dir: Path) -> None:
    """Give up this process's lock file beside `staging_dir` (its workspace is being removed): a
    workspace made again at the same place gets a fresh one, which other processes can see."""
    owners = staging_dir.parent / OWNERS
    with _lock:
        handle = _handles.pop(str(owners), None)
        if handle is not None and _tag is not None:
            (owners / f"{_tag[1]}.lock").unlink(missing_ok=True)
            handle.close()


def owner_alive(staging_dir: Path, tag: str) -> bool:
    """Whether the process registered as `tag` beside `staging_dir` is still running (it holds its
    lock file); reads only, so a read-only workspace can be asked too."""
    return _alive(staging_dir.parent / OWNERS, tag)


def _alive(owners: Path, tag: str) -> bool:
    if _tag is not None and _tag == (os.getpid(), tag):
        return True
    lock = owners / f"{tag}.lock"
    try:
        handle = open(lock, "rb")  # flock needs no write access
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def remove_leftovers(staging_dir: Path) -> list[Path]:
    """Delete staged files whose writer is gone (or that carry no tag), and dead owners' lock files."""
    removed: list[Path] = []
    if not staging_dir.exists():
        return removed
    owners = staging_dir.parent / OWNERS
    alive: dict[str, bool] = {}
    for leftover in staging_dir.iterdir():
        if not leftover.is_file():
            continue
        tag = leftover.name.split(SEPARATOR, 1)[0] if SEPARATOR in leftover.name else None
        if tag is not None:
            if tag not in alive:
                alive[tag] = _alive(owners, tag)
            if alive[tag]:
                continue
        leftover.unlink(missing_ok=True)
        removed.append(leftover)
    if owners.exists():
        for lock in owners.glob("*.lock"):
            if not alive.get(lock.stem, _alive(owners, lock.stem)):
                lock.unlink(missing_ok=True)
    return removed
