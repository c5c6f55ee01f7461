"""Stage progress people can read: a rich bar with an ETA on a terminal, nothing drawn when piped,
and the Prefect progress artifact showing the same count (a real Prefect server)."""

from __future__ import annotations

import io
import re
import subprocess
import time

import pytest
from rich.console import Console
from signals import tone, write

pytestmark = [pytest.mark.usefixtures("prefect_server")]

CONTROL = re.compile(r"\r|\x1b\[")  # carriage returns and cursor / colour codes: what a redrawn bar leaves


def _artifact_percent(artifact_id) -> float:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id])))
    return float(artifact.data)


def test_a_terminal_shows_a_bar_with_an_eta_and_the_artifact_the_same_count():
    from flows.runtime.progress import Progress

    out = io.StringIO()
    console = Console(force_terminal=True, file=out, width=120)
    with Progress(40, "segment", "embed", "segments embedded (of 40)", every_s=0, console=console) as shown:
        for _ in range(10):
            time.sleep(0.01)  # time passes between steps, so the bar has a speed to estimate from
            shown.advance(1, loss="0.5")
        assert _artifact_percent(shown.artifact) == shown.percent == 25.0  # the bar's count, as the UI shows it
    drawn = out.getvalue()
    assert "━" in drawn and "10/40" in drawn
    final = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn).replace("\r", "\n").strip().splitlines()[-1]
    assert re.search(r"embed .*━.* 10/40 segment .*25%.* ETA \d+:\d\d:\d\d loss 0\.5", final), final
    assert _artifact_percent(shown.artifact) == 100.0  # a stage that completed ends at 100%


def test_a_piped_console_draws_no_bar():
    from flows.runtime.progress import Progress

    out = io.StringIO()
    with Progress(5, "file", "ingest", "files ingested (of 5)", console=Console(file=out)) as shown:
        shown.advance(5)
    assert out.getvalue() == ""


def test_a_piped_ingest_prints_no_progress_bar_control_characters(tmp_path, cli_env):
    from conftest import CLI

    for i in range(3):
        write(tmp_path / "in" / f"t{i}.wav", tone(300 + 100 * i, 2.0, 16000), 16000)
    env = {**cli_env, "COLUMNS": "120"}
    done = subprocess.run([CLI, "ingest", str(tmp_path / "in"), "--workspace", str(tmp_path / "ws")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3 ingested" in done.stdout + done.stderr
    assert not CONTROL.search(done.stdout) and not CONTROL.search(done.stderr)


def test_the_pipeline_logs_each_stage_as_it_finishes(pipeline_reference):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    _, result, flow_run_id = pipeline_reference

    def stage_lines() -> list[str]:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                    sort=LogSort.TIMESTAMP_ASC)
        return [log.message for log in logs if log.message.startswith("stage ")]

    deadline = time.monotonic() + 60  # the run's logs reach the server in batches: wait for the last
    while len(lines := stage_lines()) < 5 and time.monotonic() < deadline:
        time.sleep(1)
    names = ["ingest", "pretrain", "embed", "evaluate", "report"]
    assert [line.split(":")[0] for line in lines] == [f"stage {i}/5 {name}" for i, name in enumerate(names, 1)]
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines] == [s["outcome"] for s in result.stages]
