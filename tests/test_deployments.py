"""Deployments on a real Prefect server: prefect.yaml deployed with `prefect deploy`, and every
deployment served by `ceta2vec serve` (a subprocess), with runs started through the API, by the
server's scheduler and by an event trigger."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
import yaml
from signals import tone, write

from flows.runtime.completion import COMPLETED_WITH_NEW_DATA
from deployments.definitions import REFRESH_TAG, TAG, yaml_definitions

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAMES = {"ingest/watch-folder", "continue-pretraining/nightly", "refresh/after-new-data", "score-new/classify-new",
         "report/weekly"}
WAIT_S = 240  # generous: on a busy 2-core machine each served run imports torch in a fresh process


def test_prefect_yaml_says_what_the_definitions_say():
    entries = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]
    expected = [d.yaml_entry() for d in yaml_definitions()]
    assert [e["name"] for e in entries] == [e["name"] for e in expected]
    for entry, wanted in zip(entries, expected):
        assert entry == wanted, entry["name"]


def _flow_run_event(flow: str, state: str, tags: tuple[str, ...] = ()):
    """The event a Prefect server receives when a run of `flow` reaches `state`."""
    from datetime import datetime, timezone
    from uuid import uuid4

    from prefect.server.events.schemas.events import ReceivedEvent

    related = [{"prefect.resource.id": f"prefect.flow.{uuid4()}", "prefect.resource.role": "flow",
                "prefect.resource.name": flow}]
    related += [{"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"} for tag in tags]
    return ReceivedEvent(event=f"prefect.flow-run.{state}", resource={"prefect.resource.id": f"prefect.flow-run.{uuid4()}"},
                         related=related, occurred=datetime.now(timezone.utc), id=uuid4())


def _completion_event(flow: str, tags: list[str]):
    """The event a run of `flow` sends itself once it completed with new data (flows/runtime/completion.py)."""
    from datetime import datetime, timezone
    from uuid import uuid4

    from prefect.client.schemas.objects import FlowRun
    from prefect.server.events.schemas.events import ReceivedEvent

    from flows.runtime.completion import completion_event

    run = FlowRun(flow_id=uuid4(), name=f"{flow}-T", tags=tags)
    return ReceivedEvent(**completion_event(flow, run), occurred=datetime.now(timezone.utc), id=uuid4())


def test_classify_new_runs_the_scoring_flow_after_every_embed_with_new_vectors():
    """Definition level: the deployment's flow, parameters and trigger, matched the way the Prefect server
    matches events (its own EventTrigger), and the RunnerDeployment `serve` builds from it. The trigger
    follows the embed flow's own completion event, which automations see at once, not Prefect's
    `prefect.flow-run.Completed`, which the server can hold for its 15-minute lookback."""
    from prefect.server.events.schemas.automations import EventTrigger

    from flows.embed import embed
    from flows.runtime.completion import announce_completion, brings_new_data
    from schemas.results import EmbedResult
    from schemas.settings import ClassifySettings

    by_name = {d.name: d for d in yaml_definitions()}
    classify_new = by_name["classify-new"]
    assert classify_new.flow_name == "score-new" and classify_new.schedules == ()
    assert ClassifySettings(**classify_new.parameters["settings"]).workspace == "{{ $CETA2VEC_WORKSPACE }}"
    assert classify_new.concurrency_limit == {"limit": 1, "collision_strategy": "ENQUEUE"}  # one after another
    [entry] = classify_new.triggers
    assert entry["expect"] == [COMPLETED_WITH_NEW_DATA]
    trigger = EventTrigger.model_validate({k: v for k, v in entry.items() if k != "name"})
    assert trigger.covers(_completion_event("embed", [TAG]))  # `ceta2vec embed` against the server
    assert trigger.covers(_completion_event("embed", [TAG, REFRESH_TAG]))  # the refresh's embed too
    assert not trigger.covers(_flow_run_event("embed", "Completed"))  # held 15 min for a scheduled refresh's runs
    assert not trigger.covers(_flow_run_event("embed", "Failed"))
    assert not trigger.covers(_completion_event("ingest", [TAG, REFRESH_TAG]))
    refresh = EventTrigger.model_validate({k: v for k, v in by_name["after-new-data"].triggers[0].items() if k != "name"})
    assert not refresh.covers(_completion_event("embed", [TAG, REFRESH_TAG]))  # scoring new windows starts no refresh
    # the embed flow sends the event wherever it runs, once it embedded something new
    assert announce_completion in embed.on_completion_hooks
    embedded = lambda segments: EmbedResult(  # noqa: E731
        model_id="r@1", checkpoint="c", layers=[0], dim=8, segments_embedded=segments, segments_in_model=segments,
        vectors_in_model=segments, audio_seconds=0.0, real_time_factor=None, kmeans_units_assigned={},
        unit_stats_rows=0)
    assert brings_new_data(embedded(3)) and not brings_new_data(embedded(0))
    runner = classify_new.to_runner()
    assert runner.name == "classify-new" and runner.entrypoint == "flows.classify.classify_new"
    assert [t.expect for t in runner.triggers] == [{COMPLETED_WITH_NEW_DATA}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """The whole process group: SIGINT first (serve pauses its deployments), then harder."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    try:  # children of the group that outlived its leader (flow runs the runner started)
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _until(condition, what: str, timeout: float = WAIT_S, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(every)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `prefect server start` on a free port, its scheduler looping every 2 s."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2", "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "2",
           "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "3", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    process = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"prefect server exited: {(home / 'server.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        _until(healthy, "the Prefect server", timeout=180)
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: url}):  # this process's client (the checks) talks to it too
            yield {"url": url, "env": {**env, "PREFECT_API_URL": url}, "home": home}
    finally:
        _stop(process)
        log.close()


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _deployments(client) -> dict:
    return {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()}


def _automations_of(client, deployment_id) -> list:
    return [a for a in client.read_automations()
            if any(getattr(action, "deployment_id", None) == deployment_id for action in a.actions)]


@pytest.mark.slow
def test_prefect_deploy_creates_the_deployments_schedules_and_trigger(server, tmp_path):
    env = {**server["env"], "CETA2VEC_WATCH_FOLDER": str(tmp_path / "incoming"),
           "CETA2VEC_WORKSPACE": str(tmp_path / "ws")}
    subprocess.run([str(BIN / "prefect"), "work-pool", "create", "ceta2vec", "--type", "process"],
                   env=env, cwd=ROOT, check=True, capture_output=True, timeout=120)
    done = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml",
                           "--all"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with _client() as client:
        found = _deployments(client)
        assert set(found) == NAMES
        watch = found["ingest/watch-folder"]
        assert watch.parameters == {"settings": {"sources": [str(tmp_path / "incoming")], "workspace": str(tmp_path / "ws")}}
        assert watch.work_pool_name == "ceta2vec" and set(watch.tags) == {TAG, REFRESH_TAG}
        schedules = {d: [(s.slug, s.active, getattr(s.schedule, "cron", None)) for s in found[d].schedules] for d in found}
        assert schedules == {"ingest/watch-folder": [("watch-folder", True, "*/15 * * * *")],
                             "continue-pretraining/nightly": [("nightly", False, "0 2 * * *")],
                             "refresh/after-new-data": [], "score-new/classify-new": [],
                             "report/weekly": [("weekly", True, "0 6 * * 1")]}
        assert found["continue-pretraining/nightly"].parameters["more_chunks"] == 1
        automations = _automations_of(client, found["refresh/after-new-data"].id)
        assert len(automations) == 1
        trigger = automations[0].trigger
        assert trigger.expect == {COMPLETED_WITH_NEW_DATA}  # the runs' own event (flows/runtime/completion.py)
        assert watch.entrypoint == "deployments.served_flows.ingest"  # the flow that sends it
        assert trigger.model_dump(mode="json")["match_related"] == [
            {"prefect.resource.role": "flow", "prefect.resource.name": ["ingest", "continue-pretraining"]},
            {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{REFRESH_TAG}"}]
        # Leave the server to the serve test: the same names, served instead of pooled.
        for deployment in found.values():
            client.delete_resource_owned_automations(f"prefect.deployment.{deployment.id}")
            client.delete_deployment(deployment.id)


def _serve(server, log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "ceta2vec"), "serve", *args], env=server["env"], cwd=ROOT,
                            stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True)


def _query(workspace: Path, sql: str) -> list[tuple]:
    """Short read-only look at the served workspace (a served ingest may be writing: retry the lock)."""
    for _ in range(120):
        try:
            with duckdb.connect(str(workspace / "ceta2vec.duckdb"), read_only=True) as conn:
                return conn.execute(sql).fetchall()
        except duckdb.IOException:
            time.sleep(0.5)
    raise AssertionError("the workspace stayed locked")


def _artifacts(client, flow_run_id) -> list:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def _table(artifact) -> list[dict]:
    data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    return data if isinstance(data, list) else [dict(zip(data["columns"], row)) for row in data["data"]]


def _runs_of(client, deployment_id) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def _final(client, run_id):
    run = client.read_flow_run(run_id)
    return run if run.state and run.state.is_final() else None


@pytest.mark.slow
def test_served_deployments_run_on_demand_on_schedule_and_on_trigger(server, tmp_path):
    from prefect.deployments import run_deployment

    rate = 16000
    incoming, workspace, logs = tmp_path / "incoming", tmp_path / "ws", tmp_path / "serve.log"
    write(incoming / "first.wav", tone(440, 12.0, rate), rate)
    serving = _serve(server, logs, str(incoming), "--workspace", str(workspace), "--site", "T",
                     "--ingest-cron", "0 0 1 1 *")
    try:
        with _client() as client:
            # (a) on demand, through the API
            found = _until(lambda: (lambda d: d if set(d) >= NAMES else None)(_deployments(client)), "served deployments")
            assert set(found) == NAMES
            run = run_deployment("ingest/watch-folder", timeout=WAIT_S)
            assert run.state.is_completed(), run.state
            assert run.name == f"ingest-T-{run.expected_start_time:%Y-%m-%d}"
            assert _query(workspace, "SELECT file_name, site FROM recordings") == [("first.wav", "T")]
            assert _query(workspace, "SELECT count(*) FROM segments") == [(2,)]
            artifacts = _artifacts(client, run.id)
            summary = [a for a in artifacts if a.key == "ingest-summary"]
            assert [a.type for a in summary] == ["table"]
            table = {row["metric"]: row["value"] for row in _table(summary[0])}
            assert table["ingested"] == 1 and table["failed"] == 0
            assert [float(a.data) for a in artifacts if a.type == "progress"] == [100.0]  # files ingested

            # (c) its completion starts the refresh deployment (nothing to embed yet: it says so)
            refresh_id = found["refresh/after-new-data"].id
            refresh_run = _until(lambda: _runs_of(client, refresh_id), "a triggered refresh run")[0]
            refresh_run = _until(lambda: _final(client, refresh_run.id), "the refresh run to finish")
            assert refresh_run.state.is_completed(), refresh_run.state
            steps = [_table(a) for a in _artifacts(client, refresh_run.id) if a.key == "refresh-summary"]
            assert steps == [[{"step": "plan", "outcome": "stopped",
                               "detail": f"no trained checkpoint in {workspace} yet"}]]

            before = {name: (d.id, {s.slug: (s.id, s.active, s.schedule) for s in d.schedules}) for name, d in found.items()}
        _stop(serving)

        # Restart with the watch folder on a 6 s interval: the same deployments, updated in place.
        serving = _serve(server, logs, str(incoming), "--workspace", str(workspace), "--site", "T", "--ingest-every", "6")
        with _client() as client:
            def restarted():
                deployments = _deployments(client)
                watch = deployments.get("ingest/watch-folder")
                ok = watch and not watch.paused and watch.schedules and watch.schedules[0].schedule.interval
                return deployments if ok else None

            after = _until(restarted, "the restarted serve to update the schedule")
            assert set(after) == NAMES and len(client.read_deployments()) == len(NAMES)
            for name, deployment in after.items():
                assert deployment.id == before[name][0]
                schedules = {s.slug: (s.id, s.active, s.schedule) for s in deployment.schedules}
                if name == "ingest/watch-folder":
                    assert schedules["watch-folder"][0] == before[name][1]["watch-folder"][0]  # same schedule, new interval
                    assert schedules["watch-folder"][2].interval.total_seconds() == 6
                else:
                    assert schedules == before[name][1]
            # serve replaces the trigger's automation after updating the schedules: wait for it
            automations = _until(lambda: _automations_of(client, after["refresh/after-new-data"].id),
                                 "the restarted serve to recreate the refresh trigger")
            assert len(automations) == 1

            # (b) a file dropped into the watch folder is ingested by the next scheduled run, alone
            staged = tmp_path / "second.wav"
            write(staged, tone(880, 5.0, rate), rate)
            shutil.move(staged, incoming / "second.wav")  # whole, at once: a scheduled run never sees half a file
            # The run's own row closes after the file's rows land: wait for the finished run, not the file.
            finished = ("SELECT flow_run_id, ingested, skipped, failed FROM ingest_runs "
                        "WHERE finished_at IS NOT NULL ORDER BY started_at")
            _until(lambda: _query(workspace, "SELECT 1 FROM source_files WHERE path LIKE '%second.wav'"),
                   "the scheduled ingest of the new file")
            runs = _until(lambda: (lambda r: r if sum(1 for x in r if x[1]) >= 2 else None)(_query(workspace, finished)),
                          "the scheduled ingest run to finish")
            assert [r[1] for r in runs if r[1]] == [1, 1], runs        # each file ingested once, by one run
            assert all(r[3] == 0 for r in runs)
            assert all(r[2] == 1 for r in runs[1:] if r[1]), runs      # the run that took the new file skipped the old
            assert _query(workspace, "SELECT file_name FROM recordings ORDER BY 1") == [("first.wav",), ("second.wav",)]
            took_it = client.read_flow_run([r[0] for r in runs if r[1]][-1])
            assert took_it.deployment_id == after["ingest/watch-folder"].id and took_it.auto_scheduled
    finally:
        _stop(serving)
        print((logs.read_text() if logs.exists() else "")[-4000:])


def _completed_runs_of(client, deployment_id) -> list:
    return sorted((r for r in _runs_of(client, deployment_id) if r.state and r.state.is_completed()),
                  key=lambda r: r.start_time)


@pytest.mark.slow
def test_scheduled_ingests_with_new_files_each_start_a_refresh(server, tmp_path):
    """The watch folder's own schedule, not a run started through the API: Prefect's Completed event
    of a scheduled run reaches automations only after 15 minutes (flows/runtime/completion.py)."""
    rate = 16000
    incoming, workspace, logs = tmp_path / "incoming", tmp_path / "ws", tmp_path / "serve.log"
    with _client() as client:  # a clean slate: no runs or automations of deployments served before
        for deployment in client.read_deployments():
            client.delete_resource_owned_automations(f"prefect.deployment.{deployment.id}")
            client.delete_deployment(deployment.id)
    write(incoming / "first.wav", tone(440, 12.0, rate), rate)
    serving = _serve(server, logs, str(incoming), "--workspace", str(workspace), "--site", "T", "--ingest-every", "5")
    try:
        with _client() as client:
            found = _until(lambda: (lambda d: d if set(d) >= NAMES else None)(_deployments(client)), "served deployments")
            watch_id, refresh_id = found["ingest/watch-folder"].id, found["refresh/after-new-data"].id
            first = _until(lambda: _completed_runs_of(client, refresh_id), "a refresh after the first scheduled ingest")

            staged = tmp_path / "second.wav"
            write(staged, tone(880, 5.0, rate), rate)
            shutil.move(staged, incoming / "second.wav")
            both = _until(lambda: (lambda r: r if len(r) >= 2 else None)(_completed_runs_of(client, refresh_id)),
                          "a refresh after the scheduled ingest of the second file")
            ingests = _completed_runs_of(client, watch_id)
            # Ingests that found nothing new ask for no refresh: once two more of them completed, still two.
            _until(lambda: len(_completed_runs_of(client, watch_id)) >= len(ingests) + 2, "two more scheduled ingests")
            refreshes = _completed_runs_of(client, refresh_id)
            ingests = _completed_runs_of(client, watch_id)
            took = [r[0] for r in _query(workspace, "SELECT flow_run_id FROM ingest_runs WHERE ingested > 0 "
                                                    "ORDER BY started_at")]
            took_ended = [client.read_flow_run(run_id).end_time for run_id in took]
    finally:
        _stop(serving)
        print((logs.read_text() if logs.exists() else "")[-4000:])

    assert first[0].id == both[0].id and len(refreshes) == 2, [r.name for r in refreshes]
    assert all(r.created_by is not None and r.created_by.type == "AUTOMATION" for r in refreshes)
    assert ingests and all(r.auto_scheduled for r in ingests)  # the schedule's runs, as a served watch folder's
    assert len(took) == 2 and {str(r.id) for r in ingests} >= set(took)
    assert _query(workspace, "SELECT file_name FROM recordings ORDER BY 1") == [("first.wav",), ("second.wav",)]
    # each refresh started after the ingest that asked for it
    assert all(refresh_run.start_time >= ended for refresh_run, ended in zip(refreshes, took_ended))


def test_the_refresh_trigger_matches_the_completion_event_of_a_refreshing_run_only():
    """Definition level, matched as the Prefect server matches events (its own EventTrigger): the
    event a served ingest or pretraining run sends once it completed with new data."""
    from prefect.server.events.schemas.automations import EventTrigger

    from flows.runtime.completion import brings_new_data
    from schemas.results import IngestResult

    refresh = {d.name: d for d in yaml_definitions()}["after-new-data"]
    trigger = EventTrigger.model_validate({k: v for k, v in refresh.triggers[0].items() if k != "name"})
    event = _completion_event

    assert trigger.covers(event("ingest", [TAG, REFRESH_TAG, "auto-scheduled"]))
    assert trigger.covers(event("continue-pretraining", [TAG, REFRESH_TAG]))
    assert not trigger.covers(event("ingest", [TAG]))  # `ceta2vec ingest`, or inside `ceta2vec run`
    assert not trigger.covers(event("embed", [TAG, REFRESH_TAG]))
    assert not trigger.covers(_flow_run_event("ingest", "Completed", (REFRESH_TAG,)))  # held 15 min for scheduled runs

    def ingested(files: int, segments: int) -> IngestResult:
        return IngestResult(run_id="r", workspace="/ws", files_seen=files + 1, ingested=files, skipped=1, duplicates=0,
                            failed=0, warnings=0, segments_added=segments, audio_seconds_added=0.0, bytes_added=0,
                            bytes_per_audio_hour=0, recordings_found=files + 1, failures=[], label_warnings=[],
                            workspace_summary={})

    assert brings_new_data(ingested(1, 2)) and not brings_new_data(ingested(0, 0)) and brings_new_data(None)
