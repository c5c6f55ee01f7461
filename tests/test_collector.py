"""A flow command keeps what its imports built out of garbage collections, during the run and at exit."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.runtime.server import own_server

ROOT = Path(__file__).resolve().parents[1]


def test_imports_are_frozen_once_done_and_the_collector_is_given_back():
    assert gc.isenabled()
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # a server is set: none started
        with own_server(True) as use:
            assert not gc.isenabled()  # no collections while the flow's modules import
            imported = [[i] for i in range(10_000)]
            use()
            assert gc.isenabled()
            assert gc.get_freeze_count() >= len(imported)  # never walked again by a collection
        assert gc.isenabled() and gc.get_freeze_count() == 0  # the next command in this process starts afresh
    with own_server(False) as use:  # not a flow command: nothing changes
        assert gc.isenabled()
        use()
        assert gc.get_freeze_count() == 0


def test_the_process_exits_without_walking_its_heap_again():
    """The exit handler freezes the heap after every other handler ran: the interpreter's final
    collections (2.4-3.5 s for `embed` on a busy machine) look at nothing."""
    script = textwrap.dedent("""
        import atexit, gc
        atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))  # runs last
        from prefect.settings import PREFECT_API_URL, temporary_settings
        from flows.runtime.server import own_server
        with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
            with own_server(True) as use:
                use()
        print("frozen after the command:", gc.get_freeze_count() > 0)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["frozen after the command: False", "frozen at exit: True"], result.stdout
