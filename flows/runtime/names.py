"""Flow run names that say what ran: `ingest-LK-2025-07-01`, `pretrain-tiny-2025-07-01`."""

from __future__ import annotations

from collections.abc import Callable

from prefect.runtime import flow_run


def named_by(flow: str, fields: tuple[str, ...], fallback: str) -> Callable[[], str]:
    """A flow_run_name callable: the flow, the first settings field that is set (or `fallback`), and the day."""

    def name() -> str:
        settings = flow_run.parameters.get("settings") or {}
        if hasattr(settings, "model_dump"):
            settings = settings.model_dump()
        label = next((settings[f] for f in fields if settings.get(f)), fallback)
        return f"{flow}-{label}-{flow_run.scheduled_start_time.strftime('%Y-%m-%d')}"

    return name
