"""``gatelab ui`` owns its MLflow server (``gatelab/tracking_server.py``): it refuses a port that
anything else listens on, never reports another server's URL as its own, and its server (every
process of it) goes when the command is killed, by SIGTERM, SIGINT or SIGKILL. (What the UI
shows of a sweep, in headless Chromium: ``tests/dashboards/test_browser.py``.) Processes are
followed by id; all traffic is to 127.0.0.1."""

from __future__ import annotations

import http.server
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gatelab import tracking_server as ui

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; PR_SET_PDEATHSIG")
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SERVE_HEALTH = ("import http.server as h, sys\n"
                "class Health(h.BaseHTTPRequestHandler):\n"
                "    def do_GET(self):\n"
                "        self.send_response(200); self.end_headers()\n"
                "h.HTTPServer(('127.0.0.1', int(sys.argv[1])), Health).serve_forever()\n")
"""A child that answers ``/health`` on the port in its argument."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def is_up(url: str) -> bool:
    try:
        with DIRECT.open(f"{url}/health", timeout=2.0):
            return True
    except (urllib.error.URLError, OSError):
        return False


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def tree_below(root: int) -> set[int]:
    """The processes below ``root``, from ``ps -eo pid=,ppid=``."""
    listed = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True,
                            check=True).stdout
    children: dict[int, list[int]] = {}
    for pid, ppid in (map(int, line.split()) for line in listed.splitlines()):
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def wait_gone(pids: set[int], port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while {p for p in pids if alive(p)} or not port_is_free(port):
        assert time.monotonic() < deadline, (
            f"{timeout_s:.0f} s after gatelab ui was killed, still alive: "
            f"{sorted(p for p in pids if alive(p))}; port {port} free: {port_is_free(port)}")
        time.sleep(0.2)


def ui_command(port: int, uri: str) -> list[str]:
    return [sys.executable, "-m", "gatelab", "ui", "--port", str(port), "--tracking-uri", uri]


@pytest.fixture()
def store_uri(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("x")
    return uri


@pytest.fixture()
def running_ui(store_uri: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``gatelab ui`` on a free port, once it has printed its URL; (process, port). Killed (and
    its server's processes) on the way out, whatever the test did."""
    port = free_port()
    log = open(tmp_path / "ui.log", "w")  # noqa: SIM115
    process = subprocess.Popen(ui_command(port, store_uri), cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=log, text=True, start_new_session=True)
    tree: set[int] = set()
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 180)
        line = process.stdout.readline() if ready else ""
        assert f"http://127.0.0.1:{port}" in line, (tmp_path / "ui.log").read_text()[-3000:]
        assert "?workflowType=machine_learning" in line  # the training runs, not GenAI
        tree = tree_below(process.pid)
        yield process, port
    finally:
        for pid in {process.pid} | tree:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=60)
        log.close()


def test_a_listened_port_fails_fast_naming_port_listener_and_fix(tmp_path: Path) -> None:
    # The port is checked before a server starts: the store need only pass the store check
    # (an SQLite file with MLflow's tables), not be migrated.
    with closing(sqlite3.connect(tmp_path / "mlflow.db")) as db:
        db.executescript("CREATE TABLE experiments (id INTEGER); CREATE TABLE runs (id INTEGER);")
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = int(other.getsockname()[1])
        result = subprocess.run(ui_command(port, f"sqlite:///{tmp_path / 'mlflow.db'}"),
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""  # no URL
    [line] = result.stderr.splitlines()
    assert line.startswith(f"gatelab ui: port {port} on 127.0.0.1 is in use")
    assert "--port " in line
    if shutil.which("ss"):
        assert f"pid {os.getpid()}" in line


def test_port_check_refuses_a_listened_port_and_names_a_free_one() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = int(other.getsockname()[1])
        with pytest.raises(RuntimeError, match=f"port {port} on 127.0.0.1 is in use") as err:
            ui.check_port(port)
    suggested = int(str(err.value).rsplit("--port ", 1)[1])
    assert suggested != port and port_is_free(suggested)
    ui.check_port(port)  # closed: free again
    with pytest.raises(ValueError, match="70000"):
        ui.check_port(70000)


@pytest.fixture()
def foreign_health() -> Iterator[int]:
    """A server of this test process answering ``/health``; its port."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@linux_only
def test_a_server_answering_from_outside_the_child_is_not_reported(foreign_health: int) -> None:
    child = subprocess.Popen(["sleep", "60"])  # alive, but not what answers /health
    try:
        with pytest.raises(RuntimeError, match=f"port {foreign_health} .*was taken"):
            ui.wait_until_serving(child, foreign_health, "sqlite:///x.db", timeout_s=30)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


@linux_only
def test_a_server_answering_from_below_the_child_is_reported() -> None:
    port = free_port()
    # the child starts the server as its own child, as mlflow server starts uvicorn
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run("
                              "[sys.executable, '-c', sys.argv[1], sys.argv[2]])",
                              SERVE_HEALTH, str(port)], start_new_session=True)
    try:
        assert ui.wait_until_serving(child, port, "x", timeout_s=60) == f"http://127.0.0.1:{port}"
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


@pytest.mark.slow
@linux_only
def test_a_second_ui_on_a_taken_port_fails_and_reports_no_url(
        running_ui: tuple[subprocess.Popen[str], int], store_uri: str, tmp_path: Path) -> None:
    first, port = running_ui
    tree = tree_below(first.pid)
    second = subprocess.run(ui_command(port, store_uri), cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert second.returncode == 2, second.stderr[-3000:]
    assert second.stdout == ""
    [line] = second.stderr.splitlines()
    assert line.startswith(f"gatelab ui: port {port} on 127.0.0.1 is in use")
    assert is_up(f"http://127.0.0.1:{port}") and first.poll() is None  # the first one serves on
    os.kill(first.pid, signal.SIGINT)
    assert first.wait(timeout=60) == 0
    wait_gone(tree, port)


@pytest.mark.slow
@linux_only
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_ui_takes_every_process_of_its_server_down(
        running_ui: tuple[subprocess.Popen[str], int], signum: signal.Signals) -> None:
    process, port = running_ui
    tree = tree_below(process.pid)
    assert len(tree) >= 2, tree  # mlflow server and its uvicorn at least
    assert not port_is_free(port)
    os.kill(process.pid, signum)
    assert process.wait(timeout=60) == (-signal.SIGKILL if signum == signal.SIGKILL else 143)
    wait_gone(tree, port)
    assert not is_up(f"http://127.0.0.1:{port}")
