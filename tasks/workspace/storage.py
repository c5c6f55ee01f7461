"""Where the Parquet segment dataset lives: the workspace's own `segments/` folder (the default),
or any fsspec URL given at the first ingest (`--storage s3://bucket/prefix`, `gs://…`,
`file:///mnt/shared/…`), recorded in `<workspace>/storage.json` for every later command.

Only the segment dataset moves. The DuckDB file stays on a local disk (DuckDB needs a local file
and its locks), and so do `staging/` (files are written there, then published), the working copy
of the checkpoints (made complete by an atomic rename; `mirror_checkpoints` keeps a copy at the
URL), frame vectors, indexes and reports (`publish_folder` copies one out). Credentials and endpoints come from the filesystem's usual
environment (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...), so that
Dask workers and training processes started from here find them too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pyarrow.parquet as pq

STORAGE_FILE = "storage.json"
SEGMENTS = "segments"


class StorageError(ValueError):
    """Storage that cannot be used as asked (a usage error); the message says why and what to do."""


def is_url(location: str) -> bool:
    return "://" in location


def _filesystem(url: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"cannot use storage {url}: {exc}") from exc


@dataclass(frozen=True)
class SegmentStorage:
    """The segment dataset's root: a local folder, or `url` on an fsspec filesystem."""

    local_root: Path  # the workspace folder
    url: str | None = None

    @property
    def remote(self) -> bool:
        return self.url is not None

    @cached_property
    def _fs(self):
        return _filesystem(self.url.rstrip("/"))  # type: ignore[union-attr]

    @property
    def filesystem(self):
        """The fsspec filesystem of a remote dataset (for DuckDB's `register_filesystem`)."""
        return self._fs[0] if self.remote else None

    @property
    def root(self) -> str:
        """`<workspace>/segments` or `<url>/segments`."""
        return f"{self.url.rstrip('/')}/{SEGMENTS}" if self.remote else str(self.local_root / SEGMENTS)  # type: ignore[union-attr]

    def location(self, relative: str) -> str:
        """Where a dataset file (`segments/site=…/date=…/rec-….parquet`, relative) lives."""
        return f"{self.url.rstrip('/')}/{relative}" if self.remote else str(self.local_root / relative)  # type: ignore[union-attr]

    @property
    def glob(self) -> str:
        return f"{self.root}/**/*.parquet"

    def _path(self, relative: str) -> str:
        fs, base = self._fs
        return f"{base.rstrip('/')}/{relative}"

    def publish(self, staged: Path, relative: str) -> int:
        """Move a finished staged file into the dataset (readers see all of it or nothing);
        returns its size in bytes."""
        if not self.remote:
            from tasks.workspace.segment_files import publish

            final = self.local_root / relative
            publish(staged, final)
            return final.stat().st_size
        fs, _ = self._fs
        size = staged.stat().st_size
        # An object store's PUT is atomic: the object appears whole or not at all.
        fs.put_file(str(staged), self._path(relative))
        staged.unlink()
        return size

    def files(self) -> list[str]:
        """Every dataset file, relative (`segments/…`)."""
        if not self.remote:
            folder = self.local_root / SEGMENTS
            return [p.relative_to(self.local_root).as_posix() for p in folder.rglob("*.parquet")] if folder.exists() else []
        fs, base = self._fs
        base = base.rstrip("/")
        fs.invalidate_cache()  # another process may have published since this one last listed
        return [p[len(base) + 1:] for p in fs.glob(f"{base}/{SEGMENTS}/**/*.parquet")]

    def remove(self, relative: str) -> None:
        if self.remote:
            self._fs[0].rm_file(self._path(relative))
        else:
            (self.local_root / relative).unlink(missing_ok=True)


def open_parquet(location: str) -> pq.ParquetFile:
    """A dataset file by the location `SegmentStorage.location` gave: a path or a URL."""
    if not is_url(location):
        return pq.ParquetFile(location)
    fs, path = _filesystem(location)
    return pq.ParquetFile(fs.open(path, "rb"))


def _is_page(relative: str) -> bool:
    return "/" not in relative and relative.endswith(".html")


def publish_folder(folder: Path, url: str, last: Callable[[str], bool] = _is_page) -> list[str]:
    """Copy every file of `folder` to the fsspec URL `url` (same relative paths), the files `last`
    picks after all others, then remove what `url` holds that `folder` does not, so the copy
    equals the folder. Returns the relative paths."""
    fs, base = _filesystem(url.rstrip("/"))
    base = base.rstrip("/")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    try:
        for parent in sorted({f"{base}/{relative}".rsplit("/", 1)[0] for relative in files}):
            fs.makedirs(parent, exist_ok=True)  # folders on a local or mounted URL; nothing on object stores
        # each PUT is atomic; what marks the copy complete (a report's pages, a checkpoint's
        # manifest) goes last, once everything it points to is there
        for relative in sorted(files, key=last):
            fs.put_file(str(folder / relative), f"{base}/{relative}")
        fs.invalidate_cache()
        there = fs.find(base) if fs.exists(base) else []
        stale = [p for p in there if p[len(base) + 1:] not in set(files)]
        if stale:
            fs.rm(stale)
    except OSError as exc:
        raise StorageError(f"cannot publish {folder} to {url}: {type(exc).__name__}: {exc}") from exc
    return files


def mirror_checkpoints(run_dir: Path, url: str) -> list[str]:
    """Copy a run's complete checkpoints to `<url>/checkpoints/<run>/chunk-NNNN/`, manifest last (a
    copy with a manifest is complete), and remove the copies of chunks pruned locally. Chunks whose
    copy already has the same manifest are left alone. Returns the chunk folders copied."""
    fs, base = _filesystem(url.rstrip("/"))
    target = f"{base.rstrip('/')}/checkpoints/{run_dir.name}"
    local = {p.name: p for p in sorted(run_dir.glob("chunk-*")) if not p.name.endswith(".partial")
             and (p / "manifest.json").exists()}
    copied = []
    try:
        fs.invalidate_cache()
        for name, folder in local.items():
            manifest = f"{target}/{name}/manifest.json"
            if fs.exists(manifest) and fs.cat_file(manifest) == (folder / "manifest.json").read_bytes():
                continue
            publish_folder(folder, f"{url.rstrip('/')}/checkpoints/{run_dir.name}/{name}",
                           last=lambda relative: relative == "manifest.json")
            copied.append(name)
        fs.invalidate_cache()
        for path in fs.ls(target, detail=False) if fs.exists(target) else []:
            if path.rstrip("/").rsplit("/", 1)[-1] not in local:
                fs.rm(path, recursive=True)
    except OSError as exc:
        raise StorageError(f"cannot copy the checkpoints of {run_dir} to {url}: {type(exc).__name__}: {exc}") from exc
    return copied


def read_storage(local_root: Path) -> SegmentStorage:
    config = local_root / STORAGE_FILE
    url = json.loads(config.read_text()).get("segments") if config.exists() else None
    return SegmentStorage(local_root, url)


def configure_storage(local_root: Path, url: str | None) -> SegmentStorage:
    """The workspace's segment storage, fixed by its first ingest: asking for another later is refused."""
    current = read_storage(local_root)
    wanted = url.rstrip("/") if url else None
    if wanted is None or wanted == current.url:
        return current
    if current.remote:
        raise StorageError(f"{local_root} keeps its segments at {current.url}, not {wanted}: "
                           "use another --workspace for another storage")
    if current.files():
        raise StorageError(f"{local_root} keeps its segments in {current.root}: "
                           f"use another --workspace to keep segments at {wanted}")
    if not is_url(wanted):
        raise StorageError(f"--storage takes an fsspec URL such as s3://bucket/prefix or file:///mnt/data, not {wanted!r}")
    storage = SegmentStorage(local_root, wanted)
    fs, base = storage._fs
    try:
        fs.makedirs(f"{base.rstrip('/')}/{SEGMENTS}", exist_ok=True)
    except Exception as exc:
        raise StorageError(f"cannot write to storage {wanted}: {type(exc).__name__}: {exc}") from exc
    temporary = local_root / f"{STORAGE_FILE}.partial"
    temporary.write_text(json.dumps({"segments": wanted}, indent=2))
    os.replace(temporary, local_root / STORAGE_FILE)
    return storage
