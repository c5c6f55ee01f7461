"""The temporary Prefect server a flow command of the CLI starts for itself, before its imports.

Without `PREFECT_API_URL`, Prefect starts an ephemeral server at a flow's first API call: after
the flow modules are imported (torch, transformers and the flows: about 12 s on 2 cores), and
it first imports the server's own code into the CLI process (about 4 s) only to launch it.
Started here, before those imports, the same server (Prefect's command, settings and
environment) boots on another core while the CLI imports, and the CLI never loads the server's
code. It belongs to the CLI's process group, so a kill -9 of the group takes it down, as it does
Prefect's own; and it stops itself when the CLI process alone dies, for any reason (a kill -9 of
the command, the OOM killer): see `_serve_while_parent_lives`.

The server is this process's alone, like the ephemeral one: `flows.runtime.limits` must not hold
writer slots on it (a killed holder's slot would stay counted in the SQLite database the next
command's server reuses). `OWN_SERVER_ENV` names its URL so that limits, and any subprocess of the
run, can tell it from a shared server.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

OWN_SERVER_ENV = "CETA2VEC_OWN_PREFECT_SERVER"
PORT_IN_USE = 3  # uvicorn's exit status when it cannot bind


def wanted() -> bool:
    """True when a flow would otherwise start Prefect's ephemeral server (no API URL is set)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    return not settings.api.url and settings.server.ephemeral.enabled


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OwnServer:
    """A Prefect server subprocess on a free local port; `ready()` waits for its health check."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.port = 0
        self._launch()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _launch(self) -> None:
        import prefect
        from prefect.settings import get_current_settings

        self.port = _free_port()
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
               **get_current_settings().to_environment_variables(exclude_unset=True)}
        # PR_SET_PDEATHSIG fires when the *thread* that started the child exits: only the main
        # thread, which lives as long as the process, may ask for it.
        death_signal = "1" if threading.current_thread() is threading.main_thread() else "0"
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(os.getpid()), death_signal,
             "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"], env=env)

    def ready(self, timeout_s: float | None = None) -> str:
        """Wait until the server answers, then return its API URL."""
        from prefect.settings import get_current_settings

        timeout_s = timeout_s or get_current_settings().server.ephemeral.startup_timeout_seconds
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.process.poll()
            if status == PORT_IN_USE:  # another process took the port between the probe and the bind
                self._launch()
                continue
            if status is not None:
                raise RuntimeError(f"the temporary Prefect server exited with status {status} before it answered")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self.api_url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the temporary Prefect server on {self.api_url} did not answer within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def _stop_on_sigterm(server: OwnServer) -> None:
    """A SIGTERM sent to the command alone (a scheduler's stop, `timeout`) would end it at once and
    leave its server running: stop the server first, then end with SIGTERM's status (128 + 15).

    The handler raises nothing into the code it interrupts: a `SystemExit` raised there was caught on
    the way (pydantic's serializer turned one into a ValueError, and the command exited 2 as if the
    user had erred). Inside a flow run Prefect's handler is in charge: it marks the run crashed, puts
    this handler back and sends the signal again."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def stop(signum, frame) -> None:
        server.stop()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


@contextmanager
def own_server(start: bool = True) -> Iterator[Callable[[], None]]:
    """Start a temporary server (when one is `wanted`); the block calls the yielded function once
    its imports are done, which waits for the server and points Prefect at it for the rest of the block.
    With `start` (a flow command), what the imports build is also kept out of garbage collections
    (`flows.runtime.collector`).

    The server stops when the process exits, as Prefect's ephemeral one does: Prefect's log and
    event workers send what they still hold at exit, and their exit handlers run before this one."""
    if not start:
        yield lambda: None
        return
    from flows.runtime.collector import imports_kept  # not at the top: this file also runs as the server's script

    with imports_kept() as imported, _server_if_wanted() as use:

        def use_after_imports() -> None:
            imported()
            use()

        yield use_after_imports


@contextmanager
def _server_if_wanted() -> Iterator[Callable[[], None]]:
    if not wanted():
        yield lambda: None
        return
    from prefect.logging import get_logger
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = OwnServer()
    atexit.register(server.stop)
    _stop_on_sigterm(server)
    with ExitStack() as stack:

        def use() -> None:
            url = server.ready()
            get_logger("ceta2vec").info("Started a temporary Prefect server on %s for this command "
                                        "(`prefect server start` keeps one running, with its UI)", url)
            # Subprocesses of the run (process pools, Dask workers, torchrun) inherit the URL.
            for name, value in (("PREFECT_API_URL", url), (OWN_SERVER_ENV, url)):
                os.environ[name] = value
                stack.callback(os.environ.pop, name, None)
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))

        yield use


# How often the server checks that the process which started it is still alive, and how long it
# is given to shut down cleanly (uvicorn's SIGTERM handling) once that process is gone.
PARENT_POLL_S = 0.5
SHUTDOWN_GRACE_S = 10.0


def _serve_while_parent_lives(parent: int, death_signal: bool, uvicorn_args: list[str]) -> None:
    """Run uvicorn (Prefect's server) in this process, ending it once `parent` is gone.

    The server must not outlive the command that started it, however that command ends: its
    `atexit` and SIGTERM handlers never run after a kill -9 or the OOM killer. On Linux the kernel
    sends SIGTERM when the parent dies (PR_SET_PDEATHSIG, kept across this process's imports);
    everywhere a watchdog thread sees the parent gone (this process re-parented) and sends the
    same signal, then ends the process if uvicorn has not stopped within SHUTDOWN_GRACE_S."""
    import ctypes
    import runpy

    if death_signal and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the watchdog below still stops the server
    if os.getppid() != parent:  # the parent died before the signal was asked for
        sys.exit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(SHUTDOWN_GRACE_S)
        os._exit(1)

    threading.Thread(target=watch, name="ceta2vec-parent-watchdog", daemon=True).start()
    sys.argv = ["uvicorn", *uvicorn_args]
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    # Run as a script by OwnServer (`python server.py PARENT_PID DEATH_SIGNAL UVICORN_ARGS...`), so that
    # the flows package (and Prefect's client) is never imported into the server process. The
    # script's folder is not a package root: nothing may be imported from it.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    _serve_while_parent_lives(int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3:])
