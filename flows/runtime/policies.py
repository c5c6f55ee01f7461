"""Retries, timeouts and cache keys of the flows' tasks, decided in one place.

Retries: only where running the task again is safe (it reads, or writes staged files under fresh
names, or its DuckDB writes are idempotent upserts) and only for failures a wait can cure
(`tasks.workspace.transient_errors.is_transient`): a bad file, a diverged model or a bug fails at once.

Timeouts: generous bounds on the tasks that run in the flow's own thread and could hang (discover,
prepare-run, train-chunk, kmeans-units, the scorecards). In the main thread Prefect enforces them
with SIGALRM, which also interrupts a blocking read; the attempt fails and I/O tasks retry it.
Tasks submitted to a thread pool (fingerprint, ingest-files, embed-batch) get none: Prefect can
interrupt a worker thread only between Python instructions, never a stalled read, and warns on
every such task run.

Caching: only pure computations whose result stands on its own (no staged file that a later run
deletes, no DuckDB write), keyed on the content they read (`tasks.workspace.content_keys`): the scorecard
tasks of `evaluate`. Results are persisted in Prefect's local result storage
($PREFECT_HOME/storage); a hit skips the computation.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from functools import lru_cache

from prefect.context import TaskRunContext

from tasks.catalog import embeddings
from tasks.workspace import Workspace, content_keys, database
from tasks.workspace.transient_errors import is_transient

# Reading files and folders: a network mount may stall for a moment.
IO_RETRIES = 2
IO_RETRY_DELAYS = [5, 30]
# DuckDB: an attempt has already waited for the file lock before failing (as long as its holder
# lived, up to an hour; 60 s for a holder it cannot see; CETA2VEC_LOCK_WAIT_S where set).
DB_RETRIES = 2
DB_RETRY_DELAYS = [10, 60]

DISCOVER_TIMEOUT_S = 3600  # walking a very large tree on a network mount
# k-means and scorecards read every frame / vector of a layer once: hours only on huge workspaces.
LONG_READ_TIMEOUT_S = 12 * 3600
PREPARE_RUN_TIMEOUT_S = 3600  # builds the training index from the segments' metadata
# A training chunk: allow 2 s of compute per audio-second trained (measured on 2 CPU cores: tiny
# 0.027, small 0.16), plus an hour for loading, checkpointing and a slow start.
CHUNK_SECONDS_PER_AUDIO_SECOND = 2.0
CHUNK_BASE_TIMEOUT_S = 3600

CACHE_EXPIRATION = timedelta(days=90)


def _exception(state) -> BaseException | None:
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # the result could not be read back: judge by that error
        return exc
    return result if isinstance(result, BaseException) else None


def retry_transient(task, task_run, state) -> bool:
    """retry_condition_fn: storage and lock hiccups, timeouts included."""
    return is_transient(_exception(state))


def retry_transient_not_timeouts(task, task_run, state) -> bool:
    """retry_condition_fn for training: a chunk that ran out of time would run out again."""
    return is_transient(_exception(state), timeouts=False)


def chunk_timeout_s(steps: int, grad_accum: int, batch_size: int, crop_seconds: float) -> float:
    audio_seconds = steps * grad_accum * batch_size * crop_seconds
    return CHUNK_BASE_TIMEOUT_S + CHUNK_SECONDS_PER_AUDIO_SECOND * audio_seconds


@lru_cache(maxsize=8)
def _scoring_code(task_module: str) -> str:
    """The scoring task's own module (a flow) and the task code it calls: changing either is a new key."""
    import tasks.embedding.encode
    import tasks.evaluation.baselines
    import tasks.evaluation.metrics
    import tasks.evaluation.run

    return content_keys.source_digest([sys.modules[task_module], tasks.evaluation.run, tasks.evaluation.metrics,
                                       tasks.evaluation.baselines, tasks.embedding.encode])


def _labelled(parameters: dict) -> str:
    labelled = parameters["labelled"]
    return content_keys.labelled_digest(labelled.segment_ids, labelled.labels, labelled.recordings)


def _key(context: TaskRunContext, parameters: dict, read) -> str | None:
    """Common part: the task, the scoring code, the labelled set, seed and bootstrap count; `read`
    adds what the task reads from the workspace. None (no caching) when that cannot be read."""
    with database.reading(Workspace.at(parameters["ws_root"])) as conn:
        content = read(conn, parameters)
    if content is None:
        return None
    return content_keys.digest(context.task.name, _scoring_code(context.task.fn.__module__), _labelled(parameters), parameters.get("layer"),
                               parameters.get("seed"), parameters.get("n_boot"), content)


def layer_scores_key(context: TaskRunContext, parameters: dict) -> str | None:
    """The stored vectors of the labelled segments (checkpoint hash + when each was written)."""
    return _key(context, parameters, lambda conn, p: content_keys.embeddings_digest(
        conn, p["model_id"], p["labelled"].segment_ids))


def unit_scores_key(context: TaskRunContext, parameters: dict) -> str | None:
    """The stored vectors (their codevector units follow from them) and the k-means fits."""
    def read(conn, p):
        vectors = content_keys.embeddings_digest(conn, p["model_id"], p["labelled"].segment_ids)
        return vectors and content_keys.digest(vectors, content_keys.units_digest(conn, p["model_id"]))

    return _key(context, parameters, read)


def baseline_scores_key(context: TaskRunContext, parameters: dict) -> str | None:
    """The labelled segments' audio (segment ids derive from the recordings' content hashes, cut
    with the dataset settings) and the checkpoint's architecture (random-weight baseline)."""
    def read(conn, p):
        export = embeddings.export_sha256(conn, p["model_id"])
        return export and content_keys.digest(content_keys.dataset_digest(conn), export)

    return _key(context, parameters, read)


def attempts_left() -> bool:
    """Inside a task: whether Prefect runs it again should this attempt fail (a task that turns
    per-file errors into outcomes raises a transient one only then, and records it on the last)."""
    context = TaskRunContext.get()
    return context is not None and context.task_run.run_count <= (context.task.retries or 0)
