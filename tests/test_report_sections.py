"""A report is one gathering step and pure section builders: once `gather` has read a workspace, every
section is drawn without it, and a new section is one builder listed beside the others.

Real tiny workspace (tests/quick_ingest.py), real DuckDB file, real checkpoint."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from schemas.settings import ReportSettings
from tasks.report.content import ReportSection
from tasks.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
SECTION_MODULES = ("tasks/report/sections.py", "tasks/report/sections_units.py")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, including inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_section_modules_import_no_database_or_catalog():
    for module in SECTION_MODULES:
        reads = sorted(m for m in imported_modules(ROOT / module)
                       if m.startswith(("tasks.catalog", "tasks.workspace", "duckdb")))
        assert not reads, f"{module} imports {reads}: sections draw from ReportInputs, gather reads"


def test_sections_draw_from_the_gathered_inputs_with_the_database_gone(tiny_workspace, tmp_path):
    from tasks.report.drawing import Drawing, FigureWriter
    from tasks.report.features_report import FeatureRun
    from tasks.report.inputs import gather
    from tasks.report.sections import SECTIONS, draw_sections

    ws = Workspace.at(shutil.copytree(tiny_workspace.root, tmp_path / "ws"))
    settings = ReportSettings(workspace=str(ws.root), media_points=0, frame_points=0, atlas_units=2, exemplars=1,
                              neighbours=2, umap_neighbors=4, features_budget=0)
    inputs = gather(ws, settings)
    # the tables and the segments go: a section that reads the workspace now fails
    ws.db_path.rename(tmp_path / "moved.duckdb")
    shutil.rmtree(ws.segments_dir)

    def extra(inputs, drawing) -> ReportSection:
        return ReportSection("extra", "An added section", f"{len(inputs.scope.ids)} segments shown.")

    out = tmp_path / "report"
    drawing = Drawing(out, FigureWriter(out), FeatureRun(inputs.workspace_root, inputs.export_dir, 0.0, 0, out,
                                                         inputs.mel, len(inputs.atlas_inventories)), None,
                      lambda message, fraction: None)
    sections = draw_sections(inputs, drawing, SECTIONS + (extra,))
    keys = [s.key for s in sections]
    assert keys == ["maps", "units", "features", "timeline", "training", "neighbours", "sequences", "labels", "extra"]
    assert sections[-1].intro == "12 segments shown."
    figures = [f for s in sections for f in s.figures]
    assert {"umap-layers", "unit-timeline", "training-curves", "neighbour-gallery", "unit-sequences"} <= \
        {f.key for f in figures}
    assert all((out / f.png).is_file() for f in figures)
