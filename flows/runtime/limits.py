"""Prefect global concurrency limits that make flow runs take turns on shared resources.

- `ceta2vec-duckdb-writer` (1 slot): one DuckDB write block at a time across every flow run
  reporting to the same Prefect server, whatever process or machine it runs in. DuckDB itself
  allows one writing process per file; across threads of one process it would let two flow runs
  write at once and fail one of them on a conflict. Outside a flow run (the CLI's `sql`, `index`,
  tests) the file-lock retry in `tasks.workspace.database.connect` stays the only guard.
- `ceta2vec-gpu` (one slot per visible GPU): pretraining chunks on CUDA take turns.

Only against a shared server (PREFECT_API_URL set by the user): there a slot held by a process
that was killed is given back when its lease (LEASE_S) runs out. The temporary server each CLI
process starts (Prefect's ephemeral one, or the one `flows.runtime.server` starts first) keeps
leases in its memory while the slot counts live in the SQLite database the next process's server
reuses, so a `kill -9` would strand the slot for good; with such a server a lock of the process
stands in (flow runs of one process take turns; processes take turns on DuckDB's file lock). With
a server, threads of one process still queue on that lock first and only one of them at a time
asks the server.

Limits are created when missing (an existing limit keeps the size an operator gave it), and a
slot is held per thread re-entrantly, so a write block opened inside another never waits on itself.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext

DUCKDB_WRITER = "ceta2vec-duckdb-writer"
GPU = "ceta2vec-gpu"
# Waiting longer than this for another run's write block means something is stuck: fail loudly.
WRITER_WAIT_S = 3600.0
# A killed holder's slot comes back this long after its last renewal (renewed while held).
LEASE_S = 60.0
# After this long without the writer slot, assume a dead holder the server will not reap.
STALE_SLOT_S = 3 * LEASE_S

_created: set[tuple[str, str]] = set()
_created_lock = threading.Lock()
_held = threading.local()
_local_turns: dict[str, threading.BoundedSemaphore] = {}
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


def shared_server() -> bool:
    """A server other processes can report to (not one a CLI command started for itself)."""
    from prefect.settings import PREFECT_API_URL

    from flows.runtime.server import OWN_SERVER_ENV

    url = PREFECT_API_URL.value()
    return bool(url) and url != os.environ.get(OWN_SERVER_ENV)


def _local(name: str, slots: int) -> threading.BoundedSemaphore:
    with _created_lock:
        return _local_turns.setdefault(name, threading.BoundedSemaphore(slots))


@contextmanager
def _slot(name: str, slots: int, timeout_s: float | None) -> Iterator[None]:
    attr = name.replace("-", "_")
    depth = getattr(_held, attr, 0)
    if depth:
        setattr(_held, attr, depth + 1)
        try:
            yield
        finally:
            setattr(_held, attr, depth)
        return
    # Threads of this process queue on a local semaphore first, so the server only arbitrates between
    # processes: its 423 answers carry a Retry-After of up to 30 s, far too long a wait for a turn
    # another thread of the same run is about to give back.
    with _local_turn(_local(name, slots), name, timeout_s):
        with ExitStack() as turn:
            if shared_server():
                _server_turn(turn, name, slots, timeout_s)
            setattr(_held, attr, 1)
            try:
                yield
            finally:
                setattr(_held, attr, 0)


def _server_turn(stack: ExitStack, name: str, slots: int, timeout_s: float | None) -> None:
    """Hold one of the server's slots of `name` for the rest of `stack`.

    A slot whose holder died is given back only when the server reaps its lease, and servers
    without the repossessor service (the ephemeral and test servers) never do: one such slot
    would stall every later run for good. So the writer waits STALE_SLOT_S at most, then goes on
    under DuckDB's own file lock (which `tasks.workspace.database.connect` waits for), saying so in the log.
    """
    from prefect.concurrency.sync import concurrency

    ensure_limit(name, slots)
    stale_after = STALE_SLOT_S if name == DUCKDB_WRITER else None
    wait = min(t for t in (timeout_s, stale_after) if t is not None) if (timeout_s or stale_after) else None
    try:
        stack.enter_context(concurrency(name, occupy=1, timeout_seconds=wait, lease_duration=LEASE_S, strict=False))
    except TimeoutError:
        if stale_after is None or (timeout_s is not None and timeout_s <= stale_after):
            raise
        log.warning("no %s slot was given back in %.0f s (a holder that died without its lease being reaped?): "
                    "writing under DuckDB's file lock alone", name, stale_after)


@contextmanager
def _local_turn(semaphore: threading.BoundedSemaphore, name: str, timeout_s: float | None) -> Iterator[None]:
    if not semaphore.acquire(timeout=timeout_s if timeout_s is not None else -1):
        raise TimeoutError(f"waited {timeout_s:.0f} s for {name} in this process")
    try:
        yield
    finally:
        semaphore.release()


def duckdb_writer():
    """The writer slot inside a flow or task run; nothing outside one."""
    if "prefect" not in sys.modules:  # plain functions, tests and read-only commands never load Prefect
        return nullcontext()
    return _slot(DUCKDB_WRITER, 1, WRITER_WAIT_S) if in_flow_run() else nullcontext()


def gpu(device) -> object:
    """A GPU slot for CUDA work inside a flow run; nothing on CPU or outside a run."""
    if getattr(device, "type", str(device)) != "cuda" or not in_flow_run():
        return nullcontext()
    import torch

    return _slot(GPU, max(1, torch.cuda.device_count()), None)
