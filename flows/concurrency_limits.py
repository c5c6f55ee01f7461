"""Prefect global concurrency limits that make flow runs take turns on shared resources.

- `ceta2vec-duckdb-writer` (1 slot): one DuckDB write block at a time across every flow run
  reporting to the same Prefect server, whatever process or machine it runs in. DuckDB itself
  allows one writing process per file; across threads of one process it would let two flow runs
  write at once and fail one of them on a conflict. Outside a flow run (the CLI's `sql`, `index`,
  tests) and across processes with their own ephemeral servers, the file-lock retry in
  `tasks.store.connect` stays the fallback.
- `ceta2vec-gpu` (one slot per visible GPU): pretraining chunks on CUDA take turns.

Limits are created when missing (an existing limit keeps the size an operator gave it), and a
slot is held per thread re-entrantly, so a write block opened inside another never waits on itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

DUCKDB_WRITER = "ceta2vec-duckdb-writer"
GPU = "ceta2vec-gpu"
# Waiting longer than this for another run's write block means something is stuck: fail loudly.
WRITER_WAIT_S = 3600.0

_created: set[tuple[str, str]] = set()
_created_lock = threading.Lock()
_held = threading.local()
log = logging.getLogger(__name__)


def in_flow_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def ensure_limit(name: str, slots: int) -> None:
    """Create the global concurrency limit `name` on the current Prefect server if it is missing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    key = (str(PREFECT_API_URL.value()), name)
    with _created_lock:
        if key in _created:
            return
        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
                    log.info("created global concurrency limit %s (%d slot(s))", name, slots)
                except ObjectAlreadyExists:  # another process created it first
                    pass
        _created.add(key)


@contextmanager
def _slot(name: str, slots: int, timeout_s: float | None) -> Iterator[None]:
    depth = getattr(_held, name.replace("-", "_"), 0)
    if depth:
        setattr(_held, name.replace("-", "_"), depth + 1)
        try:
            yield
        finally:
            setattr(_held, name.replace("-", "_"), depth)
        return
    from prefect.concurrency.sync import concurrency

    ensure_limit(name, slots)
    with concurrency(name, occupy=1, timeout_seconds=timeout_s, strict=False):
        setattr(_held, name.replace("-", "_"), 1)
        try:
            yield
        finally:
            setattr(_held, name.replace("-", "_"), 0)


def duckdb_writer():
    """The writer slot inside a flow or task run; nothing outside one."""
    return _slot(DUCKDB_WRITER, 1, WRITER_WAIT_S) if in_flow_run() else nullcontext()


def gpu(device) -> object:
    """A GPU slot for CUDA work inside a flow run; nothing on CPU or outside a run."""
    if getattr(device, "type", str(device)) != "cuda" or not in_flow_run():
        return nullcontext()
    import torch

    return _slot(GPU, max(1, torch.cuda.device_count()), None)
