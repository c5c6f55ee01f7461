"""Staged files carry their writer's tag: a clean-up removes what dead processes left, never what a
live one (another flow run, another process) is still writing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from conftest import ROOT

from tasks.workspace.staging import owned_path, remove_leftovers

WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from tasks.workspace.staging import owned_path
path = owned_path(Path(sys.argv[1]), sys.argv[2])
path.write_text("half-written")
print(path, flush=True)
time.sleep(600)
"""


def start_writer(staging, name):
    process = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT)), str(staging), name],
                               stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def test_only_dead_writers_leftovers_are_removed(tmp_path):
    staging = tmp_path / "ws" / "staging"
    staging.mkdir(parents=True)
    mine = owned_path(staging, "mine.parquet")
    mine.write_text("this process is writing it")
    untagged = staging / "from-an-older-version.parquet"
    untagged.write_text("x")
    alive, alive_file = start_writer(staging, "alive.parquet")
    dead, dead_file = start_writer(staging, "dead.parquet")
    try:
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait()
        removed = remove_leftovers(staging)
        assert sorted(p.name for p in removed) == sorted([untagged.name, os.path.basename(dead_file)])
        assert mine.exists() and os.path.exists(alive_file) and not os.path.exists(dead_file)
        # the dead writer's lock file went with it; the live ones stay
        assert len(list((tmp_path / "ws" / ".writers").glob("*.lock"))) == 2
    finally:
        alive.kill()
        alive.wait()
    assert [p.name for p in remove_leftovers(staging)] == [os.path.basename(alive_file)]
    assert mine.exists() and [p.name for p in staging.iterdir()] == [mine.name]
