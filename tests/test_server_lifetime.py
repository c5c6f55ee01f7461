"""The temporary Prefect server a flow command starts for itself dies with the command, however the
command ends: here a kill -9 of the command alone, which runs none of its exit handlers."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from conftest import CLI
from signals import sweep, write
from test_cli import OWN_SERVER

SERVER_APP = "prefect.server.api.server:create_app"


def children(pid: int) -> list[int]:
    """Process ids of the children of `pid` (every thread's), from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting to be reaped (a container's init may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_kill_9_of_a_flow_command_leaves_no_server(tmp_path):
    folder = tmp_path / "rec"
    write(folder / "long.wav", sweep(100, 4000, 60.0, 16000, 0.3), 16000, "PCM_16")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the command starts its own server
    process = subprocess.Popen([CLI, "ingest", folder, "--workspace", tmp_path / "ws", "--workers", "1"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    servers: list[int] = []
    try:
        said, own = [], None
        for line in process.stderr:
            said.append(line)
            if own := OWN_SERVER.search(line):
                break
        assert own, "".join(said[-20:])
        servers = [c for c in children(process.pid) if SERVER_APP in Path(f"/proc/{c}/cmdline").read_text()]
        assert len(servers) == 1, (children(process.pid), "".join(said[-20:]))
        os.kill(process.pid, signal.SIGKILL)  # the command alone, not its process group
        assert process.wait(timeout=60) == -signal.SIGKILL  # killed mid-run, not finished on its own

        deadline = time.monotonic() + 30  # a bound on the wait, not a claim about its speed
        while alive(servers[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(servers[0]), f"the command's Prefect server (pid {servers[0]}) outlived it"
        with contextlib.suppress(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(own.group(2))), timeout=5).close()
            raise AssertionError(f"something still answers on the server's port {own.group(2)}")
    finally:
        for pid in [process.pid, *servers]:  # whatever is left, if the test failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()


# A parent that starts flows/runtime/server.py as OwnServer does, with the parent-death signal
# off (as from a thread other than the main one, or off Linux), on a minimal ASGI app instead of
# Prefect's, prints the server's pid once it answers, and kills itself.
PARENT = """
import os, signal, socket, subprocess, sys, time
from flows.runtime import server
port = server._free_port()
child = subprocess.Popen([sys.executable, server.__file__, str(os.getpid()), "0", "--app-dir", sys.argv[1],
                          "asgi_app:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "error"],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(sys.argv[1], "server.log"), "w"))
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
    except OSError:
        time.sleep(0.05)
print(child.pid, port, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

ASGI_APP = """
async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
"""


def test_the_watchdog_alone_stops_the_server_when_its_parent_dies(tmp_path):
    import sys

    (tmp_path / "asgi_app.py").write_text(ASGI_APP)
    parent = subprocess.run([sys.executable, "-c", PARENT, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert parent.returncode == -signal.SIGKILL and parent.stdout.strip(), \
        parent.stderr[-3000:] + (tmp_path / "server.log").read_text()[-3000:]
    server, port = map(int, parent.stdout.split())
    try:
        deadline = time.monotonic() + 30  # a bound on the wait, not a claim about its speed
        while alive(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(server), f"the server (pid {server}) outlived the process that started it"
        with contextlib.suppress(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            raise AssertionError(f"something still answers on the server's port {port}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server, signal.SIGKILL)
