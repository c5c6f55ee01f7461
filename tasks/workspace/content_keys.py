"""Digests of what a computation reads, for cache keys that follow content rather than names or
run ids: the same inputs give the same digest in any workspace copy or run; a new checkpoint,
re-embedded segments, changed labels or changed code give another."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Iterable
from types import ModuleType

import duckdb
import numpy as np


def digest(*parts) -> str:
    """SHA-256 of JSON-able parts (NumPy arrays as lists)."""
    def plain(value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, (np.integer, np.floating)):
            return value.item()
        return str(value)

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=plain).encode()).hexdigest()


def source_digest(modules: Iterable[ModuleType]) -> str:
    """The code that computes a result: a changed metric gives new keys, not stale answers."""
    return digest(*(inspect.getsource(m) for m in modules))


def dataset_digest(conn: duckdb.DuckDBPyConnection) -> str:
    """The settings every segment was cut with (rate, length, hop, final segment)."""
    rows = conn.execute("SELECT key, value FROM workspace_config WHERE key IN "
                        "('sample_rate', 'segment_seconds', 'hop_seconds', 'final_segment') ORDER BY key").fetchall()
    return digest(rows)


def embeddings_digest(conn: duckdb.DuckDBPyConnection, model_id: str, segment_ids: list[str]) -> str | None:
    """The stored vectors of these segments: the checkpoint's export hash and, per segment and
    layer, when its vectors were written (re-embedding changes it). None for an unknown model."""
    row = conn.execute("SELECT export_sha256 FROM embedding_models WHERE model_id = ?", [model_id]).fetchone()
    if row is None:
        return None
    ledger = conn.execute(
        """SELECT md5(coalesce(string_agg(segment_id || ':' || layer || ':' || frames || ':' || epoch_us(embedded_at),
                                          ',' ORDER BY segment_id, layer), ''))
           FROM embedded_segments WHERE model_id = ? AND segment_id IN (SELECT unnest(?))""",
        [model_id, list(segment_ids)]).fetchone()[0]
    return digest(row[0], ledger)


def units_digest(conn: duckdb.DuckDBPyConnection, model_id: str) -> str:
    """The model's k-means fits (the codevector units follow from the checkpoint itself)."""
    rows = conn.execute("SELECT layer, k, fitted_frames, inertia, epoch_us(created_at) FROM unit_models "
                        "WHERE model_id = ? ORDER BY layer", [model_id]).fetchall()
    return digest(rows)


def labelled_digest(segment_ids: list[str], labels, recordings) -> str:
    return digest(list(segment_ids), np.asarray(labels).astype(str), np.asarray(recordings).astype(str))
