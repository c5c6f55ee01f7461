"""A workspace on disk: its folder layout, segment storage, staged writes and the DuckDB connection."""

from tasks.workspace.layout import Workspace

__all__ = ["Workspace"]
