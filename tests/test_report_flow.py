"""The report flow end to end on a tiny real workspace, the CLI subcommand, and the explorer at 100k points."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import headless_chromium
import pytest
from quick_ingest import labelled_tiny_model
from report_samples import HOSTILE, HOSTILE_WAV
from signals import click_train, noise, tone, write

from schemas.settings import EmbedSettings, ReportSettings
from tasks.workspace import Workspace

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """8 recordings (one named like markup), labelled tone/clicks, a 2-layer model trained 2 steps, embedded."""
    root = tmp_path_factory.mktemp("report-flow")
    rows = []
    for i in range(8):
        kind = "tone" if i % 2 == 0 else "clicks"
        x = tone(500 + 60 * i, 4.0, 16000, 0.3) if kind == "tone" else click_train(4.0, 16000, 0.05, 0.5)
        name = HOSTILE_WAV if i == 3 else f"r{i}.wav"
        write(root / "rec" / name, x + noise(4.0, 16000, 0.01, seed=i), 16000, "PCM_16")
        rows.append([name, HOSTILE if i == 5 else kind])
    ws = labelled_tiny_model(root, ["file", "species"], rows, "rp")
    from flows.embed import embed

    embed(EmbedSettings(workspace=str(ws.root), units_k=4, kmeans_sample_frames=300))
    return root, ws


def small(ws: Workspace, **extra) -> ReportSettings:
    return ReportSettings(workspace=str(ws.root), media_points=6, atlas_units=3, exemplars=2, neighbours=3,
                          umap_neighbors=5, features_budget=0, **extra)  # no time-budgeted maximisers: the
    # same settings give the same file set (tests/test_report_features.py and test_report_figures.py draw them)


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_report_flow_writes_pages_artifacts_and_reruns_safely(embedded, tmp_path, capsys):
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.report import report

    root, ws = embedded
    result = report(small(ws))
    out = ws.reports_dir / "rp-1"
    assert result.model_id == "rp@1" and Path(result.out_dir) == out
    assert Path(result.report) == out / "index.html" and Path(result.explorer) == out / "explorer.html"
    for name in ("index.html", "explorer.html", "explorer-data.js", "assets/report.css", "assets/explorer.js",
                 "assets/explorer.css"):
        assert (out / name).is_file(), name
    assert result.figures > 0 and result.segments == 16  # 8 recordings x two 2-s segments
    assert result.clips == len(list((out / "media").rglob("*.wav"))) >= 16  # the explorer plays every segment

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(result.flow_run_id))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(result.flow_run_id)])))
    assert flow_run.name.startswith("report-latest-")  # no --model given: named before the model is resolved
    by_key = {a.key: a for a in artifacts if a.key}
    assert by_key["report"].type == "markdown"
    markdown = by_key["report"].data
    # browsers block file:// links from the UI's http page; entities would be shown as typed
    assert "file://" not in markdown and "&#x27;" not in markdown and "&amp;" not in markdown and "<img" not in markdown
    assert "rp\\-1" in markdown and "\\-\\-serve" in markdown  # the folder and how to serve it, markdown-escaped
    assert result.unit_pages > 0 and "page(s)" in markdown

    # --serve's server: the folder over http on localhost, the unit pages and their clips included
    import threading
    import urllib.request

    from flows.report import serve_folder

    server = serve_folder(out)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        with urllib.request.urlopen(base + "index.html") as response:
            page = response.read().decode()
        assert response.status == 200 and 'id="verdict"' in page
        unit_page = next(iter(sorted((out / "units").glob("*.html")))).name
        with urllib.request.urlopen(base + "units/" + unit_page) as response:
            assert response.status == 200 and "<audio" in response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert by_key["report-sections"].type == "table"
    assert any(a.type == "progress" and a.data == 100.0 for a in artifacts)

    # re-run through the CLI with the same settings: same folder, same files, nothing piles up
    from flows.cli.commands import EXIT_OK, main

    # and copied to an fsspec URL (file:// here; s3:// in test_storage.py), stale objects there removed
    first = files_under(out)
    published = tmp_path / "published"
    (published / "figures").mkdir(parents=True)
    (published / "figures" / "stale.png").write_bytes(b"from an older report")
    assert main(["report", "--workspace", str(ws.root), "--media-points", "6", "--atlas-units", "3", "--exemplars", "2",
                 "--neighbours", "3", "--umap-neighbors", "5", "--features-budget", "0",
                 "--publish-to", published.as_uri()]) == EXIT_OK
    printed = capsys.readouterr().out
    assert result.report in printed and result.explorer in printed
    assert f"copied:   {published.as_uri()}/index.html" in printed
    assert files_under(out) == first
    assert files_under(published) == first  # the stale figure is gone
    assert (published / "index.html").read_bytes() == (out / "index.html").read_bytes()

    # the real report in a real browser: every figure loads, nothing errs, the markup-like names stay text
    driver = headless_chromium.start(tmp_path / "profile")
    try:
        driver.get(Path(result.report).as_uri())
        driver.execute_script("return document.readyState")
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return Array.from(document.images).every(i => i.complete)"))
        images = driver.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        assert images and all(width > 0 for _, width in images), images
        for href in driver.execute_script("return Array.from(document.querySelectorAll('a[href$=\".svg\"], audio[src]'))"
                                          ".map(e => e.href || e.src)"):
            assert Path(unquote(urlparse(href).path)).is_file(), href
        headless_chromium.screenshot(driver, tmp_path / "real-report.png", full_page=True)
        assert driver.execute_script("return window.__pwned") is None
        assert headless_chromium.severe(driver) == []

        driver.get(Path(result.explorer).as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return window.ceta2vecExplorer && window.ceta2vecExplorer.ready && window.ceta2vecExplorer.firstDrawMs"))
        assert driver.execute_script("return window.ceta2vecExplorer.drawnCount") == 16
        index = driver.execute_script(
            "var a = window.ceta2vecExplorer; for (var i = 0; i < a.n; i++) { a.select(i); "
            f"if (document.getElementById('details-body').textContent.indexOf({HOSTILE_WAV!r}) >= 0) return i; }} return -1")
        assert index >= 0, "the recording named like markup is not shown as text"
        # thumbnails are drawn on canvases: any <img> in the explorer could only come from the data
        assert driver.execute_script("return document.images.length") == 0 and driver.execute_script("return window.__pwned") is None
        headless_chromium.screenshot(driver, tmp_path / "real-explorer.png")
        assert headless_chromium.severe(driver) == []
    finally:
        driver.quit()


def test_cli_report_refuses_an_unknown_model(embedded, capsys):
    from flows.cli.commands import EXIT_USAGE, main

    root, ws = embedded
    assert main(["report", "--workspace", str(ws.root), "--model", "nope@9"]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert "nope@9" in error and "rp@1" in error  # names what is there


def test_report_folder_default_and_output(tmp_path):
    from flows.report import report_folder

    ws = Workspace.at(tmp_path / "ws")
    assert report_folder(ws, ReportSettings(workspace=str(ws.root)), "tiny@3") == ws.reports_dir / "tiny-3"
    assert report_folder(ws, ReportSettings(workspace=str(ws.root)), "../run a/b@3") == ws.reports_dir / "run-a-b-3"
    chosen = ReportSettings(workspace=str(ws.root), output=str(tmp_path / "my report"))
    assert report_folder(ws, chosen, "tiny@3") == tmp_path / "my report"


def test_explorer_draws_100k_points_in_chromium(tmp_path):
    """100,000 segments, two layers, 8 neighbours each: the page loads, draws every point and stays interactive."""
    from report_samples import explorer_data

    from tasks.report.content import ReportContent
    from tasks.report.explorer_page import write_explorer

    data = explorer_data(100_000, tmp_path, media=20, k=8)
    page = write_explorer(ReportContent("100k points", "synth@1", "now", [], {}, [], data), tmp_path)
    size_mb = os.path.getsize(tmp_path / "explorer-data.js") / 1e6
    driver = headless_chromium.start(tmp_path / "profile")
    try:
        driver.get(page.as_uri())
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 120, poll_frequency=0.2).until(lambda d: d.execute_script(
            "return window.ceta2vecExplorer && window.ceta2vecExplorer.firstDrawMs"))
        api = "window.ceta2vecExplorer"
        first, decode = driver.execute_script(f"return [{api}.firstDrawMs, {api}.decodeMs]")
        assert driver.execute_script(f"return [{api}.n, {api}.visibleCount, {api}.drawnCount]") == [100_000] * 3
        redraws = [driver.execute_script(f"return {api}.redraw()") for _ in range(5)]
        # hover hit-testing through the grid: the tooltip follows the pointer
        from selenium.webdriver.common.action_chains import ActionChains

        p = driver.execute_script(f"return {api}.screenPosition(0)")
        ActionChains(driver).move_to_element_with_offset(
            driver.find_element("id", "overlay"), round(p["x"] - p["canvasLeft"] - p["width"] / 2),
            round(p["y"] - p["canvasTop"] - p["height"] / 2)).perform()
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(f"return {api}.hovered === 0"))
        driver.execute_script(f"{api}.setLayer(1)")
        assert driver.execute_script(f"return [{api}.layer, {api}.drawnCount]") == [1, 100_000]
        headless_chromium.screenshot(driver, tmp_path / "explorer-100k.png")
        assert headless_chromium.severe(driver) == []
        print(f"\n100k explorer: data {size_mb:.1f} MB, first draw {first:.0f} ms after navigation start "
              f"(decode {decode:.0f} ms), full redraw {min(redraws):.0f}-{max(redraws):.0f} ms")
    finally:
        driver.quit()
