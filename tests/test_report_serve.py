"""`report --serve` serves a folder that already shows the current inputs without drawing it again;
`--rebuild` redraws it. Real report flow, real DuckDB workspace (a copy of the session's tiny one)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from schemas.settings import ReportSettings
from tasks.workspace import Workspace

pytestmark = [pytest.mark.usefixtures("prefect_server")]


def mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_serve_path_draws_once_serves_an_unchanged_report_as_is_and_rebuild_redraws(tiny_workspace, tmp_path):
    from flows.cli.commands import _serves_current_report, build_parser
    from flows.report import report
    from tasks.report.freshness import current_pages, plan_report, up_to_date_or_drawn

    ws = shutil.copytree(tiny_workspace.root, tmp_path / "ws")
    workspace = Workspace.at(ws)
    out = tmp_path / "report"
    settings = ReportSettings(workspace=str(ws), output=str(out), media_points=4, atlas_units=2, exemplars=1,
                              neighbours=2, umap_neighbors=4, features_budget=0)
    draws = []

    def draw(s: ReportSettings):
        draws.append(s.model)
        return report(s)

    def serve_args(*extra: str):
        return build_parser().parse_args(["report", "--serve", "--workspace", str(ws), "--output", str(out),
                                          "--media-points", "4", "--atlas-units", "2", "--exemplars", "1",
                                          "--neighbours", "2", "--umap-neighbors", "4", "--features-budget", "0",
                                          *extra])

    assert current_pages(plan_report(workspace, settings)) is None and not _serves_current_report(serve_args())
    outcome, pages = up_to_date_or_drawn(workspace, settings, draw)
    assert outcome == "drawn" and draws == ["rep@1"]  # drawn for the resolved model
    assert pages == {"report": str(out / "index.html"), "explorer": str(out / "explorer.html")}
    drawn = mtimes(out)
    stamp = plan_report(workspace, settings).stamp
    assert stamp.parent == ws / "reports" and not stamp.is_relative_to(out)  # the folder holds the report only
    stamped = stamp.stat().st_mtime_ns

    # unchanged workspace: the deciding function says current, the CLI starts no flow, nothing is rewritten
    assert current_pages(plan_report(workspace, settings)) == pages
    assert _serves_current_report(serve_args()) and not _serves_current_report(serve_args("--rebuild"))
    assert up_to_date_or_drawn(workspace, settings, draw) == ("up to date", pages) and draws == ["rep@1"]
    assert mtimes(out) == drawn and stamp.stat().st_mtime_ns == stamped

    # a changed input (here a setting the drawing uses) makes it stale
    assert current_pages(plan_report(workspace, settings.model_copy(update={"neighbours": 3}))) is None

    # --rebuild draws again although nothing changed
    assert up_to_date_or_drawn(workspace, settings, draw, rebuild=True) == ("drawn", pages) and len(draws) == 2
    redrawn = mtimes(out)
    assert redrawn["index.html"] > drawn["index.html"] and plan_report(workspace, settings).stamp.stat().st_mtime_ns > stamped
    assert current_pages(plan_report(workspace, settings)) == pages
