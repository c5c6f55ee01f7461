"""Whether a report folder still shows what its inputs hold: served at once when it does.

A report is drawn from its inputs (tasks/catalog/status.py: report_inputs): the model's checkpoint,
segments, scorecards and units, the labels, and the report's settings. After a report is drawn,
the digest of those inputs is stamped beside it; while the inputs hash to the same digest
and the pages are still there, the folder is current and `report --serve` serves it without
drawing anything. Plain functions (no Prefect): the CLI decides before a Prefect server starts.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from schemas.settings import ReportSettings
from tasks.catalog.embeddings import resolve_model
from tasks.catalog.status import report_inputs
from tasks.workspace import Workspace, database

STAMP_PREFIX = ".report-inputs-"


def inputs_digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def stamp_report(stamp: Path, digest: str, pages: dict, inputs: dict) -> None:
    """Written after the report was drawn whole: a report killed half-way has no stamp and is redrawn."""
    stamp.parent.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_name(stamp.name + ".partial")
    tmp.write_text(json.dumps({"digest": digest, **pages, "inputs": inputs}, indent=2, default=str))
    tmp.replace(stamp)


def report_folder(ws: Workspace, settings: ReportSettings, model_id: str) -> Path:
    """--output, else <workspace>/reports/<model id with anything but letters, digits, . _ - as '-'>/."""
    if settings.output:
        return Path(settings.output).expanduser().resolve()
    return ws.report_dir(model_id)


@dataclass(frozen=True)
class ReportPlan:
    workspace: Workspace
    settings: ReportSettings  # with the model resolved: the folder, the inputs and the drawing agree
    out_dir: Path
    inputs: dict
    digest: str

    @property
    def stamp(self) -> Path:
        """<workspace>/reports/.report-inputs-<key of the folder>.json: outside the report folder, which
        is zipped, published and compared whole, and one per folder (--output gives others)."""
        key = hashlib.sha256(str(self.out_dir).encode()).hexdigest()[:16]
        return self.workspace.reports_dir / f"{STAMP_PREFIX}{key}.json"


def plan_report(ws: Workspace, settings: ReportSettings) -> ReportPlan:
    """The report `settings` ask for in `ws`: its model resolved once, its folder and its inputs' digest."""
    with database.reading(ws) as conn:
        model = resolve_model(conn, settings.model)
        resolved = settings.model_copy(update={"model": model.ref})
        inputs = report_inputs(conn, resolved)
    return ReportPlan(ws, resolved, report_folder(ws, resolved, model.model_id), inputs, inputs_digest(inputs))


def current_pages(plan: ReportPlan) -> dict | None:
    """{"report": index.html, "explorer": explorer.html} of a report drawn from these very inputs, else None.

    The pages are looked for in the folder itself, not at the paths the stamp recorded: a copied
    or moved folder must not answer with the original's pages."""
    try:
        record = json.loads(plan.stamp.read_text())
    except (OSError, ValueError):
        return None
    pages = {"report": str(plan.out_dir / "index.html"), "explorer": str(plan.out_dir / "explorer.html")}
    if record.get("digest") != plan.digest or not all(Path(page).is_file() for page in pages.values()):
        return None
    return pages


def stamp_drawn(plan: ReportPlan, report: str, explorer: str) -> dict:
    """Written after the report was drawn whole: one killed half-way has no stamp and is redrawn."""
    pages = {"report": report, "explorer": explorer}
    stamp_report(plan.stamp, plan.digest, pages, plan.inputs)
    return pages


def up_to_date_or_drawn(ws: Workspace, settings: ReportSettings, draw, rebuild: bool = False) -> tuple[str, dict]:
    """("up to date", pages) when the folder shows these inputs already (never with `rebuild`), else
    ("drawn", pages) after `draw(settings)` (the report flow) and a new stamp."""
    plan = plan_report(ws, settings)
    pages = None if rebuild else current_pages(plan)
    if pages:
        return "up to date", pages
    drawn = draw(plan.settings)
    return "drawn", stamp_drawn(plan, drawn.report, drawn.explorer)


def serve_folder(folder: Path, port: int = 0, host: str = "127.0.0.1"):
    """An http server for a report folder on localhost (port 0: any free port); the caller runs
    serve_forever() and reads the URL from server_address."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
            pass

    return ThreadingHTTPServer((host, port), functools.partial(Quiet, directory=str(folder)))
