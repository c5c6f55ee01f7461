from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Before torch loads (its OpenMP reads this once): idle OpenMP threads sleep instead of spinning.
# The suite runs three workers and their subprocesses on two cores, where spinning threads burn
# the cores the others wait for: measured, two tiny-training tests side by side took 29 s of CPU
# each by default and 19 s with PASSIVE (the same thread count, so the same numbers).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# One intra-op thread per process for the same reason: three workers and their subprocesses already
# share two cores, and a tiny model's ops are too small to split (test_training.py alone: 27.8 s of
# CPU with two threads, 24.6 s with one). Every comparison in the suite runs under the same setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "hydrophone"
CLI = str(Path(sys.executable).parent / "ceta2vec")

sys.path.insert(0, str(Path(__file__).parent))


# `make test` runs the suite on pytest-xdist workers, a module per worker at a time (`--dist
# loadfile --no-loadscope-reorder`: in this order, not by test count), the longest modules first, so
# that none is left running alone at the end. Seconds per module in the last full run on 2 cores.
LONGEST_FIRST = ("test_deployments",  # 356 s (the served refresh waits for scheduled runs and triggers)
                 "test_pipeline_kill",  # 171 (its reference: test_pipeline_flow's, published)
                 "test_pipeline_flow",  # 150
                 "test_cli", "test_report_serve", "test_evaluate_flow", "test_report_flow",  # 123, 113, 133, 95
                 "test_hardening_faults", "test_embedding", "test_ddp", "test_detection",  # 93, 97, 86, 51
                 "test_report_figures", "test_pretrain_flow", "test_dask_runner", "test_hardening_ingest",  # 78-43
                 "test_report_features", "test_storage", "test_server_lifetime", "test_ingest_flow",  # 46-26
                 "test_cli_errors", "test_explorer_selection", "test_learning_bench", "test_training",
                 "test_report_browser", "test_evaluation")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a module stays


@pytest.fixture(scope="session", autouse=True)
def _isolated_prefect(tmp_path_factory):
    """Every Prefect run of the tests (in-process and CLI subprocesses) uses a throwaway home."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.pop("PREFECT_API_URL", None)
    yield


# Under xdist the controller starts one Prefect server for the whole session before it starts its
# workers, which inherit its URL here. A server per worker (prefect_test_harness) cost each worker
# about 18 s of CPU to start, 5 s to import the server's code into the worker, and 1.4 s a minute idle.
TEST_SERVER_ENV = "CETA2VEC_TEST_PREFECT_API_URL"


def pytest_configure(config):
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    home = Path(tempfile.mkdtemp(prefix="ceta2vec-test-prefect-"))
    os.environ.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    os.environ.pop("PREFECT_API_URL", None)
    from flows.runtime.server import OwnServer

    server = OwnServer()  # Prefect's own server command, as a CLI command starts it for itself

    def stop() -> None:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)

    config.add_cleanup(stop)
    os.environ[TEST_SERVER_ENV] = server.ready(120)


@pytest.fixture(scope="session")
def prefect_server():
    """A real (temporary) Prefect server for flows run in-process: the session's (see pytest_configure),
    else one of this process's own.

    On the session's server this process counts as the server's only user, as a CLI command does on
    its own server (OWN_SERVER_ENV): DuckDB writer turns are a lock of the process, so workers never
    wait on each other's workspaces. Tests of the server's writer slots clear that mark."""
    url = os.environ.get(TEST_SERVER_ENV)
    if not url:
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            yield
        return
    import prefect.context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.runtime.server import OWN_SERVER_ENV

    os.environ[OWN_SERVER_ENV] = url
    with temporary_settings(updates={PREFECT_API_URL: url}):
        # as prefect_test_harness does: threads started without this context see the server too
        with prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
            yield


@pytest.fixture(scope="session")
def cli_env(prefect_server) -> dict[str, str]:
    """The environment for `ceta2vec` subprocesses that run flows on this worker's test server.

    The test server stands in for the temporary server each command starts for itself (named in
    OWN_SERVER_ENV, as in this process): the writer slot stays a lock of the process, as on the
    default path, so a kill -9 strands no slot. A command then starts no server (about 8 s of CPU each). The default
    path, a server per command killed with it, is what the pipeline's kill-in-every-stage test and
    test_cli's first ingest run."""
    from prefect.settings import get_current_settings

    from flows.runtime.server import OWN_SERVER_ENV

    url = str(get_current_settings().api.url)
    return {**os.environ, "PREFECT_API_URL": url, OWN_SERVER_ENV: url}


@pytest.fixture
def workspace(tmp_path):
    from tasks.workspace import Workspace

    return Workspace.at(tmp_path / "ws")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "MANIFEST.csv").exists():
        pytest.fail(f"the shared recordings are missing: {SHARED}")
    return SHARED


PUBLISHED_REFERENCE = "pipeline-reference"


def _session_folder(tmp_path_factory) -> Path | None:
    """The folder every xdist worker of this test session shares (None without xdist)."""
    return tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else None


def build_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` once per test session, by whichever xdist worker asks first; the others wait
    for it and share the folder, so tests must only read it (copy it to change it)."""
    shared = _session_folder(tmp_path_factory)
    if shared is None:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    folder, ready, failed = shared / name, shared / f"{name}.ready", shared / f"{name}.failed"
    try:
        os.close(os.open(shared / f"{name}.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:  # another worker builds it
        deadline = time.monotonic() + 900
        while not ready.exists():
            if failed.exists():
                pytest.fail(f"building {name} failed on another worker: {failed.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{name} was not built by another worker within 900 s")
            time.sleep(0.2)
        return folder
    folder.mkdir()
    try:
        build(folder)
    except BaseException as exc:
        failed.write_text(repr(exc))
        raise
    ready.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory):
    """tests/quick_ingest.py's tiny workspace (a tiny model embedded with k-means units), built once
    per session and shared read-only by the report, explorer and pages tests."""
    from quick_ingest import tiny_workspace as build

    from tasks.workspace import Workspace

    return Workspace.at(build_once(tmp_path_factory, "tiny-workspace", build) / "ws")


@pytest.fixture(scope="session")
def pipeline_reference(prefect_server, tmp_path_factory):
    """One uninterrupted pipeline run on a tiny synthetic corpus (tests/pipeline_corpus.py), shared by
    the pipeline tests: (corpus root, result, flow run id); its workspace is root / 'ws'.

    Under xdist a copy of the corpus and workspace is published to the session's shared folder for
    the kill test on another worker (`reference_workspace`); a marker says one is being built."""
    from pipeline_corpus import reference_run

    shared = _session_folder(tmp_path_factory)
    building = shared / f"{PUBLISHED_REFERENCE}.building" if shared else None
    if building:
        building.write_text(os.environ["PYTEST_XDIST_WORKER"])
    try:
        root, result, flow_run_id = reference_run(tmp_path_factory.mktemp("pipeline"))
        if shared and not (shared / PUBLISHED_REFERENCE).exists():
            partial = shared / f"{PUBLISHED_REFERENCE}.partial-{os.environ['PYTEST_XDIST_WORKER']}"
            shutil.copytree(root, partial)
            partial.rename(shared / PUBLISHED_REFERENCE)  # whole, at once
    finally:
        if building:
            building.unlink(missing_ok=True)
    return root, result, flow_run_id


@pytest.fixture(scope="session")
def reference_workspace(request, tmp_path_factory):
    """A function returning the uninterrupted run's workspace, called when a test needs it: the copy
    another worker publishes while it runs test_pipeline_flow.py, else `pipeline_reference` built here."""
    shared = _session_folder(tmp_path_factory)

    def get() -> Path:
        if shared:
            published, building = shared / PUBLISHED_REFERENCE, shared / f"{PUBLISHED_REFERENCE}.building"
            deadline = time.monotonic() + 900
            while not published.exists() and building.exists() and time.monotonic() < deadline:
                time.sleep(1)
            if published.exists():
                return published / "ws"
        return request.getfixturevalue("pipeline_reference")[0] / "ws"

    return get
