"""The layout of a workspace folder."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from schemas.names import file_name
from schemas.settings import default_workspace
from tasks.workspace.staging import OWNERS, release_owner
from tasks.workspace.storage import STORAGE_FILE, SegmentStorage, read_storage


@dataclass(frozen=True)
class Workspace:
    """Everything ceta2vec keeps lives under one folder:

    ```
    <root>/
      ceta2vec.duckdb        tables and views (recordings, segments, ingest_errors, ...)
      segments/              Parquet dataset, site=<slug>/date=<YYYY-MM-DD|unknown>/rec-<id>.parquet
                             (or at the fsspec URL in storage.json: see tasks/workspace/storage.py)
      staging/               files being written; never read, cleared on the next run
      checkpoints/           pretraining runs, <run>/chunk-<n>/ (tasks/training/checkpoints.py)
      embeddings/<model>/    frame vectors (frames/*.parquet) and k-means centroids of one checkpoint
      indexes/               optional HNSW index files (tasks/catalog/vector_index.py)
      reports/               figures and HTML reports
    ```
    """

    root: Path

    @classmethod
    def at(cls, path: str | Path | None = None) -> "Workspace":
        return cls(Path(path or default_workspace()).expanduser().resolve())

    @property
    def db_path(self) -> Path:
        return self.root / "ceta2vec.duckdb"

    @property
    def segments_dir(self) -> Path:
        return self.root / "segments"

    @property
    def staging_dir(self) -> Path:
        return self.root / "staging"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def report_dir(self, model_id: str) -> Path:
        """Where a model's report goes unless `--output` says otherwise: reports/<model id as a folder name>."""
        return self.reports_dir / file_name(model_id, fallback="model")

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "embeddings"

    @property
    def indexes_dir(self) -> Path:
        return self.root / "indexes"

    def model_dir(self, slug: str) -> Path:
        """Files of one embedded checkpoint (slug: its table name without the prefix)."""
        return self.embeddings_dir / slug

    def frames_file(self, slug: str, tag: str) -> str:
        """Workspace-relative path of one batch's frame vectors."""
        return f"{self.embeddings_dir.name}/{slug}/frames/part-{tag}.parquet"

    def frames_glob(self, slug: str = "*") -> str:
        return str(self.model_dir(slug) / "frames" / "*.parquet")

    @cached_property
    def storage(self) -> SegmentStorage:
        """Where the segment dataset lives (this folder unless the first ingest gave --storage)."""
        return read_storage(self.root)

    @property
    def segments_glob(self) -> str:
        return self.storage.glob

    def segment_file(self, relative: str) -> str:
        """Path or URL of a dataset file given relative to the workspace (`segments/…`)."""
        return self.storage.location(relative)

    def exists(self) -> bool:
        return self.db_path.exists()

    def create(self) -> "Workspace":
        for folder in (self.root, self.segments_dir, self.staging_dir, self.checkpoints_dir, self.reports_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def remove_unused(self, root_existed: bool) -> None:
        """Undo `create` (and a first ingest's database) for a workspace that was given nothing to
        keep: the database, the storage setting and the folders `create` made, each folder only
        if it is empty, so nothing anyone else put there goes; the root only if it was made too."""
        release_owner(self.staging_dir)
        for name in (self.db_path.name, f"{self.db_path.name}.wal", STORAGE_FILE):
            (self.root / name).unlink(missing_ok=True)
        for folder in (self.staging_dir, self.root / OWNERS, self.segments_dir, self.checkpoints_dir,
                       self.reports_dir, *([self.root] if not root_existed else [])):
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): kept
                pass

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()
