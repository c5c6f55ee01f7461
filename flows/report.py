"""Report flow: see what the network learned.

    model → maps, unit atlas, exemplars (figures, thumbnails, clips) → index.html + explorer.html → artifacts

The folder it writes opens from disk (file://) with no server and no network: every link is relative.
"""

from __future__ import annotations

import re
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.runtime import policies as policy
from flows.runtime.names import named_by
from flows.runtime.progress import Progress
from schemas.results import ReportResult
from schemas.settings import ReportSettings
from tasks.catalog.embeddings import EmbeddingModel, resolve_model
from tasks.report.content import ReportContent
from tasks.report.explorer_page import write_explorer
from tasks.report.freshness import report_folder, serve_folder  # noqa: F401 - this module's names too
from tasks.report.html import write_report
from tasks.workspace import Workspace, database

PROGRESS_EVERY_S = 1.0


@task(name="build-report-content", task_run_name="figures and media of {settings.model}", cache_policy=NO_CACHE)
def build_content(settings: ReportSettings, out_dir: str, model: EmbeddingModel) -> ReportContent:
    from tasks.report.build import build_report_content

    log = get_run_logger()
    last_step = [None]
    with Progress(100, "%", "report", f"report of {settings.model}: figures and media",
                  every_s=PROGRESS_EVERY_S) as shown:
        def progress(step: str, fraction: float) -> None:
            fraction = min(1.0, max(0.0, fraction))
            shown.set(100 * fraction)
            if step != last_step[0]:
                log.info("%s (%.0f%%)", step, 100 * fraction)
                last_step[0] = step

        return build_report_content(Workspace.at(settings.workspace), settings, Path(out_dir), progress, model)


@task(name="write-report-pages", task_run_name="write index.html and explorer.html", cache_policy=NO_CACHE)
def write_pages(content: ReportContent, out_dir: str) -> tuple[str, str]:
    return str(write_report(content, Path(out_dir))), str(write_explorer(content, Path(out_dir)))


@task(name="publish-report", task_run_name="copy the report to {url}", cache_policy=NO_CACHE,
      retries=policy.IO_RETRIES, retry_delay_seconds=policy.IO_RETRY_DELAYS, retry_condition_fn=policy.retry_transient)
def publish(out_dir: str, url: str) -> int:
    from tasks.workspace.storage import publish_folder

    return len(publish_folder(Path(out_dir), url))


MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~&])")


def _md(value: object) -> str:
    """Text for markdown: every markdown and HTML character backslash-escaped, so the renderer shows it as
    typed (no markup from the data, no broken table rows) without HTML entities it would print as
    `&#x27;`."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", str(value)).replace("\n", " ")


def summary_markdown(content: ReportContent, index_html: Path, explorer_html: Path, published: str | None = None) -> str:
    """The `report` artifact. Browsers block file:// links from an http page such as the Prefect UI, so
    the pages are named by path, with the command that serves them over http."""
    explorer = content.explorer
    verdict = getattr(content, "verdict", None)
    folder = index_html.parent
    lines = [f"# {_md(content.title)}", "",
             *([f"**{_md(verdict.headline.replace('`', ''))}**", ""] if verdict is not None else []),
             f"Model {_md(content.model_id)}, generated {_md(content.generated_at)}.", "",
             f"- **Report folder**: {_md(folder)}",
             f"- **Pages**: {_md(index_html.name)} (report), {_md(explorer_html.name)} (explorer)"
             + (f", {len(explorer.segment_id):,} segments on layers {', '.join(map(str, sorted(explorer.coords)))}"
                if explorer is not None else ""),
             *([f"- **Copied to**: {_md(published)}/index.html"] if published else []),
             "", "Open index.html from that folder in a browser on this machine (it needs no network), or serve "
                 f"the folder over http: ceta2vec report \\-\\-model {_md(content.model_id)} \\-\\-serve", "",
             "| item | value |", "| --- | --- |"]
    lines += [f"| {_md(row.get('item'))} | {_md(row.get('value'))} |" for row in content.summary]
    lines += ["", "## Sections", ""]
    lines += [f"- **{_md(s.title)}**: {len(s.figures)} figure(s), {len(s.links)} page(s)" for s in content.sections]
    return "\n".join(lines) + "\n"


@flow(name="report", flow_run_name=named_by("report", ("model",), "latest"))
def report(settings: ReportSettings) -> ReportResult:
    """Figures, a self-contained HTML report and an interactive explorer of a model's embeddings and units."""
    log = get_run_logger()
    ws = Workspace.at(settings.workspace)
    if not ws.exists():
        raise database.WorkspaceError(f"no workspace at {ws.root}: run `ceta2vec ingest` first")
    with database.reading(ws) as conn:
        model = resolve_model(conn, settings.model)  # resolved once: the folder, the content and the result agree
    model_id = model.model_id
    settings = settings.model_copy(update={"model": model.ref})  # the folder and its content name the same model
    out_dir = report_folder(ws, settings, model_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("report of %s into %s", model_id, out_dir)

    content = build_content(settings, str(out_dir), model)
    index_html, explorer_html = map(Path, write_pages(content, str(out_dir)))
    figures = sum(len(s.figures) for s in content.sections)
    clips = sum(1 for _ in (out_dir / "media").rglob("*.wav"))  # every clip a page plays: explorer, units, maximisers
    pages = sum(len(s.links) for s in content.sections)
    segments = len(content.explorer.segment_id) if content.explorer is not None else 0

    published = None
    if settings.publish_to:
        published = settings.publish_to.rstrip("/")
        log.info("report copied to %s (%d files)", published, publish(str(out_dir), published))
    create_markdown_artifact(key="report", markdown=summary_markdown(content, index_html, explorer_html, published),
                             description=f"Report of {model_id}: {index_html}")
    create_table_artifact(
        key="report-sections",
        table=[{"section": s.title, "figures": len(s.figures), "pages": len(s.links), "tables": len(s.tables)}
               for s in content.sections],
        description=f"What the report of {model_id} holds ({index_html})",
    )
    log.info("report: %s (%d figures, %d clips); explorer: %s (%d segments)", index_html.as_uri(), figures, clips,
             explorer_html.as_uri(), segments)
    return ReportResult(report=str(index_html), explorer=str(explorer_html), out_dir=str(out_dir), model_id=model_id,
                        figures=figures, clips=clips, unit_pages=pages, segments=segments,
                        sections=[s.title for s in content.sections], flow_run_id=str(flow_run.id), published=published)
