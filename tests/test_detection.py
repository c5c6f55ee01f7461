"""From labels to detections on recordings with planted calls at known times: labels in (CSV,
Raven, the explorer's export), a log-mel detector trained on 10 positives and 30 negatives, its
detections against the planted truth, Raven tables out and back in, grouped validation, effort
and its figure, the calibrated call density against the planted truth, the explorer's Review mode
in headless Chromium, labels by example, scoring new audio, and a kill -9 in the middle of writing
detections.

Real DuckDB, real Parquet, the project's own ingest functions; the classify flow runs once, on
the test Prefect server."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
from quick_ingest import ingest_quick
from signals import click_train, noise, sweep, tone, write

from tasks.catalog import annotations as annotations_catalog
from tasks.catalog import detections as detections_catalog
from tasks.detection import classifier as clf
from tasks.detection import events as events_io
from tasks.detection import labels_io, raven, run, suggest
from tasks.detection.features import FeatureSpec
from tasks.detection.windows import windows_of
from tasks.ingest.labels import LabelsError
from tasks.workspace import Workspace, database

RATE = 8000
SECONDS = 20.0
CALL_S = 0.8
CALLS = (1.0, 5.0, 12.0, 16.0)  # nominal call starts (s); each recording jitters them
DISTRACTORS = (3.0, 7.2, 14.0, 18.2)  # tones and clicks, never calls
NOISE_SPAN = (8.2, 10.0)  # nothing planted here
WINDOW_S, HOP_S = 2.0, 1.0
# AudioMoth names carry the start time: two days, two sites, an hour apart
NAMES = [f"2025070{1 + i // 4}_0{i % 4}0000.wav" for i in range(8)]


def plant(root: Path) -> dict[str, list[float]]:
    """Eight 20-s recordings of noise with upsweep calls and distractors at known times."""
    rng = np.random.default_rng(7)
    truth = {}
    for i, name in enumerate(NAMES):
        x = noise(SECONDS, RATE, 0.02, seed=i)
        starts = [c + rng.uniform(-0.2, 0.2) for c in CALLS]
        for t in starts:
            a = int(t * RATE)
            x[a:a + int(CALL_S * RATE)] += sweep(700, 1800, CALL_S, RATE, 0.25)
        for k, t in enumerate(DISTRACTORS):
            a = int(t * RATE)
            d = tone(2600 + 200 * k, 0.6, RATE, 0.25) if k % 2 == 0 else click_train(0.6, RATE, 0.03, 0.6)
            x[a:a + len(d)] += d
        site = "north" if i < 4 else "south"
        write(root / site / name, x, RATE, "PCM_16")
        truth[name] = starts
    return truth


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(workspace, truth, labels CSV): ingested by site, 10 calls and 30 call-free spans labelled."""
    root = tmp_path_factory.mktemp("planted")
    truth = plant(root / "rec")
    ws = Workspace.at(root / "ws")
    for site in ("north", "south"):
        ingest_quick(ws, root / "rec" / site, sample_rate=RATE, segment_seconds=10.0, site=site)
    rows, negatives = [], []
    for name in NAMES[:3]:
        rows += [[name, f"{t:.3f}", f"{t + CALL_S:.3f}", "upsweep", "yes"] for t in truth[name]]
    rows = rows[:10]
    for name in NAMES:
        negatives += [[name, f"{d - 0.3:.3f}", f"{d + 0.9:.3f}", "upsweep", "no"] for d in DISTRACTORS[:3]]
        negatives.append([name, f"{NOISE_SPAN[0]:.3f}", f"{NOISE_SPAN[1]:.3f}", "upsweep", "no"])
    negatives = negatives[:30]
    labels = root / "upsweeps.csv"
    with open(labels, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "start_s", "end_s", "label", "positive"])
        writer.writerows(rows + negatives)
    imported = labels_io.import_annotations(ws, labels)
    assert imported.problems == [] and imported.counts == {("upsweep", True): 10, ("upsweep", False): 30}
    return ws, truth, {(r[0], r[1]) for r in rows}


@pytest.fixture(scope="module")
def trained(planted):
    """The log-mel upsweep detector, trained and every window scored (plain task functions)."""
    ws, _, _ = planted
    plan = run.WindowPlan(FeatureSpec("logmel", "windows"), WINDOW_S, HOP_S)
    with database.reading(ws) as conn:
        [target] = run.targets(conn, ["upsweep"], None, None)
    prepared = run.prepare(ws, target, plan, "recording", 1.0, 0, 50)
    written = run.commit(ws, prepared, run.score_batches(ws, prepared, plan))
    return prepared, plan, written


def test_planted_calls_are_recovered_with_few_false_positives(planted, trained):
    ws, truth, labelled = planted
    prepared, _, written = trained
    with database.reading(ws) as conn:
        record, threshold, events = events_io.detected_events(conn, "upsweep", None, 0.0)
        windows = detections_catalog.scored_windows(conn, record["classifier_id"])
        names = detections_catalog.file_names(conn, sorted({w[1] for w in windows}))
    assert written == len(windows) == 8 * 2 * 9  # 9 windows of 2 s every 1 s in each 10-s segment
    assert record["positives"] >= 10 and record["negatives"] >= 30
    held_out = [(n, t) for n in NAMES for t in truth[n] if (n, f"{t:.3f}") not in labelled]

    def near(event, t) -> bool:  # within one window of the planted call
        return abs(event.start_s - t) <= WINDOW_S and abs(event.end_s - (t + CALL_S)) <= WINDOW_S

    found = [(n, t) for n, t in held_out if any(e.file_name == n and near(e, t) for e in events)]
    assert len(held_out) == 8 * len(CALLS) - 10
    assert len(found) / len(held_out) >= 0.9, (len(found), len(held_out), threshold)
    stray = [e for e in events if not any(near(e, t) for t in truth[e.file_name])]
    assert len(stray) <= 0.1 * len(events), stray
    # window by window: windows that hold no part of a call, scored above the threshold
    quiet = [w for w in windows if not any(min(w[4], t + CALL_S) > max(w[3], t) for t in truth[names[w[1]]])]
    above = [w for w in quiet if w[5] >= threshold]
    assert len(quiet) > 50 and len(above) / len(quiet) <= 0.1, (len(above), len(quiet))
    validation = prepared.record["validation"]
    validation = validation if isinstance(validation, dict) else json.loads(validation)
    low, high = validation["metrics"]["roc_auc"][1:]
    assert validation["folds"] >= 2 and 0 <= low <= validation["metrics"]["roc_auc"][0] <= high <= 1


def test_raven_tables_round_trip_per_file_and_combined(planted, trained, tmp_path):
    ws, _, _ = planted
    with database.reading(ws) as conn:
        _, _, events = events_io.detected_events(conn, "upsweep", None, 0.0)
        per_file = events_io.write_events(conn, events, "raven", tmp_path / "per-file", "upsweep", combined=False)
        [combined] = events_io.write_events(conn, events, "raven", tmp_path / "combined", "upsweep", combined=True)
        assert events and len(per_file) == len({e.file_name for e in events})
        expected = sorted((e.recording_id, round(e.start_s, 4), round(e.end_s, 4)) for e in events)
        for tables in (per_file, [combined]):
            back = []
            for table in tables:
                rows, problems = raven.read_raven(table)
                assert problems == [] and {r.label for r in rows} == {"upsweep"}
                resolved, unmatched = annotations_catalog.resolve(conn, str(table), rows)
                assert unmatched == []
                back += [(rec, round(a, 4), round(b, 4)) for _, rec, a, b in resolved]
            assert sorted(back) == expected
    header = combined.read_text().splitlines()[0].split("\t")
    assert header[:4] == ["Selection", "View", "Channel", "Begin Time (s)"] and "File Offset (s)" in header
    # on the joined timeline Begin Time grows from file to file, while the offsets stay inside each file
    rows = [line.split("\t") for line in combined.read_text().splitlines()[1:]]
    begins = [float(r[3]) for r in rows]
    assert begins == sorted(begins) and max(begins) > SECONDS


def test_a_hand_written_raven_table_is_read_and_its_bad_rows_named(planted, tmp_path):
    ws, _, _ = planted
    table = tmp_path / "hand.selections.txt"
    lines = ["Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tBegin File\t"
             "File Offset (s)\tAnnotation",
             f"1\tWaveform 1\t1\t1.0\t1.8\t500\t2000\t{NAMES[5]}\t1.0\tupsweep",
             f"1\tSpectrogram 1\t1\t1.0\t1.8\t500\t2000\t{NAMES[5]}\t1.0\tupsweep",  # the same selection, other view
             f"2\tSpectrogram 1\t1\t21.0\t21.5\t500\t2000\t{NAMES[6]}\t1.0\tmoan",  # joined timeline; offset 1.0
             f"3\tSpectrogram 1\t1\t30.0\t29.0\t500\t2000\t{NAMES[6]}\t10.0\tupsweep",  # ends before it begins
             f"4\tSpectrogram 1\t1\tsoon\t31.0\t500\t2000\t{NAMES[6]}\t11.0\tupsweep",  # not a number
             "5\tSpectrogram 1\t1\t40.0\t41.0\t500\t2000\tnot-ingested.wav\t2.0\tupsweep"]  # no such recording
    table.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))  # BOM and Windows line ends
    imported = labels_io.import_annotations(ws, table)
    assert imported.kind == "raven"
    assert imported.counts == {("upsweep", True): 1, ("moan", True): 1}
    assert len(imported.problems) == 3
    for row, why in zip((5, 6, 7), ("must be after", "must be a number", "no ingested recording")):
        assert any(f"{table}: row {row}: " in p and why in p for p in imported.problems), imported.problems
    with database.reading(ws) as conn:
        spans = {(a.label, a.start_s, a.end_s) for a in annotations_catalog.annotations_of(conn, ["moan"])}
    assert spans == {("moan", 1.0, 1.5)}
    with pytest.raises(LabelsError, match="Begin Time"):
        bad = tmp_path / "bad.txt"
        bad.write_text("Selection\tStart\tStop\n1\t2\t3\n")
        raven.read_raven(bad)
    labels_io.import_annotations(ws, table, label="ignored-moan")  # --label names every row
    with database.writing(ws) as conn:  # leave the shared workspace's annotations as they were
        conn.execute("DELETE FROM annotations WHERE source = ?", [str(table.resolve())])


def test_labels_csv_bad_rows_one_line_each_good_rows_in_and_reimport_idempotent(planted, tmp_path):
    ws, _, _ = planted
    labels = tmp_path / "calls.csv"
    labels.write_text("file,start_s,end_s,label,positive\n"
                      f"{NAMES[7]},1.0,1.8,whistle,yes\n"
                      f"{NAMES[7]},5.0,4.0,whistle,yes\n"       # end before start
                      f",1.0,2.0,whistle,yes\n"                 # no file
                      f"missing.wav,1.0,2.0,whistle,yes\n"      # not ingested
                      f"{NAMES[7]},3.0,3.6,whistle,maybe\n"     # not a decision
                      f"{NAMES[7]},2.0,2.5\n"                   # ragged
                      f"{NAMES[7]},7.0,8.0,whistle,no\n"
                      f"{NAMES[7]},9.0,9.5,whistle,skip\n")     # reviewed, skipped: no row, no complaint
    first = labels_io.import_annotations(ws, labels)
    assert first.counts == {("whistle", True): 1, ("whistle", False): 1}
    assert [p.split(": row ")[1].split(":")[0] for p in first.problems] == ["3", "4", "6", "7", "5"]
    assert all(p.startswith(f"{labels}: row ") for p in first.problems)
    again = labels_io.import_annotations(ws, labels)
    assert again.counts == first.counts and again.stored == first.stored
    with database.reading(ws) as conn:
        assert len(annotations_catalog.annotations_of(conn, ["whistle"])) == 2
    # the explorer's Export CSV of a selection (segment mode), imported with --label
    with database.reading(ws) as conn:
        seg = detections_catalog.segments_to_score(conn)[0]
    export = tmp_path / "ceta2vec-tiny_3-segments-selection.csv"
    export.write_text("segment_id,recording,site,start_time,start_s,valid_s,rms_dbfs,label:sound,cluster,umap_x,umap_y\r\n"
                      f"{seg.segment_id},{NAMES[0]},north,2025-07-01T00:00:00Z,0.000,10.000,-30.1,,1,0.1,0.2\r\n"
                      "no-such-segment,x.wav,north,,0.000,10.000,-30.1,,1,0.1,0.2\r\n")
    with pytest.raises(LabelsError, match="--label"):
        labels_io.import_annotations(ws, export)
    selected = labels_io.import_annotations(ws, export, label="whistle")
    assert selected.kind == "explorer" and selected.counts == {("whistle", True): 1}
    assert len(selected.problems) == 1 and "row 3" in selected.problems[0]
    with database.writing(ws) as conn:
        for source in (labels, export):
            conn.execute("DELETE FROM annotations WHERE source = ?", [str(source.resolve())])


def test_grouped_splits_never_put_a_group_on_both_sides(planted):
    ws, _, _ = planted
    with database.reading(ws) as conn:
        windows = windows_of(detections_catalog.segments_to_score(conn), WINDOW_S, HOP_S, "windows")
    y = (np.arange(len(windows)) % 3 == 0).astype(int)
    seen = {}
    for split_by, groups_expected in (("recording", 8), ("site", 2), ("day", 2)):
        groups = windows.groups(split_by)
        assert len(np.unique(groups)) == groups_expected
        folds = clf.grouped_folds(y, groups, seed=0)
        assert len(folds) >= 2
        for train, test in folds:
            assert not set(groups[train]) & set(groups[test]), split_by
        seen[split_by] = sorted({g for _, test in folds for g in groups[test]})
    assert seen["day"] == ["2025-07-01", "2025-07-02"] and seen["site"] == ["north", "south"]
    assert clf.grouped_folds(y, np.array(["one"] * len(y)), seed=0) == []  # nothing to hold out


def test_effort_counts_only_recorded_hours_and_presence_is_per_effort(planted, trained):
    ws, _, _ = planted
    with database.reading(ws) as conn:
        effort = conn.execute("SELECT site, strftime(hour AT TIME ZONE 'UTC', '%d %H'), seconds FROM effort "
                              "ORDER BY 1, 2").fetchall()
        presence = conn.execute("SELECT site, period_start, effort_s, windows, windows_above, present "
                                "FROM presence_by('upsweep', 'day', 0.5)").fetchall()
        above = conn.execute("SELECT count(*) FROM detections_above('upsweep', 0.5)").fetchone()[0]
    # 20 s in each recorded hour; the hours between recordings are absent, not zero
    assert effort == [("north", f"01 0{h}", SECONDS) for h in range(4)] + [("south", f"02 0{h}", SECONDS) for h in range(4)]
    assert [(p[0], p[2], p[3]) for p in presence] == [("north", 80.0, 72), ("south", 80.0, 72)]
    assert sum(p[4] for p in presence) == above > 0 and all(p[5] for p in presence)


def test_suggestions_sit_near_the_threshold_spread_over_recordings_and_unlabelled(planted, trained, tmp_path):
    ws, _, _ = planted
    with database.reading(ws) as conn:
        record = detections_catalog.current_classifier(conn, "upsweep")
        picks = suggest.suggest(conn, ws, record, 6, record["threshold"])
        labelled = annotations_catalog.annotations_of(conn, ["upsweep"])
        windows = detections_catalog.scored_windows(conn, record["classifier_id"])
    assert len(picks) == 6 and len({p.recording_id for p in picks}) >= 4
    for p in picks:
        assert not any(a.recording_id == p.recording_id and a.start_s < p.end_s and p.start_s < a.end_s for a in labelled)
    margins = sorted(abs(w[5] - record["threshold"]) for w in windows)
    assert max(abs(p.score - record["threshold"]) for p in picks) <= margins[len(margins) // 2]
    path = suggest.write_suggestions(picks, "upsweep", tmp_path / "review.csv")
    kind, rows, problems = labels_io.read_annotations(path)
    assert kind == "csv" and rows == [] and problems == []  # undecided rows wait for a yes or no


KILLER = """
import os, signal, sys
import pyarrow as pa
sys.path.insert(0, {root!r})
from tasks.catalog import detections
from tasks.workspace import Workspace, database

def batches():
    for i in range(3):
        if i == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-transaction: two batches are in, uncommitted
        yield pa.table({{"classifier_id": ["killed"] * 5, "label": ["upsweep"] * 5, "recording_id": ["r"] * 5,
                        "channel": pa.array([-1] * 5, pa.int16()), "segment_id": ["s"] * 5,
                        "start_s": [float(i * 10 + k) for k in range(5)], "end_s": [float(i * 10 + k + 2) for k in range(5)],
                        "utc_start": pa.array([None] * 5, pa.timestamp("us", tz="UTC")), "score": [0.5] * 5}})

with database.writing(Workspace.at({ws!r})) as conn:
    detections.store(conn, {record!r}, batches())
"""


def test_a_kill_while_writing_detections_leaves_none_and_a_rerun_completes(planted, trained, tmp_path):
    ws, _, _ = planted
    copy = Workspace.at(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    record = {"classifier_id": "killed", "label": "upsweep", "features": "logmel", "model_id": None, "layer": None,
              "granularity": "windows", "window_s": 2.0, "hop_s": 1.0, "split_by": "recording", "positives": 1,
              "negatives": 1, "threshold": 0.5, "validation": "{}", "settings": "{}", "path": "x"}
    script = KILLER.format(root=str(Path(__file__).resolve().parents[1]), ws=str(copy.root), record=record)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    with duckdb.connect(str(copy.db_path), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM detections WHERE classifier_id = 'killed'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM classifiers WHERE classifier_id = 'killed'").fetchone()[0] == 0
    prepared, plan, written = trained
    with database.writing(copy) as conn:  # the real classifier's rows, written again over the copy: no doubles
        before = detections_catalog.detection_count(conn, prepared.record["classifier_id"])
        conn.execute("DELETE FROM detections WHERE classifier_id = ? AND start_s >= 10", [prepared.record["classifier_id"]])
    again = run.commit(copy, prepared, run.score_batches(copy, prepared, plan))
    with database.reading(copy) as conn:
        assert detections_catalog.detection_count(conn, prepared.record["classifier_id"]) == before == written
    assert again == written // 2  # only the segments that had lost their windows were scored again


def test_classify_flow_finds_its_classifier_and_scores_only_new_recordings(planted, trained, prefect_server, tmp_path):
    from flows.classify import classify
    from schemas.settings import ClassifySettings

    ws, _, _ = planted
    copy = Workspace.at(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    settings = ClassifySettings(workspace=str(copy.root), label=["upsweep"], features="logmel", bootstrap=50)
    first = classify(settings)
    [result] = first.classifiers
    assert result["classifier_id"] == trained[0].record["classifier_id"] and not result["new"]
    assert result["windows_scored"] == 0  # the same labels, features and windows: nothing new
    write(tmp_path / "new" / "20250703_000000.wav", noise(SECONDS, RATE, 0.02, seed=99), RATE, "PCM_16")
    ingest_quick(copy, tmp_path / "new", sample_rate=RATE, segment_seconds=10.0, site="north")
    [second] = classify(settings).classifiers
    assert second["classifier_id"] == result["classifier_id"] and second["windows_scored"] == 18


def test_review_mode_keys_mark_windows_and_the_exported_csv_reimports(planted, trained, tmp_path):
    """The explorer's Review mode in headless Chromium: suggested windows with spectrogram and clip,
    y / n / s mark them, and the exported decisions are a CSV `ceta2vec label` reads."""
    import csv as csv_module
    import io

    import headless_chromium
    import soundfile as sf
    from selenium.webdriver.support.ui import WebDriverWait

    from tasks.report.content import ExplorerData, ReportContent
    from tasks.report.explorer_frames import freq_ticks
    from tasks.report.explorer_page import write_explorer
    from tasks.report.explorer_review import review_batches
    from tasks.report.spectrograms import mel_config

    ws, _, _ = planted
    out = tmp_path / "report"
    mel = mel_config(RATE, 160, 400)
    [batch] = review_batches(ws, out, "media", mel, k=6)
    assert batch.label == "upsweep" and len(batch) == 6 and all(batch.thumbnail) and all(batch.audio)
    for a, b, wav in zip(batch.clip_start_s, batch.clip_end_s, batch.audio):
        assert sf.info(str(out / wav)).duration == pytest.approx(b - a, abs=2 / RATE)
    with database.reading(ws) as conn:
        segments = conn.execute("SELECT s.segment_id, r.file_name, s.site, s.start_s FROM segments s "
                                "JOIN recordings r USING (recording_id) ORDER BY 1").fetchall()
    n = len(segments)
    data = ExplorerData(
        segment_id=[s[0] for s in segments], recording=[s[1] for s in segments], site=[s[2] for s in segments],
        start_time=[""] * n, start_s=np.array([s[3] for s in segments], float), label=[""] * n,
        cluster=np.zeros(n, np.int32), coords={1: np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)},
        neighbours={}, distances={}, thumbnail=[""] * n, audio=[""] * n, freq_ticks=freq_ticks(mel), review=[batch])
    page = write_explorer(ReportContent("review", "none", "now", [], {}, [], data), out)

    driver = headless_chromium.start(tmp_path / "profile")
    try:
        api = "window.ceta2vecExplorer"
        wait = WebDriverWait(driver, 30, poll_frequency=0.1)
        driver.get(page.as_uri())
        wait.until(lambda d: d.execute_script(f"return {api} && {api}.ready"))
        assert driver.execute_script(f"return {api}.error") is None
        button = driver.find_element("id", "review-open")
        assert button.is_enabled() and "6 suggested windows" in button.text
        button.click()
        wait.until(lambda d: d.execute_script("return document.getElementById('review-thumb').dataset.drawn") == "ok")
        assert driver.find_element("id", "plot").get_attribute("hidden") is not None
        assert len(driver.find_elements("css selector", "#review-list button.review-item")) == 6
        src = driver.execute_script("return decodeURIComponent(document.getElementById('review-player').src)")
        assert src.endswith(batch.audio[0])
        body = driver.find_element("tag name", "body")
        for key in "yns":
            body.send_keys(key)
        body.send_keys("\ue013")  # arrow up: back to the skipped window, then decide it again
        body.send_keys("n")
        body.send_keys("y")
        review = driver.execute_script(f"return {api}.review")
        assert review["decisions"] == ["yes", "no", "no", "yes", "", ""] and review["at"] == 4
        marks = driver.execute_script("return Array.from(document.querySelectorAll('#review-list .review-item'))"
                                      ".map(b => b.dataset.decision)")
        assert marks == ["yes", "no", "no", "yes", "", ""]
        assert "4 of 6 decided: 2 yes, 2 no" in driver.find_element("id", "review-progress").text
        headless_chromium.screenshot(driver, Path(__file__).resolve().parents[1] / "docs" / "explorer-review.png")
        driver.execute_script("""window.__csv = []; const make = URL.createObjectURL;
            URL.createObjectURL = function (blob) { blob.text().then(t => window.__csv.push(t)); return make.call(URL, blob); };""")
        driver.find_element("id", "review-export").click()
        wait.until(lambda d: d.execute_script("return window.__csv.length === 1"))
        text = driver.execute_script("return window.__csv[0]")
        assert headless_chromium.severe(driver) == []
    finally:
        driver.quit()

    rows = list(csv_module.DictReader(io.StringIO(text)))
    assert [r["positive"] for r in rows] == ["yes", "no", "no", "yes", "", ""]
    assert [(r["file"], float(r["start_s"])) for r in rows] == [(f, pytest.approx(s, abs=1e-3))
                                                                 for f, s in zip(batch.file, batch.start_s)]
    decisions = tmp_path / "review-upsweep-decisions.csv"
    decisions.write_text(text, encoding="utf-8")
    copy = Workspace.at(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    imported = labels_io.import_annotations(copy, decisions)
    assert imported.kind == "csv" and imported.problems == [] and imported.stored == 4
    with database.reading(copy) as conn:
        stored = conn.execute("SELECT recording_id, start_s, end_s, positive FROM annotations WHERE source = ? "
                              "ORDER BY source_row", [imported.source]).fetchall()
    expected = [(batch.recording_id[i], batch.start_s[i], batch.end_s[i], v)
                for i, v in enumerate([True, False, False, True])]
    assert [(r, pytest.approx(a, abs=1e-3), pytest.approx(b, abs=1e-3), p) for r, a, b, p in stored] == expected


def test_effort_counts_a_recording_gap_as_no_effort_and_the_density_figure_hatches_it(planted, trained, tmp_path):
    from tasks.detection.density import densities
    from tasks.report.call_density import density_figure, effort_rasters

    ws, _, _ = planted
    copy = Workspace.at(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    # north recorded 00:00-03:00 on day 1; a recording at 06:00 leaves 04:00 and 05:00 without audio
    write(tmp_path / "new" / "20250701_060000.wav", noise(SECONDS, RATE, 0.02, seed=98), RATE, "PCM_16")
    ingest_quick(copy, tmp_path / "new", sample_rate=RATE, segment_seconds=10.0, site="north")
    prepared, plan, _ = trained
    record = prepared.record

    def drawn_north():
        with database.reading(copy) as conn:
            rasters = effort_rasters(conn, record["classifier_id"], record["threshold"])
            found = densities(conn, detections_catalog.current_classifier(conn, "upsweep"))
        fig, drawn = density_figure(rasters, found, "upsweep", record["threshold"])
        fig.savefig(tmp_path / "density.png")
        return {r.site: r for r in rasters}, {d.site: d for d in drawn}

    with database.reading(copy) as conn:
        effort = conn.execute("SELECT strftime(hour AT TIME ZONE 'UTC', '%d %H'), seconds FROM effort "
                              "WHERE site = 'north' ORDER BY 1").fetchall()
    assert effort == [(f"01 0{h}", SECONDS) for h in (0, 1, 2, 3, 6)]  # the gap has no rows, not zeros
    day1 = {("2025-07-01", h) for h in range(24)}
    rasters, drawn = drawn_north()
    assert drawn["north"].unscored == [("2025-07-01", 6)]  # recorded, not scored yet: grey, not a rate of 0
    assert set(drawn["north"].hatched) == day1 - {("2025-07-01", h) for h in (0, 1, 2, 3, 6)}
    run.commit(copy, prepared, run.score_batches(copy, prepared, plan))  # scores only the new recording
    rasters, drawn = drawn_north()
    north = rasters["north"]
    assert north.days == ["2025-07-01"] and drawn["north"].unscored == []
    assert {("2025-07-01", 4), ("2025-07-01", 5)} <= set(drawn["north"].hatched)
    assert ("2025-07-01", 6) not in drawn["north"].hatched and np.isfinite(north.rate[0, 6])
    assert np.isnan(north.rate[0, 4]) and north.windows[0, 6] == 18
    assert north.rate[0, 0] == pytest.approx(north.above[0, 0] / (SECONDS / 3600))
    assert rasters["south"].days == ["2025-07-02"]
    assert set(drawn["south"].hatched) == {("2025-07-02", h) for h in range(4, 24)}
    # months later: beyond MAX_DAYS of rows only the days with audio get one, the gap inside them still hatched
    write(tmp_path / "later" / "20251201_120000.wav", noise(SECONDS, RATE, 0.02, seed=96), RATE, "PCM_16")
    ingest_quick(copy, tmp_path / "later", sample_rate=RATE, segment_seconds=10.0, site="north")
    rasters, drawn = drawn_north()
    assert rasters["north"].days == ["2025-07-01", "2025-12-01"] and rasters["north"].days_spanned == 154
    assert {("2025-07-01", 4), ("2025-12-01", 11)} <= set(drawn["north"].hatched)
    assert drawn["north"].unscored == [("2025-12-01", 12)]


def test_call_density_from_reviewed_windows_brackets_the_planted_truth(planted, trained, tmp_path):
    """Windows reviewed after training (sampled per score bin, as hoplite's call density has them drawn)
    give an interval that holds the true share of windows with a planted call; with none it is the prior's."""
    from tasks.detection.density import densities, score_bins
    from tasks.detection.windows import covers

    ws, truth, _ = planted
    with database.reading(ws) as conn:
        record = detections_catalog.current_classifier(conn, "upsweep")
        windows = detections_catalog.scored_windows(conn, record["classifier_id"])
        names = detections_catalog.file_names(conn, sorted({w[1] for w in windows}))
        unreviewed = densities(conn, record)
    assert all(d.reviewed == 0 and d.high - d.low > 0.3 for d in unreviewed.values())
    scores = np.array([w[5] for w in windows])
    calls = np.array([any(covers(t, t + CALL_S, np.array([w[3]]), np.array([w[4]]))[0] for t in truth[names[w[1]]])
                      for w in windows])
    with database.reading(ws) as conn:  # what `ceta2vec suggest --for-density -k 50` picks: 10 per bin
        sample = suggest.density_sample(conn, record, 50, seed=3)
        labelled = annotations_catalog.annotations_of(conn, ["upsweep"])
    index = {(w[1], w[3]): i for i, w in enumerate(windows)}
    picked = np.array([index[(p.recording_id, p.start_s)] for p in sample])
    _, bins = score_bins(scores)
    free = np.array([not any(a.recording_id == w[1] and a.start_s < w[4] and w[3] < a.end_s for a in labelled)
                     for w in windows])  # windows nobody looked at: not the ones it was trained on
    assert free[picked].all() and len(set(picked)) == len(picked)
    assert np.bincount(bins[picked], minlength=5).tolist() == [min(10, int((free & (bins == b)).sum())) for b in range(5)]
    reviewed = tmp_path / "reviewed.csv"
    with open(reviewed, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["file", "start_s", "end_s", "label", "positive"])
        out.writerows([names[windows[i][1]], windows[i][3], windows[i][4], "upsweep", "yes" if calls[i] else "no"]
                      for i in picked)
    copy = Workspace.at(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    assert labels_io.import_annotations(copy, reviewed).problems == []
    with database.reading(copy) as conn:
        found = densities(conn, detections_catalog.current_classifier(conn, "upsweep"))
    true_density = calls.mean()
    overall = found["all sites"]
    assert overall.reviewed == len(picked) and overall.positives == int(calls[picked].sum())
    assert overall.low <= true_density <= overall.high, (overall, true_density)
    print(f"\ncall density {overall.estimate:.3f} [{overall.low:.3f}, {overall.high:.3f}] from {overall.reviewed} "
          f"reviewed windows; planted truth {true_density:.3f}")
    assert abs(overall.estimate - true_density) < 0.1 and overall.high - overall.low < 0.3


def test_label_from_similar_stores_the_segment_and_its_neighbours(tiny_workspace, tmp_path, capsys):
    from flows.cli.commands import main
    from tasks.catalog.embeddings import resolve_model
    from tasks.catalog.search import default_layer, similar

    copy = Workspace.at(tmp_path / "ws")
    shutil.copytree(tiny_workspace.root, copy.root)
    with database.reading(copy) as conn:
        query = conn.execute("SELECT min(segment_id) FROM embedded_segments").fetchone()[0]
        model = resolve_model(conn, None)
        expected = [r[0] for r in similar(conn, query, 5, default_layer(model.layers), model.model_id).rows]
    args = ["label", "--from-similar", query, "-k", "5", "--label", "upcall", "--workspace", str(copy.root)]
    for _ in range(2):  # asking again replaces what the same query gave
        assert main(args) == 0
    assert "5 annotations stored (upcall + 5)" in capsys.readouterr().out
    with database.reading(copy) as conn:
        stored = conn.execute(
            """SELECT s.segment_id, a.positive, a.source_kind FROM annotations a JOIN segments s
               ON s.recording_id = a.recording_id AND s.start_s = a.start_s AND s.start_s + s.valid_s = a.end_s
               ORDER BY a.source_row""").fetchall()
    assert [s[0] for s in stored] == expected and expected[0] == query and len(set(expected)) == 5
    assert all(p and kind == "similar" for _, p, kind in stored)
    assert main(["label", "--from-similar", query, "--workspace", str(copy.root)]) == 2  # no label: one line
    assert "needs --label" in capsys.readouterr().err


def test_classify_new_scores_only_new_windows_with_the_current_classifier(planted, trained, prefect_server, tmp_path):
    """The flow the `classify-new` deployment runs after each embed: new audio scored, nothing trained."""
    from flows.classify import classify_new
    from schemas.settings import ClassifySettings

    ws, _, _ = planted
    copy = Workspace.at(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    write(tmp_path / "new" / "20250703_000000.wav", noise(SECONDS, RATE, 0.02, seed=97), RATE, "PCM_16")
    ingest_quick(copy, tmp_path / "new", sample_rate=RATE, segment_seconds=10.0, site="north")
    with database.reading(copy) as conn:
        classifiers = conn.execute("SELECT classifier_id FROM classifiers ORDER BY 1").fetchall()
    [result] = classify_new(ClassifySettings(workspace=str(copy.root))).classifiers
    assert result["classifier_id"] == trained[0].record["classifier_id"] and result["windows_scored"] == 18
    with database.reading(copy) as conn:
        assert conn.execute("SELECT classifier_id FROM classifiers ORDER BY 1").fetchall() == classifiers
        assert detections_catalog.detection_count(conn, result["classifier_id"]) == trained[2] + 18
    [again] = classify_new(ClassifySettings(workspace=str(copy.root))).classifiers
    assert again["windows_scored"] == 0
    empty = Workspace.at(tmp_path / "fresh")
    ingest_quick(empty, tmp_path / "new", sample_rate=RATE, segment_seconds=10.0, site="north")
    assert classify_new(ClassifySettings(workspace=str(empty.root))).classifiers == []


def test_a_cell_the_explorer_guarded_against_spreadsheet_formulas_reads_as_written(tmp_path):
    """The explorer writes '=x as ''=x' (so a spreadsheet does not run it); `label` reads the name back."""
    path = tmp_path / "decisions.csv"
    path.write_text("file,start_s,end_s,label,positive\r\n'=calls.wav,1,3,upcall,yes\r\n'plain.wav,1,3,upcall,no\r\n",
                    encoding="utf-8")
    rows, problems = labels_io.read_span_csv(path)
    assert problems == [] and [(r.file, r.positive) for r in rows] == [("=calls.wav", True), ("'plain.wav", False)]
