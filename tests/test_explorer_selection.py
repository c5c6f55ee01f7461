"""The explorer's frame/unit mode, colour choices, lasso and box selection, the selection grid and CSV export,
in a real headless Chromium opened from disk; and the frame sampling of tasks/report/explorer_frames.py.

The data is synthetic but made of real files: thumbnails are log-mel spectrograms of synthetic calls drawn by
the report's own code, clips are real WAVs, and the last segment of each recording is zero-padded.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
from pathlib import Path

import headless_chromium
import numpy as np
import pytest
import soundfile as sf
from report_samples import HOSTILE, HOSTILE_WAV

from tasks.report.content import ExplorerData, ReportContent
from tasks.report.explorer_frames import (
    ExplorerFrames,
    estimated_frames,
    frame_levels,
    frame_segments,
    freq_ticks,
    pick_frames,
)
from tasks.report.explorer_page import write_explorer
from tasks.report.spectrograms import log_mel, mel_config, save_thumbnail

DOCS = Path(__file__).resolve().parent.parent / "docs"
RATE = 8000
SEGMENT_S = 4.0
LABELS = ["orca", "humpback", HOSTILE, ""]
UNITS = 8
API = "window.ceta2vecExplorer"


def synthetic_call(kind: int, seconds: float, seed: int) -> np.ndarray:
    """A tone, an up-sweep, clicks or noise: sounds that look different in a thumbnail."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.02 * rng.standard_normal(len(t))
    if kind == 0:
        x += 0.3 * np.sin(2 * np.pi * (900 + 60 * (seed % 5)) * t) * (np.sin(2 * np.pi * 0.7 * t) > 0)
    elif kind == 1:
        x += 0.3 * np.sin(2 * np.pi * (300 * t + 250 * t * t))
    elif kind == 2:
        x[(np.arange(len(t)) % 400) < 8] += 0.8
    return x.astype(np.float32)


def sample_data(out: Path, recordings: int = 12, per_recording: int = 5, frames_per_segment: int = 40,
                seed: int = 0, media_every: int = 1) -> ExplorerData:
    """Segments of `recordings` files (the last segment of each padded), with frames whose units sit in blobs."""
    mel = mel_config(RATE, 160, 400)
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("segment_id", "recording", "site", "start_time", "start_s", "label", "valid_s", "thumb",
                            "audio", "hour", "kind", "call_type")}
    for r in range(recordings):
        name = HOSTILE_WAV if r == 3 else f"hydrophone {r:02d}.wav"
        kind = r % 4
        for j in range(per_recording):
            valid = SEGMENT_S if j < per_recording - 1 else 1.5 + 0.5 * (r % 3)
            sid = f"rec{r:02d}-seg{j:02d}"
            thumb, wav = "", ""
            if (r * per_recording + j) % media_every == 0:
                audio = synthetic_call(kind, valid, seed=100 * r + j)
                thumb, wav = f"media/thumbs/{sid}.png", f"media/audio/{sid}.wav"
                save_thumbnail(out / thumb, log_mel(audio, mel))
                (out / wav).parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(out / wav), audio, RATE, subtype="PCM_16")
            rows["segment_id"].append(sid)
            rows["recording"].append(name)
            rows["site"].append(["Haro Strait", "<b>Lime Kiln</b> & co"][r % 2])
            rows["start_time"].append(f"2025-07-01T{(2 * r) % 24:02d}:00:{4 * j:02d}Z")
            rows["start_s"].append(SEGMENT_S * j)
            rows["label"].append(LABELS[kind])
            rows["call_type"].append(["S1", "S2", "", "=cmd()"][j % 4])
            rows["valid_s"].append(valid)
            rows["thumb"].append(thumb)
            rows["audio"].append(wav)
            rows["hour"].append((2 * r) % 24 + 4 * j / 3600)
            rows["kind"].append(kind)
    n = len(rows["segment_id"])
    kinds = np.asarray(rows["kind"])
    centres = np.array([[0, 0], [8, 0], [0, 8], [8, 8]], np.float32)
    coords = {layer: (centres[kinds] + rng.normal(0, 1.2, (n, 2))).astype(np.float32) for layer in (1, 2)}
    nb = ((np.arange(n)[:, None] + np.arange(1, 5)[None, :]) % n).astype(np.int32)
    # frames: each unit a blob of its own on the frame map, unit 5 far away from the rest
    seg, frame, time_s = [], [], []
    for s in range(n):
        count = int(estimated_frames(np.array([rows["valid_s"][s]]), mel)[0])
        keep = pick_frames(count, frames_per_segment, rng)
        seg += [s] * len(keep)
        frame += list(keep)
        time_s += list(mel.frame_centre_sample(keep) / RATE)
    seg = np.asarray(seg, np.int32)
    units = ((kinds[seg] * 2 + (np.asarray(frame) % 2)) % UNITS).astype(np.int32)
    units[::97] = -1  # frames without a unit must be handled
    unit_centres = np.array([[math.cos(a), math.sin(a)] for a in np.linspace(0, 2 * np.pi, UNITS, endpoint=False)]) * 10
    unit_centres[5] = [40, 40]
    frame_xy = (unit_centres[np.maximum(units, 0)] + rng.normal(0, 1.0, (len(seg), 2))).astype(np.float32)
    frames = ExplorerFrames(
        layer=2, segment=seg, frame=np.asarray(frame, np.int32), time_s=np.asarray(time_s, np.float32),
        rms_dbfs=rng.uniform(-70, -20, len(seg)).astype(np.float32), coords=frame_xy,
        units={"k-means units of layer 2": units, "quantizer codevectors, group 0": (units * 3 + 1) % 20},
        unit_sizes={"k-means units of layer 2": UNITS, "quantizer codevectors, group 0": 20},
        main_units="k-means units of layer 2")
    return ExplorerData(
        segment_id=rows["segment_id"], recording=rows["recording"], site=rows["site"], start_time=rows["start_time"],
        start_s=np.asarray(rows["start_s"], np.float64), label=rows["label"], cluster=kinds.astype(np.int32),
        coords=coords, neighbours={k: nb for k in coords}, distances={k: np.full(nb.shape, 0.1, np.float32) for k in coords},
        thumbnail=rows["thumb"], audio=rows["audio"], label_column="species", main_layer=2,
        valid_s=np.asarray(rows["valid_s"]), rms_dbfs=rng.uniform(-60, -25, n).astype(np.float32),
        hour_utc=np.asarray(rows["hour"]), segment_seconds=SEGMENT_S, labels={"call_type": rows["call_type"]},
        freq_ticks=freq_ticks(mel), frames=frames)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("explorer-selection")
    data = sample_data(out)
    return write_explorer(ReportContent("ceta2vec report: synthetic", "tiny@3", "now", [], {}, [], data), out), data


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    browser = headless_chromium.start(tmp_path_factory.mktemp("chromium-profile"), width=1500, height=1000)
    yield browser
    browser.quit()


def wait_for(driver, script: str, timeout: float = 30.0):
    """Poll a JS expression until it is truthy (a wait, not a timing assertion)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script("return " + script))


def open_page(driver, page_path: Path) -> None:
    driver.get(page_path.as_uri())
    wait_for(driver, f"window.ceta2vecExplorer && {API}.ready && {API}.firstDrawMs")
    assert driver.execute_script(f"return {API}.error") is None


def drag(driver, path: list[tuple[float, float]]) -> None:
    """Real pointer input (CDP mouse events, so pointerdown/move/up) along `path`, in viewport px."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    actions = ActionBuilder(driver)
    mouse = actions.pointer_action
    mouse.move_to_location(round(path[0][0]), round(path[0][1]))
    mouse.pointer_down()
    for x, y in path[1:]:
        mouse.move_to_location(round(x), round(y))
    mouse.pointer_up()
    actions.perform()


def screen_positions(driver) -> np.ndarray:
    """(n, 2) viewport px of every point of the current mode."""
    return np.asarray(driver.execute_script(
        f"return Array.from({{length: {API}.n}}, (_, i) => {{ const p = {API}.screenPosition(i); return [p.x, p.y]; }})"))


def legend_text(driver) -> str:
    return driver.find_element("id", "legend").text


def legend_rows(driver) -> dict[str, int]:
    return {text: int(count.replace(",", "")) for text, count in driver.execute_script(
        "return Array.from(document.querySelectorAll('#legend .legend-row'))"
        ".map(r => [r.querySelector('.legend-text').textContent, r.querySelector('.legend-count').textContent])")}


def test_frame_mode_lasso_grid_play_and_csv_export(driver, page, tmp_path):
    page_path, data = page
    frames = data.frames
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    open_page(driver, page_path)
    assert driver.execute_script(f"return [{API}.mode, {API}.n, {API}.frames]") == ["segments", len(data.segment_id),
                                                                                     len(frames)]

    # switch to frames: coloured by the main unit inventory, the legend names every unit and its count
    driver.find_element("css selector", "#mode button[data-mode='frames']").click()
    assert driver.execute_script(f"return [{API}.mode, {API}.n, {API}.visibleCount, {API}.drawnCount]") == [
        "frames", len(frames), len(frames), len(frames)]
    units = frames.units["k-means units of layer 2"]
    assert "k-means units of layer 2" in legend_text(driver)
    rows = legend_rows(driver)
    assert rows == {**{f"unit {u}": int((units == u).sum()) for u in range(UNITS)}, "no unit": int((units < 0).sum())}
    assert "Frames · units" in driver.find_element("css selector", "#mode button[aria-pressed='true']").text

    # lasso around unit 5's blob (alone in a corner): exactly its frames are selected
    members = np.flatnonzero(units == 5)
    positions = screen_positions(driver)
    cx, cy = positions[members].mean(0)
    radius = np.linalg.norm(positions[members] - [cx, cy], axis=1).max() + 12
    others = np.delete(np.arange(len(positions)), members)
    assert np.linalg.norm(positions[others] - [cx, cy], axis=1).min() > radius + 5, "the blob is not apart"
    driver.find_element("css selector", "#tool button[data-tool='lasso']").click()
    ring = [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in np.linspace(0, 2 * np.pi, 24)]
    drag(driver, ring)
    wait_for(driver, "!document.getElementById('selection').hidden")
    assert sorted(driver.execute_script(f"return {API}.selection")) == members.tolist()

    # the grid: one card per selected frame (up to 48), each a spectrogram with axes and a play button
    shown = min(len(members), 48)
    cards = driver.find_elements("css selector", "#selection-grid figure.card")
    assert len(cards) == shown == driver.execute_script(f"return {API}.gridCount")
    assert len(driver.find_elements("css selector", "#selection-grid button.play[data-clip]")) == shown
    wait_for(driver, "Array.from(document.querySelectorAll('#selection-grid canvas')).every(c => c.dataset.drawn === 'ok')")
    assert f"{len(members)} frames selected" in driver.find_element("id", "selection-title").text
    first = int(cards[0].get_attribute("data-index"))
    assert data.recording[frames.segment[first]] in cards[0].text and "unit 5" in cards[0].text

    # play: the segment's clip, from half a second before the frame
    card = next(c for c in cards if frames.time_s[int(c.get_attribute("data-index"))] > 1.0)
    first = int(card.get_attribute("data-index"))
    play = card.find_element("css selector", "button.play")
    play.click()
    assert play.get_attribute("aria-pressed") == "true" and driver.execute_script(f"return {API}.playing") == first
    src = driver.execute_script("return decodeURIComponent(document.getElementById('grid-player').src)")
    assert src.endswith(data.audio[frames.segment[first]])
    start = max(0.0, float(frames.time_s[first]) - 0.5)
    wait_for(driver, f"document.getElementById('grid-player').currentTime >= {start - 0.05} || "
                     "document.getElementById('grid-player').error")
    assert driver.execute_script("return document.getElementById('grid-player').error") is None
    headless_chromium.screenshot(driver, DOCS / "explorer-selection.png")

    # export: the Blob handed to the download holds one row per selected frame, the browser saves it
    driver.execute_script("""window.__csv = []; const make = URL.createObjectURL;
        URL.createObjectURL = function (blob) { blob.text().then(t => window.__csv.push(t)); return make.call(URL, blob); };""")
    driver.find_element("id", "export-csv").click()
    wait_for(driver, "window.__csv.length === 1")
    text = driver.execute_script("return window.__csv[0]")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(members)
    expected = {f"{data.segment_id[frames.segment[i]]}#{frames.frame[i]}": i for i in members}
    assert {r["frame_id"] for r in rows} == set(expected)
    for r in rows:
        i = expected[r["frame_id"]]
        s = frames.segment[i]
        assert r["segment_id"] == data.segment_id[s] and r["recording"] == data.recording[s]
        assert r["unit:k-means units of layer 2"] == "5"
        assert float(r["time_s"]) == pytest.approx(data.start_s[s] + frames.time_s[i], abs=1e-3)
        assert r["label:species"] == data.label[s] and r["site"] == data.site[s]
        assert r["label:call_type"] == ("'" + data.labels["call_type"][s] if data.labels["call_type"][s].startswith("=")
                                        else data.labels["call_type"][s])
    saved = tmp_path / driver.execute_script(f"return {API}.lastExport.name")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30, poll_frequency=0.2).until(lambda d: saved.is_file() and saved.stat().st_size > 0)
    assert saved.read_bytes().decode("utf-8") == text
    assert headless_chromium.severe(driver) == []


def test_colour_by_changes_the_legend_and_box_select_segments(driver, page, tmp_path):
    page_path, data = page
    open_page(driver, page_path)
    from selenium.webdriver.support.ui import Select

    colour = Select(driver.find_element("id", "colour-by"))
    values = [o.get_attribute("value") for o in colour.options]
    assert values[:2] == ["label", "label:1"] and {"site", "recording", "cluster", "loudness", "hour"} <= set(values)
    assert "orca" in legend_text(driver) and HOSTILE in legend_text(driver)
    colour.select_by_value("label:1")
    assert "call_type" in legend_text(driver) and "=cmd()" in legend_text(driver)
    colour.select_by_value("recording")
    assert HOSTILE_WAV in legend_text(driver) and "orca" not in legend_text(driver)
    colour.select_by_value("loudness")
    assert "dBFS" in legend_text(driver)
    colour.select_by_value("hour")
    legend = legend_text(driver)
    assert "00:00–03:00 UTC" in legend and "orca" not in legend
    swatches = driver.execute_script(
        "return Array.from(document.querySelectorAll('#legend .swatch')).map(s => getComputedStyle(s).backgroundColor)")
    assert len(set(swatches)) == len(swatches) >= 6  # each bin its own colour
    assert driver.execute_script(f"return {API}.drawnCount") == len(data.segment_id)

    # box select the top-right blob of segments (kind 3: label "" and recordings 3, 7, 11)
    positions = screen_positions(driver)
    members = np.flatnonzero(data.cluster == 3)
    (x0, y0), (x1, y1) = positions[members].min(0) - 6, positions[members].max(0) + 6
    inside = np.flatnonzero((positions[:, 0] >= x0) & (positions[:, 0] <= x1) & (positions[:, 1] >= y0) & (positions[:, 1] <= y1))
    driver.find_element("css selector", "#tool button[data-tool='box']").click()
    drag(driver, [(x0, y0), ((x0 + x1) / 2, (y0 + y1) / 2), (x1, y1)])
    wait_for(driver, "!document.getElementById('selection').hidden")
    assert sorted(driver.execute_script(f"return {API}.selection")) == inside.tolist()
    assert set(members) <= set(inside)
    cards = driver.find_elements("css selector", "#selection-grid figure.card")
    assert len(cards) == min(len(inside), 48)
    assert len(driver.find_elements("css selector", "#selection-grid button.play[data-clip]")) == len(cards)
    assert HOSTILE_WAV in driver.find_element("id", "selection-grid").text  # as text, never as markup
    assert driver.execute_script("return window.__pwned") is None
    text = driver.execute_script(f"return {API}.selectionCsv()")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["segment_id"] for r in rows] == [data.segment_id[i] for i in inside]
    assert {r["valid_s"] for r in rows} >= {"4.000"}
    # Esc clears the selection and hides the grid
    driver.find_element("tag name", "body").send_keys("\ue00c")
    assert driver.find_element("id", "selection").get_attribute("hidden") is not None
    assert headless_chromium.severe(driver) == []


def test_thumbnails_have_axes_and_show_padding_as_padding(driver, page, tmp_path):
    """A padded final segment: the spectrogram covers its valid seconds, the rest is hatched grey."""
    from PIL import Image

    page_path, data = page
    open_page(driver, page_path)
    padded = next(i for i, v in enumerate(data.valid_s) if v < SEGMENT_S - 1)
    full = next(i for i, v in enumerate(data.valid_s) if v == SEGMENT_S and data.label[i] == "orca")
    shares = {}
    for i in (padded, full):
        driver.execute_script(f"{API}.select({i})")
        wait_for(driver, "document.getElementById('details-thumb').dataset.drawn === 'ok'")
        image = Image.open(io.BytesIO(driver.find_element("id", "details-thumb").screenshot_as_png)).convert("RGB")
        pixels = np.asarray(image, np.int32)
        width = pixels.shape[1]
        scale = width / driver.execute_script("return document.getElementById('details-thumb').clientWidth")
        # the plot area of the canvas (margins as drawn by explorer.js), two pixels inside its frame
        left, right, top, bottom = round(30 * scale), width - round(6 * scale), round(4 * scale), pixels.shape[0] - round(26 * scale)
        plot = pixels[top + 2:bottom - 2, left + 2:right - 2]
        x_valid = int((right - left) * data.valid_s[i] / SEGMENT_S) - 2
        grey = (np.ptp(plot, axis=2) < 20) & (plot.mean(2) > 150)  # hatch and its lines: light, colourless
        shares[i] = (grey[:, : max(1, x_valid - 4)].mean(), grey[:, x_valid + 4:].mean() if x_valid + 4 < plot.shape[1] else None)
        # axes: tick labels are drawn left of and under the plot (dark pixels there)
        assert (pixels[top:bottom, : left - 2].mean(2) < 120).any() and (pixels[bottom + 2:, left:right].mean(2) < 120).any()
    assert shares[padded][0] < 0.05 and shares[padded][1] > 0.85  # spectrogram, then padding (and its word)
    assert shares[full][0] < 0.05 and shares[full][1] is None
    headless_chromium.screenshot(driver, tmp_path / "padded.png")
    assert headless_chromium.severe(driver) == []


def test_frame_mode_at_the_cap_draws_and_takes_a_lasso(driver, tmp_path):
    """20,000 frames (the default cap) beside 2,000 segments: the frame map draws every frame."""
    data = sample_data(tmp_path, recordings=40, per_recording=50, frames_per_segment=10, media_every=20)
    assert len(data.frames) == 20_000
    page_path = write_explorer(ReportContent("cap", "tiny@3", "now", [], {}, [], data), tmp_path)
    open_page(driver, page_path)
    driver.execute_script(f"{API}.setMode('frames')")
    assert driver.execute_script(f"return [{API}.n, {API}.drawnCount]") == [20_000, 20_000]
    switch, first = driver.execute_script(f"return [{API}.modeSwitchMs, {API}.firstFrameDrawMs]")
    redraws = [driver.execute_script(f"return {API}.redraw()") for _ in range(5)]
    driver.execute_script(f"{API}.setColour('loudness')")
    assert "dBFS" in legend_text(driver)
    units = data.frames.units["k-means units of layer 2"]
    members = np.flatnonzero(units == 5)
    positions = screen_positions(driver)
    (x0, y0), (x1, y1) = positions[members].min(0) - 5, positions[members].max(0) + 5
    driver.execute_script(f"{API}.setTool('box')")
    drag(driver, [(x0, y0), (x1, y1)])
    wait_for(driver, "!document.getElementById('selection').hidden")
    assert sorted(driver.execute_script(f"return {API}.selection")) == members.tolist()
    assert driver.execute_script(f"return {API}.gridCount") == 48
    assert headless_chromium.severe(driver) == []
    print(f"\nframe mode at 20,000 frames: switch (decode, grid, colours, first draw) {switch:.0f} ms, "
          f"first draw {first:.0f} ms, redraw {min(redraws):.0f}-{max(redraws):.0f} ms")


def test_units_screenshot(driver, page):
    page_path, data = page
    open_page(driver, page_path)
    driver.execute_script(f"{API}.setMode('frames')")
    driver.execute_script(f"{API}.select(3)")
    wait_for(driver, "document.getElementById('details-thumb').dataset.drawn === 'ok'")
    headless_chromium.screenshot(driver, DOCS / "explorer-units.png")
    assert "Frame" == driver.find_element("id", "details-kind").text
    assert "k-means units of layer 2" in driver.find_element("id", "details-fields").text


def test_explorer_without_frames_disables_frame_mode(driver, tmp_path):
    data = sample_data(tmp_path, recordings=2, per_recording=2)
    data.frames = None
    open_page(driver, write_explorer(ReportContent("t", "m@1", "now", [], {}, [], data), tmp_path))
    button = driver.find_element("css selector", "#mode button[data-mode='frames']")
    assert not button.is_enabled() and "no frame vectors" in button.get_attribute("title")
    assert driver.execute_script(f"return {API}.setMode('frames')") is False


# ---- frame sampling (no browser) ----------------------------------------------------------------

def test_frame_segments_take_media_segments_first_then_spread_over_others():
    ids = [f"s{i}" for i in range(100)]
    frames = np.full(100, 500)
    media = ["s7", "s3", "s50"]
    assert frame_segments(ids, media, frames, 1000, seed=0) == media  # they hold enough frames
    chosen = frame_segments(ids, media, frames, 5000, seed=0)
    assert chosen[:3] == media and len(set(chosen)) == len(chosen)
    # beyond the media segments at most 50 frames count per segment, so the sample spreads over many
    assert len(chosen) == 3 + math.ceil((5000 - 1500) / 50)
    assert frame_segments(ids, [], np.zeros(100), 10, seed=0) == []  # no frames anywhere


def test_pick_frames_and_levels():
    rng = np.random.default_rng(0)
    assert pick_frames(5, 10, rng).tolist() == [0, 1, 2, 3, 4]
    picked = pick_frames(500, 20, rng)
    assert len(picked) == 20 and np.all(np.diff(picked) > 0) and picked.max() < 500
    mel = mel_config(RATE, 160, 400)
    audio = np.zeros(RATE, np.float32)
    audio[4000:] = 0.5  # -6 dBFS from 0.5 s
    levels = frame_levels(audio, np.array([0, 24, 40, 49, 10_000]), mel)
    assert levels[0] == -200.0 and levels[2] == levels[3] == pytest.approx(20 * math.log10(0.5), abs=1e-3)
    assert -200 < levels[1] < levels[2] and np.isnan(levels[4])
    assert estimated_frames(np.array([1.0, 0.01]), mel).tolist() == [(RATE - 400) // 160 + 1, 0]


def test_explorer_data_checks_frame_columns(tmp_path):
    data = sample_data(tmp_path, recordings=2, per_recording=2, frames_per_segment=3)
    data.frames.segment[0] = len(data.segment_id)
    with pytest.raises(ValueError, match="segment row that does not exist"):
        write_explorer(ReportContent("t", "m@1", "now", [], {}, [], data), tmp_path)
    data = sample_data(tmp_path, recordings=2, per_recording=2)
    data.labels["call_type"] = data.labels["call_type"][:-1]
    with pytest.raises(ValueError, match="label column 'call_type'"):
        write_explorer(ReportContent("t", "m@1", "now", [], {}, [], data), tmp_path)
    shutil.rmtree(tmp_path / "media")


# ---- frame assembly on a real workspace (DuckDB, Parquet frame vectors, k-means units) ----------

def test_explorer_frames_of_a_real_workspace(tiny_workspace):  # conftest's, shared by the session
    from tasks.catalog.embeddings import embedded_segment_ids, resolve_model
    from tasks.catalog.recordings import segment_info
    from tasks.catalog.units import frame_units, unit_inventories
    from tasks.report.explorer_frames import explorer_columns, explorer_frames
    from tasks.workspace import database

    ws = tiny_workspace
    with database.reading(ws) as conn:
        model = resolve_model(conn, None)
        inventories = unit_inventories(conn, model)
        ids = embedded_segment_ids(conn, model, [1])
        info = segment_info(conn, ids, "sound")
    mel = mel_config(model.sample_rate, model.hop, model.receptive_field)
    main = next(inv for inv in inventories if inv.key == "kmeans-layer1")
    media = ids[1:4]

    def sample(cap: int) -> ExplorerFrames | None:
        return explorer_frames(ws, model, 1, inventories, main, ids, info.valid_s, media, mel, cap, 5, 0.1, seed=0)

    frames = sample(150)
    assert len(frames) == 150 and frames.coords.shape == (150, 2) and np.isfinite(frames.coords).all()
    assert {ids[r] for r in frames.segment} <= set(media)  # the media segments hold enough frames
    assert frames.main_units == main.name and set(frames.units) == {inv.name for inv in inventories}
    with database.reading(ws) as conn:
        stored = frame_units(conn, model, main, media)
    assert [int(stored[ids[r]][j]) for r, j in zip(frames.segment, frames.frame)] == frames.units[main.name].tolist()
    assert np.all((frames.time_s > 0) & (frames.time_s <= info.valid_s[frames.segment]))
    assert np.all((frames.rms_dbfs > -90) & (frames.rms_dbfs < 0))  # tones and clicks over noise
    again = sample(150)
    assert np.array_equal(again.frame, frames.frame) and np.array_equal(again.coords, frames.coords)  # seeded
    everything = sample(100_000)  # more than there are: every frame of every segment
    assert len(everything) == sum(int(n) for n in estimated_frames(info.valid_s, mel))
    assert sample(0) is None
    columns = explorer_columns(ws, ids, "sound", mel)
    assert columns["segment_seconds"] == 2.0 and columns["labels"] == {}
    assert [t for _, t in columns["freq_ticks"]][0] == "0.0" and len(columns["freq_ticks"]) >= 3
