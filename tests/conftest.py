from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Before torch loads (its OpenMP reads this once): idle OpenMP threads sleep instead of spinning.
# The suite runs three workers and their subprocesses on two cores, where spinning threads burn
# the cores the others wait for: measured, two tiny-training tests side by side took 29 s of CPU
# each by default and 19 s with PASSIVE (the same thread count, so the same numbers).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "hydrophone"
CLI = str(Path(sys.executable).parent / "ceta2vec")

sys.path.insert(0, str(Path(__file__).parent))


# `make test` runs the suite on pytest-xdist workers, a module per worker at a time (`--dist
# loadfile`); the longest modules go first so that none is left running alone at the end.
LONGEST_FIRST = ("test_pipeline_flow", "test_deployments", "test_embedding", "test_pretrain_flow", "test_training",
                 "test_report_figures", "test_hardening_ingest", "test_evaluate_flow", "test_explorer_selection",
                 "test_dask_runner", "test_report_flow", "test_report_pages_browser", "test_report_browser", "test_cli",
                 "test_ddp", "test_hardening_sql", "test_readme_sql", "test_learning_bench")


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


@pytest.fixture(scope="session")
def prefect_server():
    """A real (temporary) Prefect server for flows run in-process."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def cli_env(prefect_server) -> dict[str, str]:
    """The environment for `ceta2vec` subprocesses that run flows on this worker's test server.

    The test server stands in for the temporary server each command starts for itself (named in
    OWN_SERVER_ENV): the writer slot stays a lock of the process, as on the default path, so a
    kill -9 strands no slot. A command then starts no server (about 8 s of CPU each). The default
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


@pytest.fixture(scope="session")
def pipeline_reference(prefect_server, tmp_path_factory):
    """One uninterrupted pipeline run on a tiny synthetic corpus (tests/pipeline_corpus.py), shared by
    the pipeline tests: (corpus root, result, flow run id); its workspace is root / 'ws'."""
    from pipeline_corpus import reference_run

    return reference_run(tmp_path_factory.mktemp("pipeline"))
