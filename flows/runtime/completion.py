"""The event a flow run sends once it has completed with new data: it starts the deployments that
follow it (deployments/definitions.py): a served ingest or pretraining run's starts the refresh, an
embed run's the scoring of new windows (classify-new).

Why not Prefect's own `prefect.flow-run.Completed` event: the server's trigger service handles a
run's state events in the order they declare (each names the event it follows), and it holds an
event until the one it follows has arrived. The scheduler inserts its runs without sending their
`Scheduled` event, yet the run's `Pending` event declares that it follows it, so every event of a
scheduled run, `Completed` included, waits out the server's 15-minute lookback before any
automation sees it: a served watch folder's ingest never started a refresh in time. This event
follows nothing, so the automation sees it as soon as it arrives.

The event's resource is the flow run; its related resources are the flow (role `flow`, its name)
and the run's tags (role `tag`), which is what the triggers match on.
"""

from __future__ import annotations

import logging

from schemas.results import EmbedResult, IngestResult, PretrainResult

COMPLETED_WITH_NEW_DATA = "ceta2vec.flow-run.completed-with-new-data"

log = logging.getLogger(__name__)


def brings_new_data(result) -> bool:
    """Whether a completed run's result changed what the runs after it work on (anything not known: yes)."""
    if isinstance(result, IngestResult):
        return bool(result.ingested or result.segments_added)
    if isinstance(result, PretrainResult):
        return bool(result.chunks_trained)
    if isinstance(result, EmbedResult):
        return bool(result.segments_embedded)
    return True


def completion_event(flow_name: str, flow_run) -> dict:
    """The event's name, resource and related resources for `flow_run` of the flow named `flow_name`."""
    related = [{"prefect.resource.id": f"prefect.flow.{flow_run.flow_id}", "prefect.resource.role": "flow",
                "prefect.resource.name": flow_name}]
    related += [{"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"}
                for tag in sorted(set(flow_run.tags or ()))]
    return {"event": COMPLETED_WITH_NEW_DATA, "related": related,
            "resource": {"prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                         "prefect.resource.name": flow_run.name or ""}}


def announce_completion(flow, flow_run, state) -> None:
    """on_completion hook: runs after the server accepted the Completed state."""
    from prefect.events import emit_event

    try:
        result = state.result(raise_on_failure=False)
    except Exception:  # a result that cannot be read back: announce anyway, the runs after it check for themselves
        result = None
    if not brings_new_data(result):
        log.info("nothing new: no run follows this one")
        return
    emit_event(**completion_event(flow.name, flow_run))
