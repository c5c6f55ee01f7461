"""The pipeline flow end to end on a tiny synthetic workspace, and the orchestration around it:
a second run that does nothing, content-keyed caching, a retry after a real lock, and two flow runs
writing one workspace at once. (`ceta2vec run` killed inside every stage: test_pipeline_kill.py.)

One module, so that `make test` (pytest-xdist, `--dist loadfile`) builds the uninterrupted run
(`pipeline_reference`) once, on one worker, for all of them; it publishes a copy for the kill test."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pipeline_corpus import settings_for
from signals import noise, write

from schemas.results import IngestResult
from schemas.settings import IngestSettings, PipelineSettings, PretrainSettings
from tasks.catalog import recordings
from tasks.workspace import Workspace, database

pytestmark = pytest.mark.usefixtures("prefect_server")

DATA_TABLES = ("recordings", "segments", "source_files", "labels", "models", "checkpoints", "train_metrics",
               "embedding_models", "embedded_segments", "frame_units", "unit_models", "unit_stats", "evaluations")


def counts(ws: Path) -> dict[str, int]:
    with database.reading(Workspace.at(ws)) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in DATA_TABLES}


def rows(ws: Path, sql: str, params=None) -> list[tuple]:
    with database.reading(Workspace.at(ws)) as conn:
        return conn.execute(sql, params or []).fetchall()


@pytest.fixture
def first_run(pipeline_reference):
    return pipeline_reference


def test_pipeline_runs_every_stage_and_publishes_its_summary(first_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    root, result, flow_run_id = first_run
    ws = root / "ws"
    assert [(s["stage"], s["outcome"]) for s in result.stages] == [
        ("ingest", "ran"), ("pretrain", "ran"), ("embed", "ran"), ("evaluate", "ran"), ("report", "ran")]
    n = counts(ws)
    assert (n["recordings"], n["segments"], n["labels"]) == (6, 12, 6)
    assert rows(ws, "SELECT run, chunks_done, steps_done FROM models") == [("tiny", 2, 6)]
    assert n["train_metrics"] == 6 and n["checkpoints"] == 2
    assert result.model_id == "tiny@2" and n["embedded_segments"] == 12 * 3  # layers 0, 1, 2
    assert rows(ws, "SELECT count(DISTINCT (segment_id, layer, pooling)), count(*) FROM segment_embeddings") == [
        (12 * 3 * 2, 12 * 3 * 2)]
    assert n["unit_models"] == 3 and n["frame_units"] == 12 * (2 + 3)  # 2 codevector groups + k-means per layer
    assert rows(ws, "SELECT DISTINCT label_column, model_id, segments, recordings FROM evaluations") == [
        ("sound", "tiny@2", 12, 6)]
    card = result.scorecard
    assert card["best_layer"] in (0, 1, 2) and 0 <= card["score"] <= 1 and card["best_baseline"]
    report = Path(result.report)
    assert report.name == "index.html" and report.exists() and report.stat().st_size > 1000
    assert result.example_segment in {r[0] for r in rows(ws, "SELECT segment_id FROM segments")}

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
    assert flow_run.name.startswith("pipeline-syn-")
    by_key = {a.key: a for a in artifacts}
    assert by_key["pipeline"].type == "markdown" and by_key["pipeline-stages"].type == "table"
    markdown = by_key["pipeline"].data
    assert f"best layer**: {card['best_layer']}".lower() in markdown.lower()
    assert report.resolve().as_uri() in markdown and result.example_segment in markdown
    stages = json.loads(by_key["pipeline-stages"].data) if isinstance(by_key["pipeline-stages"].data, str) \
        else by_key["pipeline-stages"].data
    assert [s["stage"] for s in stages] == ["ingest", "pretrain", "embed", "evaluate", "report"]
    children = {r.name.split("-")[0] for r in subflows if r.parent_task_run_id is not None}
    assert {"ingest", "pretrain", "embed", "evaluate", "report"} <= children


def test_a_second_run_does_nothing(first_run):
    from flows.pipeline import pipeline

    root, first, _ = first_run
    ws = root / "ws"
    before = counts(ws)
    checkpoints = sorted(p.name for p in (ws / "checkpoints" / "tiny").iterdir())
    frame_files = sorted(p.name for p in ws.rglob("frames/*.parquet"))
    report = Path(first.report).stat().st_mtime_ns
    result = pipeline(settings_for(root, ws))
    assert [(s["stage"], s["outcome"]) for s in result.stages] == [
        ("ingest", "nothing new"), ("pretrain", "nothing new"), ("embed", "nothing new"), ("evaluate", "up to date"),
        ("report", "up to date")]
    assert counts(ws) == before
    assert sorted(p.name for p in (ws / "checkpoints" / "tiny").iterdir()) == checkpoints
    assert sorted(p.name for p in ws.rglob("frames/*.parquet")) == frame_files
    assert result.report == first.report and Path(first.report).stat().st_mtime_ns == report
    assert result.scorecard == first.scorecard


def test_pipeline_settings_map_onto_every_stage():
    from tasks.pipeline.plan import (
        embed_settings,
        evaluate_settings,
        ingest_settings,
        pretrain_settings,
        report_settings,
    )

    p = PipelineSettings(sources=["a", "b"], workspace="/tmp/x", site="LK", labels="l.csv", label_column="species",
                         preset="small", chunks=7, steps_per_chunk=11, batch_size=3, crop_seconds=2.5, units_k=9,
                         segment_seconds=5.0, sample_rate=8000, seed=4, model_overrides={"num_hidden_layers": 2})
    i = ingest_settings(p)
    assert (i.sources, i.site, i.labels, i.sample_rate, i.segment_seconds, i.hop_seconds) == (
        ["a", "b"], "LK", "l.csv", 8000, 5.0, 5.0)
    t = pretrain_settings(p)
    assert (t.run_name, t.preset, t.chunks, t.steps_per_chunk, t.batch_size, t.crop_seconds, t.seed,
            t.model_overrides) == ("small", "small", 7, 11, 3, 2.5, 4, {"num_hidden_layers": 2})
    e = embed_settings(p)
    assert (e.run, e.units_k, e.seed) == ("small", 9, 4)
    v = evaluate_settings(p, "small@7")
    assert (v.label_column, v.model, v.labels) == ("species", "small@7", None)
    r = report_settings(p, "small@7")
    assert (r.model, r.label_column) == ("small@7", "species")
    assert all(s.workspace == "/tmp/x" for s in (i, t, e, v, r))
    bare = PipelineSettings(sources=["a"], run="mine", report=False)
    assert evaluate_settings(bare, "mine@3") is None and report_settings(bare, "mine@3") is None
    assert pretrain_settings(bare).run == "mine"
    assert (ingest_settings(bare).task_runner, embed_settings(bare).task_runner, pretrain_settings(bare).nproc) == (
        "threads", "threads", 1)
    # scale-out: the Dask cluster reaches both fan-outs, --nproc the trainer, --storage the ingest
    scaled = PipelineSettings(sources=["a"], dask_address="tcp://10.0.0.5:8786", dask_workers=5, nproc=2,
                              storage="s3://bucket/segments")
    i, e, t = ingest_settings(scaled), embed_settings(scaled), pretrain_settings(scaled)
    assert (i.task_runner, i.dask_address, i.dask_workers, i.storage) == ("dask", "tcp://10.0.0.5:8786", 5, "s3://bucket/segments")
    assert (e.task_runner, e.dask_address, e.dask_workers) == ("dask", "tcp://10.0.0.5:8786", 5)
    assert t.nproc == 2
    with pytest.raises(ValueError, match="dask_address is for task_runner 'dask'"):
        PipelineSettings(sources=["a"], dask_address="tcp://x:1", task_runner="processes")


def test_the_run_command_takes_its_options_from_pipeline_settings():
    from flows.cli.commands import _settings, build_parser

    args = build_parser().parse_args(["run", "data/sample", "more/", "--labels", "l.csv", "--label-column", "species",
                                      "--preset", "tiny", "--chunks", "3", "--steps-per-chunk", "30", "--no-report",
                                      "--model-overrides", "num_hidden_layers=2", "--workspace", "/tmp/w"])
    settings = _settings(PipelineSettings, args)
    assert settings == PipelineSettings(sources=["data/sample", "more/"], labels="l.csv", label_column="species",
                                        preset="tiny", chunks=3, steps_per_chunk=30, report=False,
                                        model_overrides={"num_hidden_layers": 2}, workspace="/tmp/w")


def labelled_set(ws: Path, column: str = "sound"):
    from tasks.catalog.evaluations import labelled_segments

    with database.reading(Workspace.at(ws)) as conn:
        return labelled_segments(conn, column, None)


def score_states(ws: Path, labelled, model_id: str = "tiny@2") -> dict[str, tuple[str, object]]:
    """Run the scorecard tasks as the evaluate flow does; their state names and results."""
    from prefect import flow

    from flows.evaluate import score_baselines, score_layer, score_units

    @flow
    def scores() -> dict:
        root = str(Workspace.at(ws).root)
        states = {"layer 1": score_layer(root, model_id, 1, labelled, 0, 10, return_state=True),
                  "units": score_units(root, model_id, labelled, return_state=True),
                  "baselines": score_baselines(root, model_id, labelled, 0, 10, return_state=True)}
        return {k: (s.name, s.result()) for k, s in states.items()}

    return scores()


def test_scorecard_tasks_are_cached_by_content_not_by_path_or_run(first_run, tmp_path):
    root, _, _ = first_run
    ws = tmp_path / "copy"
    shutil.copytree(root / "ws", ws)  # another path, another flow run: the same content
    cached = score_states(ws, labelled_set(ws))
    assert {k: v[0] for k, v in cached.items()} == {"layer 1": "Cached", "units": "Cached", "baselines": "Cached"}

    # the same recordings with other labels: new content, so every scorecard is computed again
    relabelled = root / "relabelled.csv"
    with open(relabelled, "w", newline="") as handle:
        csv.writer(handle).writerows([["file", "sound"]] + [[f"r{i}.wav", "tone" if i < 3 else "clicks"] for i in range(6)])
    with database.writing(Workspace.at(ws)) as conn:
        from tasks.ingest.labels import read_labels

        recordings.apply_labels_file(conn, str(relabelled), read_labels(relabelled))
    changed = labelled_set(ws)
    computed = score_states(ws, changed)
    assert {k: v[0] for k, v in computed.items()} == {"layer 1": "Completed", "units": "Completed",
                                                      "baselines": "Completed"}
    again = score_states(ws, changed)
    assert {k: v[0] for k, v in again.items()} == {"layer 1": "Cached", "units": "Cached", "baselines": "Cached"}
    assert repr(again["layer 1"][1]) == repr(computed["layer 1"][1])  # the stored result, as computed


def test_a_task_retries_after_another_process_held_the_lock(first_run, tmp_path, monkeypatch):
    """prepare-run's first attempt meets a DuckDB lock held by another process past the wait and
    fails; the holder lets go once Prefect has scheduled the retry, and the retry succeeds."""
    from prefect import flow

    from flows.pretrain import prepare_run

    root, _, _ = first_run
    ws = tmp_path / "ws"
    shutil.copytree(root / "ws", ws)
    monkeypatch.setenv("CETA2VEC_LOCK_WAIT_S", "0.5")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
         "sys.stdin.read(); c.close()", str(ws / "ceta2vec.duckdb")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"

    retry_scheduled = threading.Event()
    messages: list[str] = []

    class Watch(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())
            if "Retry 1/" in record.getMessage():
                retry_scheduled.set()

    def release():
        retry_scheduled.wait(600)
        holder.stdin.close()  # the holder closes its connection and exits

    watch = Watch(level=logging.INFO)
    logging.getLogger("prefect.task_runs").addHandler(watch)
    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    try:
        @flow
        def prepare():
            state = prepare_run(PretrainSettings(workspace=str(ws), run="tiny", preset="tiny", chunks=2,
                                                 steps_per_chunk=3, batch_size=4, crop_seconds=1.0,
                                                 model_overrides={"num_hidden_layers": 2}), return_state=True)
            return state.name, state.result().run

        name, model_id = prepare()
    finally:
        logging.getLogger("prefect.task_runs").removeHandler(watch)
        retry_scheduled.set()
        holder.wait(60)
    assert (name, model_id) == ("Completed", "tiny")
    failed = [m for m in messages if "Retry 1/" in m]
    assert len(failed) == 1 and "lock" in failed[0].lower(), messages


def test_two_flow_runs_at_once_on_one_workspace(tmp_path, monkeypatch):
    """Two ingest runs of different folders into one new workspace, started together: both finish,
    every recording and segment is there once. Their DuckDB writes take turns through the
    ceta2vec-duckdb-writer global concurrency limit (one process here, so the file lock cannot)."""
    from prefect.client.orchestration import get_client

    from flows.ingest import ingest
    from flows.runtime.limits import DUCKDB_WRITER
    from flows.runtime.server import OWN_SERVER_ENV

    monkeypatch.delenv(OWN_SERVER_ENV, raising=False)  # the test server as a shared one: its slots, not a lock

    for i in range(8):
        folder = tmp_path / ("a" if i % 2 else "b")
        write(folder / f"f{i}.wav", noise(5.0, 16000, 0.05, seed=10 + i), 16000, "PCM_16")
    ws = tmp_path / "ws"
    results: dict[str, object] = {}

    def run(name: str):
        try:
            results[name] = ingest(IngestSettings(sources=[str(tmp_path / name)], workspace=str(ws),
                                                  segment_seconds=2.0, site=name, workers=1))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            results[name] = exc

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert all(isinstance(r, IngestResult) for r in results.values()) and len(results) == 2, results
    assert results["a"].ingested == results["b"].ingested == 4
    assert rows(ws, "SELECT site, count(*) FROM recordings GROUP BY site ORDER BY site") == [("a", 4), ("b", 4)]
    assert rows(ws, "SELECT count(*), count(DISTINCT segment_id) FROM segments") == [(24, 24)]  # 3 per 5-s file
    assert rows(ws, "SELECT count(*) FROM source_files WHERE status = 'ingested'") == [(8,)]
    assert rows(ws, "SELECT count(*) FROM ingest_runs WHERE finished_at IS NOT NULL") == [(2,)]
    assert len(list((ws / "segments").rglob("*.parquet"))) == 8 and not list((ws / "staging").iterdir())
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(DUCKDB_WRITER)
    assert limit.limit == 1 and limit.active_slots == 0
