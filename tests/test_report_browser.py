"""The report and the explorer in a real (headless) Chromium, opened from disk with file://.

Synthetic content with real PNG/SVG/WAV files; names shaped like markup must be shown as text, never run.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import headless_chromium
import pytest
from report_samples import HOSTILE, HOSTILE_WAV, report_content

from tasks.report.explorer_page import write_explorer
from tasks.report.html import write_report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    content = report_content(out, n=400)
    return out, content, write_report(content, out), write_explorer(content, out)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    browser = headless_chromium.start(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.quit()


def wait_for(driver, script: str, timeout: float = 20.0):
    """Poll a JS expression until it is truthy (a wait, not a timing assertion)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script("return " + script))


def local_file(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file", f"not a relative link to a file: {url}"
    return Path(unquote(parsed.path))


def not_pwned(driver) -> None:
    assert driver.execute_script("return window.__pwned") is None, "markup from the data ran"
    assert driver.execute_script("return document.querySelectorAll('img[src=\"x\"], img[onerror]').length") == 0


def test_report_page_shows_figures_clips_tables_and_escapes_names(driver, written, tmp_path):
    out, content, index, _ = written
    driver.get(index.as_uri())
    wait_for(driver, "document.readyState === 'complete'")
    headless_chromium.screenshot(driver, tmp_path / "report.png", full_page=True)

    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert len(images) == sum(len(s.figures) for s in content.sections) == 2  # no image smuggled in by the data
    for src, complete, width in images:
        assert complete and width > 0, f"figure did not load: {src}"
    # every link and media source is relative and points at a file in the report folder
    urls = driver.execute_script(
        "return Array.from(document.querySelectorAll('a[href], audio[src], link[href], img[src]'))"
        ".map(e => [e.getAttribute('href') || e.getAttribute('src'), e.href || e.src])")
    for raw, resolved in urls:
        if raw.startswith("#") or raw.startswith("data:"):
            continue
        assert "://" not in raw and not raw.startswith("/"), f"absolute link: {raw}"
        assert local_file(resolved).is_file(), f"broken link {raw} -> {resolved}"
        assert local_file(resolved).resolve().is_relative_to(out.resolve())
    assert sum(1 for raw, _ in urls if raw.endswith(".svg")) >= 2  # each figure links its SVG

    # the clips load (names with spaces, '#', quotes and angle brackets are percent-encoded correctly)
    wait_for(driver, "Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1 || a.error)")
    audio = driver.execute_script(
        "return Array.from(document.querySelectorAll('audio')).map(a => [a.src, a.readyState, a.error && a.error.code, a.duration])")
    assert len(audio) == 2
    for src, ready, error, duration in audio:
        assert error is None and ready >= 1 and duration > 0.3, f"clip did not load: {src}"
    assert any(unquote(src).endswith("media/" + HOSTILE_WAV) for src, *_ in audio)

    text = driver.find_element("tag name", "body").text
    assert HOSTILE_WAV in text and HOSTILE in text  # the file name and label as text
    assert "<b>Haro</b> & co" in text and "Unit atlas <layer 2>" in text
    assert "0.5123" in text and "10, 3, 3" in text  # tables: numbers rounded, lists joined
    tables = driver.execute_script("return document.querySelectorAll('table').length")
    assert tables >= 5  # summary, a section table, three configuration groups
    assert driver.find_element("css selector", "a[href='explorer.html']").is_displayed()
    not_pwned(driver)
    assert headless_chromium.severe(driver) == []


def click_point(driver, index: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    p = driver.execute_script(f"return window.ceta2vecExplorer.screenPosition({index})")
    overlay = driver.find_element("id", "overlay")
    dx, dy = round(p["x"] - p["canvasLeft"] - p["width"] / 2), round(p["y"] - p["canvasTop"] - p["height"] / 2)
    ActionChains(driver).move_to_element_with_offset(overlay, dx, dy).pause(0.3).click().perform()


def test_explorer_hover_click_listen_neighbours_filters(driver, written, tmp_path):
    out, content, _, explorer = written
    data = content.explorer
    driver.get(explorer.as_uri())
    wait_for(driver, "window.ceta2vecExplorer && window.ceta2vecExplorer.ready && window.ceta2vecExplorer.firstDrawMs")
    api = "window.ceta2vecExplorer"
    assert driver.execute_script(f"return {api}.error") is None
    assert driver.execute_script(f"return [{api}.n, {api}.visibleCount, {api}.drawnCount]") == [400, 400, 400]
    assert driver.execute_script(f"return {api}.layer") == data.main_layer == 2

    # hover: the tooltip shows the segment's spectrogram thumbnail, recording and label as text
    from selenium.webdriver.common.action_chains import ActionChains

    p = driver.execute_script(f"return {api}.screenPosition(0)")
    overlay = driver.find_element("id", "overlay")
    ActionChains(driver).move_to_element_with_offset(
        overlay, round(p["x"] - p["canvasLeft"] - p["width"] / 2), round(p["y"] - p["canvasTop"] - p["height"] / 2)).perform()
    wait_for(driver, f"{api}.hovered === 0 && !document.getElementById('tooltip').hidden")
    wait_for(driver, "document.querySelector('#tooltip canvas.spectrogram').dataset.drawn === 'ok'")  # thumbnail loaded
    tooltip = driver.find_element("id", "tooltip").text
    assert HOSTILE_WAV in tooltip and (data.label[0] or "unlabelled") in tooltip
    headless_chromium.screenshot(driver, tmp_path / "explorer-hover.png")

    # click: details panel with the recording, the clip set on the player (and loading), the neighbours
    click_point(driver, 0)
    wait_for(driver, f"{api}.selected === 0")
    details = driver.find_element("id", "details-body").text
    assert HOSTILE_WAV in details and "seg-000000" in details
    src = driver.execute_script("return document.getElementById('clip-player').src")
    assert unquote(src).endswith(data.audio[0]), src
    wait_for(driver, "document.getElementById('clip-player').readyState >= 1 || document.getElementById('clip-player').error")
    assert driver.execute_script("return document.getElementById('clip-player').error") is None
    wait_for(driver, "document.getElementById('details-thumb').dataset.drawn === 'ok'")
    neighbours = driver.find_elements("css selector", "#neighbours button.neighbour")
    expected = [int(j) for j in data.neighbours[2][0] if j >= 0]
    assert [int(b.get_attribute("data-index")) for b in neighbours] == expected
    headless_chromium.screenshot(driver, tmp_path / "explorer-selected.png")

    # a neighbour is clickable and becomes the selection
    target = expected[0]
    neighbours[0].click()
    wait_for(driver, f"{api}.selected === {target}")
    assert data.recording[target] in driver.find_element("id", "details-body").text

    # a segment without a clip says so
    no_clip = next(i for i in range(len(data.audio)) if not data.audio[i])
    driver.execute_script(f"{api}.select({no_clip})")
    assert driver.find_element("id", "clip-missing").is_displayed()
    assert "No audio clip" in driver.find_element("id", "clip-missing").text

    # filters hide points: a label unticked, then none, then all; the recording search
    orca = sum(1 for v in data.label if v == "orca")
    box = driver.find_element("xpath", "//fieldset[@id='label-filter']//label[span[text()='orca']]/input")
    box.click()
    assert driver.execute_script(f"return {api}.visibleCount") == 400 - orca
    assert driver.execute_script(f"return {api}.drawnCount") == 400 - orca
    driver.find_element("css selector", "#label-filter button[data-select='none']").click()
    assert driver.execute_script(f"return [{api}.visibleCount, {api}.drawnCount]") == [0, 0]
    driver.find_element("css selector", "#label-filter button[data-select='all']").click()
    assert driver.execute_script(f"return {api}.visibleCount") == 400
    driver.find_element("id", "search").send_keys("rec-001")
    assert driver.execute_script(f"return {api}.visibleCount") == sum(1 for r in data.recording if r == "rec-001.wav")
    driver.find_element("id", "search").clear()
    driver.execute_script("document.getElementById('search').dispatchEvent(new Event('input'))")
    site_box = driver.find_element("xpath", "//fieldset[@id='site-filter']//label[span[text()='<b>Haro</b> & co']]/input")
    site_box.click()
    assert driver.execute_script(f"return {api}.visibleCount") == 400 - sum(1 for s in data.site if s == "<b>Haro</b> & co")
    site_box.click()

    # the layer selector switches coordinates and neighbours
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "layer")).select_by_value("1")
    assert driver.execute_script(f"return {api}.layer") == 1
    driver.execute_script(f"{api}.select(0)")
    listed = [int(b.get_attribute("data-index")) for b in driver.find_elements("css selector", "#neighbours button.neighbour")]
    assert listed == [int(j) for j in data.neighbours[1][0] if j >= 0]
    assert "layer 1" in driver.find_element("id", "neighbours-title").text

    # colour by site / cluster redraws every visible point
    Select(driver.find_element("id", "colour-by")).select_by_value("cluster")
    assert driver.execute_script(f"return {api}.drawnCount") == 400
    Select(driver.find_element("id", "colour-by")).select_by_value("site")
    assert "<b>Haro</b> & co" in driver.find_element("id", "legend").text

    # the hostile label is a legend entry and a filter option, as text
    Select(driver.find_element("id", "colour-by")).select_by_value("label")
    assert HOSTILE in driver.find_element("id", "legend").text
    assert HOSTILE in driver.find_element("id", "label-filter").text
    assert driver.execute_script("return document.images.length") == 0  # thumbnails are drawn on canvases
    not_pwned(driver)
    headless_chromium.screenshot(driver, tmp_path / "explorer-final.png")
    assert headless_chromium.severe(driver) == []


def test_explorer_data_script_cannot_be_broken_out_of(tmp_path):
    """'</script>' and '<!--' in names stay inside the JSON string (as \\u003c escapes)."""
    from report_samples import explorer_data

    from tasks.report.content import ReportContent
    from tasks.report.explorer_page import data_script

    data = explorer_data(20, None, media=0)
    data.recording[1] = "</script><script>window.__pwned=1</script><!--.wav"
    content = ReportContent("t</script>", "m@1", "now", [], {}, [], data)
    script = data_script(content)
    assert "<" not in script and ">" not in script and "&" not in script.replace("&&", "")
    import json

    decoded = json.loads(script[len("window.CETA2VEC_DATA = "):].rstrip(";\n"))
    assert data.recording[1] in (decoded["recording"].get("dict") or decoded["recording"]["plain"])
    assert decoded["title"] == "t</script>"


def test_explorer_rejects_columns_of_different_lengths(tmp_path):
    from report_samples import explorer_data

    from tasks.report.content import ReportContent

    data = explorer_data(30, None, media=0)
    data.site = data.site[:-1]
    with pytest.raises(ValueError, match="column 'site' has 29 rows"):
        write_explorer(ReportContent("t", "m@1", "now", [], {}, [], data), tmp_path)


def test_report_source_escapes_text_and_encodes_paths(tmp_path):
    content = report_content(tmp_path, n=30)
    source = write_report(content, tmp_path).read_text()
    assert HOSTILE not in source and "<b>Haro</b>" not in source
    assert "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;.wav" in source
    assert 'src="figures/umap%20layers%20%231.png"' in source  # space and '#' encoded, '/' kept
    assert 'src="media/%3Cimg%20src%3Dx%20onerror%3D%22window.__pwned%3D1%22%3E.wav"' in source
    assert "http://" not in source and "https://" not in source  # nothing fetched from the network
    for asset in ("report.css", "explorer.css", "explorer.js"):
        assert (tmp_path / "assets" / asset).is_file()


def test_many_clips_start_folded_and_a_shared_caption_is_said_once(tmp_path):
    from tasks.report.content import AudioClip, ReportSection
    from tasks.report.html import FOLD_CLIPS, render_report

    content = report_content(tmp_path, n=10)
    content.sections.append(ReportSection("atlas", "Atlas", "", clips=[
        AudioClip(f"unit {i // 5}, exemplar {i % 5}: r{i}.wav", f"media/u{i}.wav", "1 s centred on the frame",
                  group=f"unit {i // 5}") for i in range(FOLD_CLIPS + 1)]))
    source = render_report(content)
    fold = source[source.index('<details class="clips-fold">'):]
    groups = (FOLD_CLIPS + 1 + 4) // 5
    assert f"{FOLD_CLIPS + 1} audio clips in {groups} groups" in fold
    assert fold.count('preload="none"') == FOLD_CLIPS + 1 and fold.count("<h4>") == groups
    assert fold.count("1 s centred on the frame") == 1
    assert "<h4>unit 1</h4>" in fold and ">exemplar 2: r7.wav</p>" in fold  # the heading says the unit once


def test_pages_without_explorer_data(driver, tmp_path):
    """A report whose content has no explorer data: no link to it; the explorer page says so without errors."""
    content = report_content(tmp_path, n=10)
    content.explorer = None
    index, explorer = write_report(content, tmp_path), write_explorer(content, tmp_path)
    assert 'href="explorer.html"' not in index.read_text()
    driver.get(explorer.as_uri())
    wait_for(driver, "window.ceta2vecExplorer && window.ceta2vecExplorer.ready")
    assert "no embedded segments" in driver.find_element("id", "status").text
    assert headless_chromium.severe(driver) == []
