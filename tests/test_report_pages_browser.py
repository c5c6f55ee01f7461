"""The report's verdict and the per-unit pages in a real headless Chromium, on a tiny real workspace
(ingested, trained two steps, embedded, scored against labels with the evaluate functions).

Screenshots go to docs/ for the README: docs/report-verdict.png (the first screen of index.html) and
docs/unit-page.png (a unit page after its first clip was played).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import headless_chromium
import pytest
from test_report_figures import tiny_workspace  # noqa: F401 - the module-scoped fixture, shared

from schemas.settings import ReportSettings
from tasks.workspace import database

DOCS = Path(__file__).resolve().parents[1] / "docs"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tiny_workspace, tmp_path_factory):  # noqa: F811
    """The workspace scored for 'sound' (layers, log-mel and MFCC baselines), then its report written."""
    from tasks.catalog.evaluations import labelled_segments, write_evaluations
    from tasks.catalog.recordings import segment_refs
    from tasks.embedding.run import read_audio
    from tasks.evaluation.run import baseline_features, model_vectors, score_features
    from tasks.report.build import build_report_content
    from tasks.report.explorer_page import write_explorer
    from tasks.report.html import write_report

    ws = tiny_workspace
    with database.writing(ws) as conn:
        labelled = labelled_segments(conn, "sound", None)
        model_id, layers = conn.execute("SELECT model_id, layers FROM embedding_models").fetchone()
        labelled = labelled.restricted_to({r[0] for r in conn.execute(
            "SELECT DISTINCT segment_id FROM embedded_segments WHERE model_id = ?", [model_id]).fetchall()})
        rows = [{"kind": "model", "features": f"layer {layer}", "layer": layer,
                 "metrics": score_features(model_vectors(conn, model_id, layer, labelled.segment_ids), labelled, 0, 20)}
                for layer in range(layers)]
        audio = read_audio(segment_refs(conn, ws, labelled.segment_ids))
        rows += [{"kind": "baseline", "features": name, "layer": None, "metrics": score_features(x, labelled, 0, 20)}
                 for name, x in baseline_features(audio, 16000).items()]
        write_evaluations(conn, "eval-browser", "sound", model_id, rows, labelled)
    out = tmp_path_factory.mktemp("pages") / "report"
    settings = ReportSettings(workspace=str(ws.root), media_points=4, atlas_units=4, exemplars=3, neighbours=3,
                              umap_neighbors=5)
    content = build_report_content(ws, settings, out)
    write_report(content, out)
    write_explorer(content, out)
    return out, content


@pytest.fixture()
def driver(tmp_path):
    browser = headless_chromium.start(tmp_path / "profile", 1400, 900)
    yield browser
    browser.quit()


def _wait(driver, script: str, seconds: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(lambda d: d.execute_script(script))


def test_the_verdict_and_the_scorecard_are_on_the_first_screen(report, driver):
    out, content = report
    verdict = content.verdict
    assert verdict is not None and verdict.scorecard and verdict.figure is not None
    driver.get((out / "index.html").as_uri())
    _wait(driver, "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)")
    screen = driver.execute_script("return window.innerHeight")
    box = driver.execute_script(
        "var e = document.querySelector('#verdict .headline'); var r = e.getBoundingClientRect();"
        "return {top: r.top, bottom: r.bottom, text: e.textContent}")
    assert box["bottom"] < screen and " ".join(box["text"].split()) == verdict.headline.replace("`", "")
    # the scorecard's sentence on log-mel, read beside its baseline, is on the first screen too
    lines = driver.execute_script(
        "return Array.from(document.querySelectorAll('#verdict li')).map(li => [li.textContent, "
        "li.getBoundingClientRect().bottom])")
    log_mel = [(text, bottom) for text, bottom in lines if "log-mel" in text]
    assert log_mel and log_mel[0][1] < screen, lines
    title = driver.find_element("css selector", "h1").text
    assert title == content.title and title.startswith("What ") == (verdict.level == "good")
    # every training figure beside its chance level; the scorecard figure is in the report folder and loads
    tables = driver.execute_script(
        "return Array.from(document.querySelectorAll('#verdict table')).map(t => [t.querySelector('caption')"
        ".textContent, t.getBoundingClientRect().top, t.textContent])")
    assert tables[0][0].startswith("Scorecard") and tables[0][1] < screen  # the scorecard starts on the first screen
    assert "baseline: log-mel stats" in tables[0][2] and "chance: always the commonest label" in tables[0][2]
    assert "chance 0.0" in tables[1][2] and "ln(K+1)" in tables[1][2]
    image = driver.execute_script(
        "var i = document.querySelector('#verdict figure img'); return [i.getAttribute('src'), i.naturalWidth]")
    assert image[0] == verdict.figure.png and image[0].startswith("figures/") and image[1] > 0
    text = driver.execute_script("return document.body.innerText")
    assert "`" not in text and "&#x27;" not in text
    assert "same colour by chance" in text  # neighbour agreement is printed beside its chance level
    DOCS.mkdir(exist_ok=True)
    headless_chromium.screenshot(driver, DOCS / "report-verdict.png")
    assert headless_chromium.severe(driver) == []


def test_a_unit_page_plays_its_clip_beside_its_spectrogram(report, driver):
    out, content = report
    units = next(s for s in content.sections if s.key == "units")
    assert units.links and not units.clips  # pages instead of hundreds of folded players
    driver.get((out / "index.html").as_uri())
    link = driver.find_element("css selector", ".unit-links a")
    expected = Path(unquote(urlparse(link.get_attribute("href")).path))
    assert expected.parent == out / "units" and expected.is_file()
    link.click()
    _wait(driver, "return document.readyState === 'complete' && window.ceta2vecUnitPage")
    assert Path(unquote(urlparse(driver.current_url).path)) == expected
    assert driver.execute_script("return window.ceta2vecUnitPage.clips") >= 1
    # the first exemplar: its spectrogram has loaded and its audio sits in the same card, loadable
    _wait(driver, "var i = document.querySelector('.exemplar img'); return i.complete && i.naturalWidth > 0")
    src = driver.execute_script("return document.querySelector('.exemplar audio').src")
    assert src.endswith(".wav") and Path(unquote(urlparse(src).path)).is_file()
    _wait(driver, "var a = document.querySelector('.exemplar audio'); return a.readyState >= 1 && a.duration > 0")
    duration = driver.execute_script("return document.querySelector('.exemplar audio').duration")
    assert 0.2 < duration < 4.0  # the unit's run and a little context
    assert driver.execute_script("return document.querySelector('.exemplar audio').error") is None
    # clicking the spectrogram plays the clip (a real gesture: the browser's autoplay policy allows it)
    driver.find_element("css selector", ".exemplar-spec").click()
    _wait(driver, "return document.querySelector('.exemplar audio').played.length > 0")
    mark = driver.execute_script(
        "var m = document.querySelector('.run-mark').getBoundingClientRect();"
        "var i = document.querySelector('.exemplar img').getBoundingClientRect();"
        "return [m.left >= i.left - 1, m.right <= i.right + 1, m.width > 0]")
    assert mark == [True, True, True]  # the run is marked on its spectrogram
    sections = driver.execute_script("return Array.from(document.querySelectorAll('main h2')).map(h => h.textContent)")
    assert sections[:2] == ["Listen and look", "Signature"] and "What follows it" in sections
    _wait(driver, "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    headless_chromium.screenshot(driver, DOCS / "unit-page.png")
    assert headless_chromium.severe(driver) == []
