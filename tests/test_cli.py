"""The `ceta2vec` command as a user runs it: real subprocesses, real Prefect engine."""

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time

import pyarrow.parquet as pq
import pytest
from conftest import CLI
from hardening_cli import as_plain_user
from signals import noise, sweep, tone, write

from tasks.catalog.status import ingest_runs
from tasks.workspace import Workspace, database

# The line a flow command logs once its own temporary Prefect server answers: (server address, port).
OWN_SERVER = re.compile(r"Started a temporary Prefect server on (http://127\.0\.0\.1:(\d+))/api")


def cli(*args, check=True, **kwargs) -> subprocess.CompletedProcess:
    """The installed command; flows run on the command's own temporary server unless `env` says otherwise."""
    result = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"ceta2vec {args} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def test_every_subcommand_has_help_with_examples(capsys):
    from flows.cli.commands import build_parser

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"run", "serve", "ingest", "pretrain", "embed", "evaluate", "report", "sql"} <= set(subcommands)
    for command in subcommands:
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args([command, "--help"])
        out = capsys.readouterr().out
        assert done.value.code == 0 and "examples:" in out and f"ceta2vec {command}" in out, command
        assert "--workspace" in out, command
    assert "ceta2vec" in cli("--help").stdout  # and the installed entry point answers


def test_ingest_status_and_sql(tmp_path):
    ws = tmp_path / "ws"
    write(tmp_path / "rec" / "20230701_123000.wav", tone(800, 14.0, 22050), 22050, "PCM_16")
    (tmp_path / "rec" / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    run = cli("ingest", tmp_path / "rec", "--workspace", ws, "--site", "<b>LK</b>", "--segment-seconds", "5")
    assert "ingested" in run.stdout and str(ws) in run.stdout
    # the flow ran on the command's own temporary Prefect server, which stopped with the command
    own = OWN_SERVER.search(run.stderr)
    assert own and f"View at {own.group(1)}/runs/flow-run/" in run.stderr, run.stderr[-2000:]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(own.group(2))), timeout=5).close()
    status = json.loads(cli("status", "--workspace", ws, "--format", "json").stdout)
    assert (status["recordings"], status["segments"], status["errors"]) == (1, 3, 1)
    assert status["sites"][0]["site"] == "<b>LK</b>"
    table = cli("status", "--workspace", ws).stdout
    assert "<b>LK</b>" in table  # shown as text, never interpreted
    rows = json.loads(cli("sql", "SELECT segment_index, valid_s FROM segments ORDER BY 1", "--workspace", ws,
                          "--format", "json").stdout)
    assert rows == [{"segment_index": 0, "valid_s": 5.0}, {"segment_index": 1, "valid_s": 5.0},
                    {"segment_index": 2, "valid_s": 4.0}]
    csv_out = cli("sql", "SELECT stage FROM ingest_errors", "--workspace", ws, "--format", "csv").stdout
    assert csv_out.splitlines() == ["stage", "decode"]
    env = {**os.environ, "CETA2VEC_WORKSPACE": str(ws)}
    assert "1 row(s)" in cli("sql", "SELECT count(*) FROM recordings", env=env).stdout


@pytest.fixture(scope="module")
def small_workspace(tmp_path_factory, cli_env):
    root = tmp_path_factory.mktemp("small")
    cli("ingest", write(root / "a.wav", noise(1.0, 16000), 16000, "PCM_16"), "--workspace", root / "ws", env=cli_env)
    return root / "ws"


@pytest.mark.parametrize("statement", [
    "DELETE FROM segments", "DROP TABLE recordings", "CREATE TABLE x (a INT)",
    "COPY recordings TO '/tmp/out.csv'", "ATTACH '/tmp/other.duckdb'", "SELECT 1; UPDATE segments SET site = 'x'",
])
def test_sql_refuses_to_write(small_workspace, statement):
    refused = cli("sql", statement, "--workspace", small_workspace, check=False)
    assert refused.returncode == 2 and "read-only" in refused.stderr
    assert cli("sql", "SELECT count(*) AS n FROM segments", "--workspace", small_workspace,
               "--format", "csv").stdout.split() == ["n", "1"]


def test_exit_status_contract(tmp_path, cli_env):
    ws = tmp_path / "ws"
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "empty.wav").write_bytes(b"")
    write(tmp_path / "rec" / "good.wav", noise(1.0, 16000), 16000, "PCM_16")  # alone, empty.wav is nothing to ingest
    # completed, the bad file reported
    assert cli("ingest", tmp_path / "rec", "--workspace", ws, check=False, env=cli_env).returncode == 0
    assert cli("ingest", tmp_path / "rec", "--workspace", ws, "--strict", check=False, env=cli_env).returncode == 1
    bad = cli("ingest", tmp_path / "rec", "--workspace", ws, "--channels", "left", check=False)
    assert bad.returncode == 2 and "channels" in bad.stderr
    assert "Prefect server" not in bad.stderr  # refused before any server starts
    assert cli("sql", "SELEC oops", "--workspace", ws, check=False).returncode == 2
    missing = cli("status", "--workspace", tmp_path / "nothing-here", check=False)
    assert missing.returncode == 2 and "no ceta2vec workspace" in missing.stderr


def test_kill_9_mid_ingest_then_rerun_gives_exactly_one_copy(tmp_path, cli_env):
    folder = tmp_path / "many"
    for i in range(40):
        write(folder / f"rec_{i:02d}.wav", sweep(50 + i, 3000, 21.0, 24000, 0.3) + noise(21.0, 24000, 0.01, seed=i),
              24000, "PCM_24")
    interrupted, reference = tmp_path / "ws-killed", tmp_path / "ws-reference"
    # its own process group, so the kill takes anything it started down with it
    process = subprocess.Popen([CLI, "ingest", folder, "--workspace", interrupted, "--workers", "1"], env=cli_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    segments_dir = interrupted / "segments"
    while time.monotonic() < deadline and process.poll() is None:
        if segments_dir.exists() and len(list(segments_dir.rglob("*.parquet"))) >= 3:
            break
        time.sleep(0.01)
    assert process.poll() is None, "ingest finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    partial = len(list(segments_dir.rglob("*.parquet")))
    assert 3 <= partial < 40
    killed = Workspace.at(interrupted)
    with database.reading(killed) as conn:  # its row still says running; status sees its process is gone
        ((killed_run, state),) = conn.execute("SELECT run_id, status FROM ingest_runs").fetchall()
        assert state == "running"
        shown = ingest_runs(conn, killed)
    assert (shown["interrupted"], shown["running"], shown["latest"]["status"]) == (1, 0, "interrupted")

    cli("ingest", folder, "--workspace", interrupted, env=cli_env)
    cli("ingest", folder, "--workspace", reference, env=cli_env)
    with database.reading(killed) as conn:  # the next ingest marked it, and completed itself
        runs = dict(conn.execute("SELECT run_id, status FROM ingest_runs").fetchall())
    assert runs.pop(killed_run) == "interrupted" and list(runs.values()) == ["completed"], runs
    results = {}
    for ws in (interrupted, reference):
        workspace = Workspace.at(ws)
        with database.reading(workspace) as conn:
            results[ws] = conn.execute(
                "SELECT segment_id, recording_id, start_s, rms_dbfs FROM segments ORDER BY segment_id").fetchall()
            assert conn.execute("SELECT count(*) FROM recordings").fetchone()[0] == 40
        files = sorted(workspace.segments_dir.rglob("*.parquet"))
        ids = [i for f in files for i in pq.read_table(f, columns=["segment_id"]).column(0).to_pylist()]
        assert len(ids) == len(set(ids)) == len(results[ws]) == 40 * 3
        assert not list(workspace.staging_dir.iterdir())
    assert results[interrupted] == results[reference]


@pytest.mark.parametrize("when", ["before the flow", "inside the flow"])
def test_sigterm_to_the_command_alone_stops_its_own_server(tmp_path, when):
    """A scheduler or `timeout` stops the command, not its process group: the server it started must
    not outlive it, and the command ends with SIGTERM's status (128 + 15) wherever the signal lands.
    ceta2vec's handler stops the server (it once raised SystemExit, which pydantic's serializer turned
    into a ValueError: exit 2); inside a flow, Prefect's handler marks the run crashed and passes it on."""
    folder = tmp_path / "rec"
    for i in range(6):  # distinct and long enough that the flow is still running when the signal lands
        write(folder / f"r{i}.wav", sweep(100 + 10 * i, 4000, 120.0, 24000, 0.3), 24000, "PCM_16")
    process = subprocess.Popen([CLI, "ingest", folder, "--workspace", tmp_path / "ws", "--workers", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        said, own = [], None
        for line in process.stderr:
            said.append(line)
            own = own or OWN_SERVER.search(line)
            if own and (when == "before the flow" or "Beginning flow run" in line):
                break
        assert own, "".join(said[-20:])
        socket.create_connection(("127.0.0.1", int(own.group(2))), timeout=5).close()  # serving
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        assert process.wait(timeout=120) == 128 + signal.SIGTERM, "".join(said[-5:]) + rest[-3000:]
        if when == "inside the flow":  # Prefect marked the run crashed, then passed the signal on
            assert "Crash detected! Execution was aborted by a termination signal" in rest, rest[-3000:]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(own.group(2))), timeout=5).close()
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of the group, if the test failed
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_unreadable_file_is_reported(tmp_path, cli_env):
    """As root, who may read anything, the run drops the capabilities that bypass file permissions."""
    folder = tmp_path / "perm"
    write(folder / "ok.wav", noise(1.0, 16000), 16000, "PCM_16")
    secret = write(folder / "secret.wav", noise(1.0, 16000, seed=1), 16000, "PCM_16")
    os.chmod(secret, 0)
    ws = tmp_path / "ws"
    result = subprocess.run([*as_plain_user(), CLI, "ingest", folder, "--workspace", ws], capture_output=True, text=True,
                            timeout=300, env=cli_env)
    assert result.returncode == 0, result.stderr
    with database.reading(Workspace.at(ws)) as conn:
        errors = conn.execute("SELECT path, stage, reason FROM ingest_errors").fetchall()
        assert conn.execute("SELECT file_name FROM recordings").fetchall() == [("ok.wav",)]
    assert errors == [(str(secret), "read", "permission denied")]


def test_cli_options_map_onto_the_settings_fields():
    from flows.cli.commands import _settings, build_parser
    from schemas.settings import EmbedSettings, IngestSettings, PretrainSettings

    embed = _settings(EmbedSettings, build_parser().parse_args(["embed", "--no-frame-vectors", "--layers", "0", "2"]))
    assert embed.frame_vectors is False and embed.layers == [0, 2]
    ingest = _settings(IngestSettings, build_parser().parse_args(["ingest", "a.wav", "--strict", "--hop-seconds", "2.5"]))
    assert ingest.strict and ingest.hop_seconds == 2.5 and ingest.sources == ["a.wav"]
    pretrain = _settings(PretrainSettings, build_parser().parse_args(
        ["pretrain", "--model-overrides", "num_hidden_layers=6", "hidden_act=relu"]))
    assert pretrain.model_overrides == {"num_hidden_layers": 6, "hidden_act": "relu"}
    assert pretrain.model_fields_set == {"model_overrides"}  # only what was typed counts as asked for


WIDE_QUERY = ("SELECT segment_id, repeat('x', 60) AS first_wide_column, repeat('y', 60) AS second_wide_column "
              "FROM segments ORDER BY segment_id LIMIT 3")


def test_piped_tables_are_never_wrapped_and_csv_json_parse(tiny_workspace):
    """Tables written to a pipe keep each row on one line, whatever width the environment claims;
    csv and json of the same query, and of `similar` and `status`, parse back to the same rows."""
    import csv
    import io

    ws = ["--workspace", tiny_workspace.root]
    table = cli("sql", WIDE_QUERY, *ws, env={**os.environ, "COLUMNS": "80"}).stdout.splitlines()
    rows = [line for line in table if "x" * 60 in line]
    assert len(rows) == 3 and all("y" * 60 in line for line in rows), "\n".join(table)
    assert len({len(line) for line in table if line[:1] in "┏┃┡│└"}) == 1  # one width: nothing folded
    as_csv = list(csv.DictReader(io.StringIO(cli("sql", WIDE_QUERY, *ws, "--format", "csv").stdout)))
    as_json = json.loads(cli("sql", WIDE_QUERY, *ws, "--format", "json").stdout)
    assert as_csv == as_json and len(as_json) == 3 and as_json[0]["second_wide_column"] == "y" * 60

    segment = as_json[0]["segment_id"]
    near_csv = list(csv.DictReader(io.StringIO(cli("similar", segment, "-k", "3", *ws, "--format", "csv").stdout)))
    near_json = json.loads(cli("similar", segment, "-k", "3", *ws, "--format", "json").stdout)
    assert [r["segment_id"] for r in near_csv] == [r["segment_id"] for r in near_json] and near_json[0]["segment_id"] == segment

    status = json.loads(cli("status", *ws, "--format", "json").stdout)
    long = list(csv.DictReader(io.StringIO(cli("status", *ws, "--format", "csv").stdout)))
    assert {(r["section"], r["key"], r["field"]) for r in long} >= {
        ("workspace", "", "segments"), ("model", "rep@1", "layers"), ("run", "rep", "checkpoints kept")}
    assert next(r["value"] for r in long if r["field"] == "segments" and r["section"] == "workspace") == \
        str(status["segments"])


def test_status_shows_models_checkpoints_layers_verdict_and_report(tmp_path, tiny_workspace, capsys):
    import shutil

    from flows.cli.commands import main
    from flows.report import report_folder
    from schemas.settings import ReportSettings
    from tasks.catalog.evaluations import labelled_segments, write_evaluations

    ws = Workspace.at(shutil.copytree(tiny_workspace.root, tmp_path / "ws"))

    def status(*fmt) -> str:
        assert main(["status", "--workspace", str(ws.root), *fmt]) == 0
        return capsys.readouterr().out

    def score(layer_1: float, logmel: float) -> None:
        with database.writing(ws) as conn:
            labelled = labelled_segments(conn, "sound", None)
            write_evaluations(conn, "eval-test", "sound", "rep@1", [
                {"kind": "model", "features": "layer 1", "layer": 1, "metrics": {"knn5_macro_f1": (layer_1, 0.1, 0.9)}},
                {"kind": "model", "features": "layer 2", "layer": 2, "metrics": {"knn5_macro_f1": (0.2, 0.1, 0.3)}},
                {"kind": "baseline", "features": "log-mel stats", "layer": None,
                 "metrics": {"knn5_macro_f1": (logmel, 0.1, 0.9)}}], labelled)

    before = json.loads(status("--format", "json"))
    (model,) = before["models"]
    assert (model["model_id"], model["layers"], model["kmeans_layers"], model["units_k"]) == ("rep@1", [0, 1, 2], [0, 1, 2], 6)
    assert model["evaluation"] is None and model["report"] is None
    assert [(r["run"], r["checkpoints kept"]) for r in before["runs"]] == [("rep", [1])]
    assert "not evaluated" in status() and "none yet (ceta2vec report --model rep@1)" in status()

    score(0.75, 0.5)
    index = report_folder(ws, ReportSettings(workspace=str(ws.root)), "rep@1") / "index.html"
    index.parent.mkdir(parents=True)
    index.write_text("<html></html>")  # where `ceta2vec report` writes it: status finds it there
    (model,) = json.loads(status("--format", "json"))["models"]
    assert model["report"] == str(index)
    assert (model["evaluation"]["label_column"], model["evaluation"]["best_layer"], model["evaluation"]["best_baseline"],
            model["evaluation"]["beats_baselines"]) == ("sound", 1, "log-mel stats", True)
    shown = status()
    assert "layer 1 is above log-mel stats (5-NN F1 0.750 vs 0.500)" in shown and f"report of rep@1: {index}" in shown
    score(0.25, 0.5)
    assert "layer 1 does not beat log-mel stats (5-NN F1 0.250 vs 0.500)" in status()


def test_a_chunk_summary_is_logged_in_words():
    from flows.pretrain import chunk_line

    line = chunk_line({"chunk": 2, "steps": "50-99", "mean_loss": 2.5825, "last_loss": 2.41, "accuracy": 0.3053,
                       "perplexity": [19.4, 12.2], "unused_codes": 0.586, "audio_s_per_s": 31.5, "health": "learning",
                       "health_sentence": "rep@2 is learning", "checkpoint": "/ws/checkpoints/rep/chunk-0002"})
    assert line == ("steps 50-99, mean loss 2.5825 (last 2.4100), accuracy 0.305, codebook perplexity 19.4 / 12.2, "
                    "unused codes 58.6%, 31.5 s of audio per second; health: learning")
