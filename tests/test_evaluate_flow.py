"""The evaluate flow end to end on a workspace whose classes are audibly different."""

import json
from pathlib import Path

import numpy as np
import pytest
from quick_ingest import labelled_tiny_model
from signals import click_train, noise, tone, write

from schemas.settings import EmbedSettings, EvaluateSettings
from tasks.catalog import recordings
from tasks.catalog.evaluations import labelled_segments
from tasks.workspace import database

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def tones_and_clicks(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    rows = []
    for i in range(8):
        kind = "tone" if i % 2 == 0 else "clicks"
        x = (tone(600 + 50 * i, 4.0, 16000, 0.3) if kind == "tone" else click_train(4.0, 16000, 0.05, 0.5))
        write(root / "rec" / f"r{i}.wav", x + noise(4.0, 16000, 0.01, seed=i), 16000, "PCM_16")
        rows.append([f"r{i}.wav", "", "", kind])
    rows.append(["r1.wav", "1.0", "2.5", "whistle"])  # an event inside one recording, for --background
    ws = labelled_tiny_model(root, ["file", "start_s", "end_s", "sound"], rows, "ev", apply_labels=False)
    from flows.embed import embed

    embed(EmbedSettings(workspace=str(ws.root), units_k=4, kmeans_sample_frames=300))
    return root, ws


def test_scorecard_with_baselines_in_duckdb_figure_and_flow_result(tones_and_clicks):
    from flows.evaluate import evaluate

    root, ws = tones_and_clicks
    result = evaluate(EvaluateSettings(workspace=str(ws.root), labels=str(root / "labels.csv"), label_column="sound",
                                       bootstrap=30))
    assert result.recordings == 8 and result.segments == 15  # r1's middle segment has two values
    assert result.ambiguous == 1 and result.class_counts["tone"] == {"segments": 8, "recordings": 4}
    model = result.models["ev@1"]
    figures = ws.reports_dir / "ev-1" / "figures"  # inside the report folder, where the report links it
    assert (figures / "evaluate-sound.png").exists() and (figures / "evaluate-sound.svg").exists()
    with database.reading(ws) as conn:
        features = {r[0] for r in conn.execute("SELECT DISTINCT features FROM evaluations").fetchall()}
        logmel = dict(conn.execute("SELECT metric, value FROM evaluations WHERE features = 'log-mel stats'").fetchall())
        intervals = conn.execute("SELECT count(*) FROM evaluations WHERE ci_low > value OR ci_high < value").fetchone()[0]
        auc = conn.execute("SELECT count(*) FROM evaluations WHERE metric = 'roc_auc'").fetchone()[0]
    assert {"layer 0", "layer 1", "layer 2", "log-mel stats", "MFCC stats", "random weights (best layer)",
            "codevector group 0", "k-means units layer 1"} <= features
    # tones and click trains are easy for log-mel statistics: the baselines compute real features
    assert logmel["knn1_accuracy"] > 0.9 and logmel["probe_macro_f1"] > 0.9
    assert intervals == 0 and auc > 0  # two classes: ROC-AUC reported
    assert model.best_layer in (0, 1, 2)
    # the CLI says in words where the best layer stands against each baseline
    from flows.cli.console import console, print_scorecard

    with console.capture() as printed:
        print_scorecard(result)
    verdicts = [line for line in printed.get().splitlines() if line.startswith("verdict: ")]
    assert any("log-mel" in line for line in verdicts) and any("MFCC" in line for line in verdicts), verdicts


def test_background_label_for_event_labelled_recordings(tones_and_clicks):
    root, ws = tones_and_clicks
    with database.writing(ws) as conn:
        from tasks.ingest.labels import read_labels

        recordings.apply_labels_file(conn, str(root / "labels.csv"), read_labels(root / "labels.csv"))
        plain = labelled_segments(conn, "sound", None)
        with_background = labelled_segments(conn, "sound", "quiet")
    assert "quiet" not in plain.labels
    # r1's event covers its middle segment; r1's other segments are recording-level 'clicks' already,
    # so the background only reaches segments without any value of the column
    assert len(with_background.segment_ids) >= len(plain.segment_ids)
    assert np.all(np.isin(with_background.labels, ["tone", "clicks", "quiet"]))


def test_refresh_redraws_the_report_stamps_it_and_then_skips_it(tones_and_clicks):
    """refresh once crashed after drawing the report (it stamped with a str where pages were due):
    a report drawn by refresh must be stamped, so the next refresh finds it up to date."""
    from flows.refresh import refresh
    from schemas.settings import RefreshSettings
    from tasks.ingest.labels import read_labels

    root, ws = tones_and_clicks
    with database.writing(ws) as conn:
        recordings.apply_labels_file(conn, str(root / "labels.csv"), read_labels(root / "labels.csv"))
    stamp = ws.reports_dir / ".pipeline-ev.json"
    stamp.unlink(missing_ok=True)
    small = dict(bootstrap=20, atlas_units=3, exemplars=1, media_points=6, features_budget=0)  # what refresh passes on
    first = refresh(RefreshSettings(workspace=str(ws.root), label_columns=["sound"], **small))
    steps = {row["step"]: row for row in first.steps}
    assert steps["report"]["outcome"] == "ran"
    assert steps["report"]["detail"].endswith("index.html") and Path(steps["report"]["detail"]).exists()
    assert stamp.exists() and json.loads(stamp.read_text())["report"] == steps["report"]["detail"]
    unit_pages = [p.name.rsplit("-unit", 1)[0] for p in (Path(steps["report"]["detail"]).parent / "units").glob("*.html")]
    assert unit_pages and max(unit_pages.count(inventory) for inventory in set(unit_pages)) <= 3  # atlas_units=3

    again = {row["step"]: row for row in refresh(RefreshSettings(workspace=str(ws.root), label_columns=["sound"],
                                                                 **small)).steps}
    assert again["embed"]["outcome"] == "nothing new"
    assert again["evaluate sound"]["outcome"] == "up to date"
    assert again["report"]["outcome"] == "up to date"


def test_every_checkpoint_scored_draws_the_learning_curve(tones_and_clicks, tmp_path):
    """`evaluate --all-checkpoints` scores each checkpoint; the report's learning curve reads them by
    hours of audio seen, with the pooled probe and the baselines scored beside each."""
    import shutil

    from flows.evaluate import evaluate
    from quick_ingest import train_tiny_chunk
    from schemas.settings import ReportSettings
    from tasks.catalog.evaluations import learning_curve
    from tasks.report.drawing import Drawing, FigureWriter
    from tasks.report.features_report import FeatureRun
    from tasks.report.inputs import gather
    from tasks.report.learning_curve import slope_per_hour
    from tasks.report.sections import draw_sections, learning_curve_section
    from tasks.workspace import Workspace

    root, original = tones_and_clicks
    ws = Workspace.at(shutil.copytree(original.root, tmp_path / "ws"))
    train_tiny_chunk(ws, "ev")  # a second chunk of the same run
    from flows.embed import embed

    embed(EmbedSettings(workspace=str(ws.root), run="ev", units_k=4, kmeans_sample_frames=300,
                        poolings=["mean", "std", "max"]))
    result = evaluate(EvaluateSettings(workspace=str(ws.root), labels=str(root / "labels.csv"), label_column="sound",
                                       bootstrap=20, all_checkpoints=True, model="ev@2"))
    assert sorted(result.models) == ["ev@1", "ev@2"]
    scored = result.models["ev@2"].rows
    assert "all layers" in {r["features"] for r in scored}
    assert all("probe_pooled_macro_f1" in r["metrics"] for r in scored if r["kind"] == "model"
               and (r["features"].startswith("layer ") or r["features"] == "all layers"))
    with database.reading(ws) as conn:
        curve = learning_curve(conn, "ev", "sound", "probe_pooled_macro_f1")
        seen = conn.execute("SELECT sum(audio_seconds) FROM train_metrics WHERE run = 'ev' AND step < 2").fetchone()[0]
    assert [p.chunk for p in curve] == [1, 2] and [p.step for p in curve] == [2, 4]
    assert curve[0].hours_seen == pytest.approx(seen / 3600) and curve[1].hours_seen > curve[0].hours_seen
    assert all(0 <= p.best[0] <= 1 and "log-mel stats" in p.baselines for p in curve)
    assert "random weights layer 0" not in curve[0].baselines
    expected_slope = np.polyfit([p.hours_seen for p in curve], [p.best[0] for p in curve], 1)[0]
    assert slope_per_hour(curve) == pytest.approx(expected_slope)

    settings = ReportSettings(workspace=str(ws.root), model="ev@2", media_points=0, frame_points=0, atlas_units=2,
                              exemplars=1, neighbours=2, umap_neighbors=4, features_budget=0)
    inputs = gather(ws, settings)
    out = tmp_path / "report"
    drawing = Drawing(out, FigureWriter(out), FeatureRun(inputs.workspace_root, inputs.export_dir, 0.0, 0, out,
                                                         inputs.mel, len(inputs.atlas_inventories)), None,
                      lambda message, fraction: None)
    [section] = draw_sections(inputs, drawing, (learning_curve_section,))
    assert section.key == "learning-curve" and "per hour" in section.intro
    assert [f.key for f in section.figures] == ["learning-curve"] and (out / section.figures[0].png).is_file()
    assert [row["step"] for row in section.tables[0]] == [2, 4]
