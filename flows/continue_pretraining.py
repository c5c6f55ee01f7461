"""Continue-pretraining flow: a few more chunks of an existing run, e.g. every night.

`pretrain` takes the total number of chunks a run should have; a schedule wants "K more than
now" instead, so this flow reads how far the run got and asks `pretrain` for that many more.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.pretrain import pretrain
from flows.runtime.names import named_by
from schemas.results import PretrainResult
from schemas.settings import PretrainSettings
from tasks.catalog.runs import chunks_done
from tasks.workspace import Workspace, database


@flow(name="continue-pretraining", flow_run_name=named_by("continue-pretraining", ("run", "preset"), "tiny"))
def continue_pretraining(settings: PretrainSettings, more_chunks: int = 1) -> PretrainResult:
    """Train `more_chunks` more chunks of the run named in the settings (its `chunks` field is replaced)."""
    if more_chunks < 1:
        raise ValueError(f"more_chunks must be at least 1, got {more_chunks}")
    ws = Workspace.at(settings.workspace)
    with database.writing(ws) as conn:
        database.apply_schema(conn, ws)
        done = chunks_done(conn, settings.run_name)
    get_run_logger().info("run %s has %d chunk(s); training chunks %d to %d", settings.run_name, done, done + 1,
                          done + more_chunks)
    # `chunks` is a setting a run may change, so the stored run's other settings still apply.
    return pretrain(settings.model_copy(update={"chunks": done + more_chunks}))
