"""Where a flow's parallel tasks run: threads of the flow's own process (the default), a local
process pool, or a Dask cluster (a LocalCluster started for the run, or a running scheduler).

The runner is chosen per run from the flow's settings, so the same deployed flow can fan out to
threads one day and to a cluster the next. Whatever runs the tasks, the flow's process stays the
one DuckDB writer: tasks get paths and ids, write staged files, and return small picklable
descriptions that the flow commits.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner
from prefect.tasks import Task

from schemas.settings import TaskRunnerChoice


class TaskRunnerError(RuntimeError):
    """A cluster that cannot run this flow's tasks; the message says why and what to do."""


def _threads_per_process(processes: int) -> int:
    return max(1, (os.cpu_count() or 1) // processes)


def _prepare_worker(api_url: str, threads: int) -> None:
    """Runs first in each pool process: report task runs to the flow's own Prefect server (the
    default, an ephemeral server, is invisible to other processes, which would start servers of
    their own), and share the cores instead of every process's torch/BLAS taking all of them."""
    os.environ["PREFECT_API_URL"] = api_url
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))


def _worker_api_url() -> str | None:
    return os.environ.get("PREFECT_API_URL")


def _api_url() -> str:
    context = FlowRunContext.get()
    if context is None:
        raise RuntimeError("task runners are started inside a flow run")
    return str(context.client.api_url)


def _dask_runner(address: str | None, workers: int, api_url: str) -> TaskRunner:
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    # the LocalCluster's routine start/stop messages would drown the flow's own log
    logging.getLogger("distributed").setLevel(logging.WARNING)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
        "n_workers": workers, "processes": True, "threads_per_worker": 1, "dashboard_address": None,
        "env": {"PREFECT_API_URL": api_url},
    })


def _check_dask_workers(runner: TaskRunner, address: str, api_url: str) -> int:
    """Worker threads of a running cluster, after checking its workers report to this flow's server."""
    client = runner.client  # type: ignore[attr-defined]
    threads = sum(client.nthreads().values())
    if not threads:
        raise TaskRunnerError(f"the Dask scheduler at {address} has no workers: start some with `dask worker {address}`")
    seen = set(client.run(_worker_api_url).values())
    if seen != {api_url} and seen != {api_url.rstrip("/")}:
        raise TaskRunnerError(
            f"the Dask workers at {address} report task runs to PREFECT_API_URL={sorted(map(str, seen))}, but this flow "
            f"runs on {api_url}: start the workers with PREFECT_API_URL={api_url} (a `prefect server start` server, "
            "not the ephemeral one)"
        )
    return threads


@contextmanager
def _environment_kept() -> Iterator[None]:
    """Give this process its environment back when the block ends. Dask's nanny writes its
    pre-spawn variables (OMP_NUM_THREADS=1, MKL_NUM_THREADS=1, ...) into the *parent's* os.environ,
    so without this every later subprocess of the run (torchrun's trainers, a CLI) would train on
    one thread, and float results would drift from a run that never started a cluster."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        os.environ.update(saved)


class FanOut:
    """Submits tasks to the runner a run's settings ask for, started at the first task (a run with
    nothing to do starts no cluster) and stopped when the `fan_out` block ends."""

    def __init__(self, choice: TaskRunnerChoice, workers: int, dask_address: str | None, dask_workers: int,
                 log: logging.Logger | logging.LoggerAdapter | None, stack: ExitStack):
        if choice not in ("threads", "processes", "dask"):
            raise ValueError(f"unknown task runner {choice!r}: threads, processes or dask")
        self.choice, self.workers, self.dask_address, self.dask_workers = choice, workers, dask_address, dask_workers
        self.log, self._stack = log, stack
        self._runner: TaskRunner | None = None
        self._slots = workers

    def _start(self) -> None:
        if self.choice == "threads" or self._runner is not None:
            return
        api_url = _api_url()
        started = time.monotonic()
        if self.choice == "processes":
            runner: TaskRunner = ProcessPoolTaskRunner(
                max_workers=self.workers, initializer=_prepare_worker,
                initargs=(api_url, _threads_per_process(self.workers)))
            where = f"a pool of {self.workers} process(es)"
        else:
            runner = _dask_runner(self.dask_address, self.dask_workers, api_url)
            self._stack.enter_context(_environment_kept())
        self._stack.enter_context(runner)
        self._runner = runner
        if self.choice == "dask" and self.dask_address:
            self._slots = _check_dask_workers(runner, self.dask_address, api_url)
            where = f"the Dask cluster at {self.dask_address} ({self._slots} worker thread(s))"
        elif self.choice == "dask":
            runner.client  # type: ignore[attr-defined]  # start the cluster now, to time it
            self._slots = self.dask_workers
            where = f"a Dask LocalCluster of {self.dask_workers} worker process(es)"
        if self.log:
            self.log.info("tasks run on %s (ready in %.1f s)", where, time.monotonic() - started)

    @property
    def slots(self) -> int:
        """Tasks worth keeping in flight: every worker busy, no more held in memory."""
        self._start()
        return self._slots

    def submit(self, task: Task, **parameters: Any) -> PrefectFuture:
        if self.choice == "threads":
            return task.submit(**parameters)  # the flow's own thread pool
        self._start()
        return self._runner.submit(task, parameters)  # type: ignore[union-attr]

    def windowed(self, submit: Callable[[Any], PrefectFuture], items: list,
                 stop: Callable[[], bool] = lambda: False) -> Iterator[tuple[Any, Any]]:
        """(item, result of `submit(item)`) as each finishes, never more than `slots` in flight:
        every worker busy, memory bounded, and a stop (--strict) takes effect at once."""
        pending, in_flight = list(items), {}
        while (pending and not stop()) or in_flight:
            while pending and not stop() and len(in_flight) < self.slots:
                item = pending.pop(0)
                in_flight[submit(item)] = item
            finished = next(as_completed(list(in_flight)))
            yield in_flight.pop(finished), finished.result()


@contextmanager
def fan_out(choice: TaskRunnerChoice, workers: int, dask_address: str | None = None, dask_workers: int = 2,
            log: logging.Logger | logging.LoggerAdapter | None = None) -> Iterator[FanOut]:
    """The runner `choice` asks for, for the length of the block.

    threads: `workers` tasks at a time on the flow's own thread pool (no start-up cost).
    processes: a pool of `workers` processes on this machine.
    dask: a new LocalCluster of `dask_workers` processes (one thread each), or the running
    scheduler at `dask_address`, as many tasks in flight as its workers have threads.
    """
    with ExitStack() as stack:
        yield FanOut(choice, workers, dask_address, dask_workers, log, stack)
