"""The real `ceta2vec` command in a subprocess, pointed at the tests' Prefect server (no ephemeral
server started per call), for the hardening tests."""

from __future__ import annotations

import os
import resource
import subprocess

import pytest
from conftest import CLI


@pytest.fixture(scope="module")
def api_env(cli_env) -> dict[str, str]:
    return cli_env


def cli(env, *args, limit_bytes: int | None = None, timeout=240) -> subprocess.CompletedProcess:
    def limit():  # a real EFBIG from the kernel for any file this process grows past the limit
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout,
                          preexec_fn=limit if limit_bytes else None)


def error_line(stderr: str) -> str:
    """The CLI's one error line (Prefect's own log lines may come before and after it)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("ceta2vec: error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def as_plain_user() -> list[str]:
    """A command prefix under which file permissions hold: root, who may read and write anything,
    drops the capabilities that bypass them (another user needs none)."""
    if os.geteuid() != 0:
        return []
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"]
