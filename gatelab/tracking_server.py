"""The MLflow server a command owns: ``gatelab ui`` (the MLflow UI for a tracking store, on
loopback) and ``gatelab server`` (the tracking server of a Ray cluster) both run it here.

It runs ``mlflow server`` with one worker and the job runner off
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``): about 0.5 GB and 9 s to start on 2 cores,
against 2.8 GB and 25 s with the defaults (measured on a 2-core machine). It binds 127.0.0.1 (or the
host ``gatelab server --host`` names), waits until ``/health`` answers, prints the URL, and
runs until interrupted.

The command reports a URL only for a server it started: it refuses a port that anything already
listens on (it binds the port itself first), and once ``/health`` answers it checks that the
listener belongs to its own server's processes, so a server that takes the port in the meantime
is never reported as its own. The server goes with the command, however the command ends:
``mlflow server`` runs under a small supervisor (this file run as a script, ``supervise``) in a
session of its own; SIGTERM, SIGINT and SIGHUP to the command stop the supervisor, and on Linux
the supervisor is also signalled when the command dies without a word (SIGKILL). The supervisor
then stops its whole process group, ``mlflow server`` and the uvicorn it starts, and exits once
none of them is left.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from gatelab.processes import pid_alive
from gatelab.tracking_store import StoreUse, check_store

HOST = "127.0.0.1"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""The signals that stop the command and the supervisor, each taking its server down."""
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Opens URLs without the proxies of the environment: the server is on loopback."""
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def server_command(tracking_uri: str, port: int, host: str = HOST,
                   extra: tuple[str, ...] = ()) -> list[str]:
    """The ``mlflow server`` command line for ``tracking_uri`` (``extra``: more flags)."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port), "--workers", "1", *extra]


def supervisor_command(command: list[str]) -> list[str]:
    """``command`` run under ``supervise`` on behalf of this process (``-P``: this file's folder
    stays off ``sys.path``)."""
    return [sys.executable, "-P", str(Path(__file__).resolve()), str(os.getpid()), *command]


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


def url_for(port: int, host: str = HOST) -> str:
    return f"http://{host}:{port}"


def _bind_error(port: int, host: str = HOST) -> OSError | None:
    """Why ``host:port`` cannot be bound now; ``None`` when it can. ``SO_REUSEADDR`` as uvicorn
    sets it: a port whose closed connections linger in TIME_WAIT is free, a listened one not."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            return err
    return None


def _listener(port: int) -> str | None:
    """The process listening on TCP ``port`` as ``ss`` names it (``python, pid 123``); ``None``
    when ``ss`` is missing or cannot tell (another user's process)."""
    try:
        listed = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                                text=True, timeout=5.0).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'users:\(\("([^"]*)",pid=(\d+)', listed)
    return f"{found[1]}, pid {found[2]}" if found else None


def port_in_use(port: int, host: str = HOST, how: str = "is in use") -> str:
    """The one-line message for a port that something else listens on: the port, ``how`` it is
    taken, its listener when known, and the fix (with a free port when one is near)."""
    listener = _listener(port)
    by = f" (by {listener})" if listener else ""
    near = (p for p in range(port + 1, min(port + 100, 65536)) if _bind_error(p, host) is None)
    free = next(near, None)
    fix = f"pass another port, e.g. --port {free}" if free else "pass --port N with a free port"
    return f"port {port} on {host} {how}{by}: {fix}"


def check_port(port: int, host: str = HOST) -> None:
    """Raise ``RuntimeError`` with a one-line message when the server could not bind ``port``;
    ``ValueError`` for a number that is no port."""
    if not 0 < port < 65536:
        raise ValueError(f"--port {port} is not a TCP port (1-65535)")
    err = _bind_error(port, host)
    if err is None:
        return
    if err.errno == errno.EADDRINUSE:
        raise RuntimeError(port_in_use(port, host))
    raise RuntimeError(f"port {port} on {host} cannot be used ({err.strerror}): pass --port N "
                       "with another port")


def _descendants(root: int) -> set[int]:
    """``root`` and every process below it, from ``/proc/*/stat`` (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # the process is gone
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _listening_sockets(port: int) -> set[str]:
    """The sockets listening on TCP ``port`` (any address), as ``/proc/<pid>/fd`` links name
    them (``socket:[inode]``)."""
    sockets = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        lines = table.read_text().splitlines()[1:] if table.exists() else []
        for fields in (line.split() for line in lines):
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                sockets.add(f"socket:[{inode}]")
    return sockets


def listens_on(root: int, port: int) -> bool:
    """Whether ``root`` or a process below it holds a socket listening on TCP ``port``. Where
    there is no ``/proc`` to read (not Linux), whether ``root`` is alive."""
    if not Path("/proc/net/tcp").exists():
        return pid_alive(root)
    wanted = _listening_sockets(port)
    for pid in _descendants(root):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:  # gone, or not ours
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in wanted:
                    return True
            except OSError:
                continue
    return False


def _answers(url: str) -> bool:
    try:
        with _DIRECT.open(f"{url}/health", timeout=2.0):
            return True
    except (urllib.error.URLError, OSError):
        return False


def wait_until_serving(process: subprocess.Popen[bytes], port: int, uri: str,
                       timeout_s: float = 120.0) -> str:
    """The server's URL once ``/health`` answers on ``port`` from ``process`` or a process below
    it. ``RuntimeError`` when another process answers, when ``process`` exits first, or after
    ``timeout_s``."""
    url = url_for(port)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the MLflow server for {uri} exited (status {process.returncode})"
                               f" before serving on port {port}; its output is above")
        if _answers(url):
            if process.poll() is None and listens_on(process.pid, port):
                return url
            raise RuntimeError(port_in_use(port, how="was taken while the MLflow server was "
                                           "starting"))
        time.sleep(0.5)
    raise RuntimeError(f"the MLflow server for {uri} did not answer on port {port} within "
                       f"{timeout_s:.0f} s; its output is above")


def start(tracking_uri: str | None, port: int, log: Path | None = None, host: str = HOST,
          extra: tuple[str, ...] = (), new_store: bool = False
          ) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start the server under its supervisor, in a session of its own, once the store exists
    and ``port`` is free; returns (the supervisor, URL, resolved URI). Its output goes to
    ``log``, or to this process's stderr when ``log`` is ``None`` (stdout stays for the URL
    line, so ``gatelab ui | head -1`` gives the URL). On Linux the supervisor stops the server
    when the calling thread ends, so call this from the thread that waits for the server.
    ``host``: the address to bind; ``extra``: more ``mlflow server`` flags; ``new_store``: a
    missing SQLite store is created (a tracking server's), not refused (the UI's). The store is
    checked first (``gatelab.tracking_store.check_store``): a missing (for the UI), corrupt or
    foreign SQLite file, a URI of an unsupported scheme, or one whose server does not answer is
    refused in one line (``StoreError``) before anything starts."""
    uri = check_store(tracking_uri, StoreUse.WRITE if new_store else StoreUse.READ)
    check_port(port, host)
    out = open(log, "ab") if log is not None else None  # noqa: SIM115
    command = supervisor_command(server_command(uri, port, host, extra))
    process = subprocess.Popen(command, env=server_env(),
                               stdout=out if out is not None else sys.stderr,
                               stderr=subprocess.STDOUT, start_new_session=True)
    if out is not None:
        out.close()  # the child holds its own descriptor
    return process, url_for(port), uri


def stop(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """Stop the server and its workers (the supervisor's process group); SIGKILL to the group
    if it has not gone after ``timeout_s``."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    sys.exit(128 + signum)


def serve(tracking_uri: str | None, port: int, host: str = HOST, extra: tuple[str, ...] = (),
          new_store: bool = False, what: str = "MLflow UI", landing: str = "") -> int:
    """Run the server in the foreground until Ctrl-C (or SIGTERM, SIGHUP); the exit status of
    the command. The server is stopped on the way out whatever ends the command. ``host``,
    ``extra``, ``new_store``: as ``start``; ``what``: how the URL line names it; ``landing``:
    the page to open, appended to the URL (e.g. ``/#/experiments/1?workflowType=...``)."""
    # Ctrl-C must work even when started from a shell that ignores SIGINT (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    process, _, uri = start(tracking_uri, port, host=host, extra=extra, new_store=new_store)
    try:
        url = wait_until_serving(process, port, uri)
        print(f"{what} for {uri}: {url}{landing}  (Ctrl-C stops it)", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop(process)


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    raise _Stopped(signum)


def _prctl(option: int, value: int) -> None:
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


def _end_group(grace_s: float = 10.0) -> None:
    """Stop every other process of this process group and return once none of this process's
    children is left (as a subreaper, every process below it becomes its child when orphaned).
    SIGTERM, again each second for what starts late; after ``grace_s``, SIGKILL to the whole
    group, this process included."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    deadline = time.monotonic() + grace_s
    next_term = 0.0
    while True:
        now = time.monotonic()
        if now >= deadline:
            os.killpg(0, signal.SIGKILL)
        if now >= next_term:
            os.killpg(0, signal.SIGTERM)
            next_term = now + 1.0
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.1)
        except ChildProcessError:
            return


def supervise(parent: int, command: list[str]) -> int:
    """Run ``command`` (``mlflow server``) until it exits or this process is told to stop
    (``STOP_SIGNALS``; on Linux also the death of ``parent``, via PR_SET_PDEATHSIG), then stop
    every process of this process group; the command's exit status, or 128 + the signal.
    Started as the leader of its own session, so the group is the server's processes."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stopped)
    status = 0
    try:
        if sys.platform == "linux":
            _prctl(_PR_SET_CHILD_SUBREAPER, 1)
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() == parent:  # else the parent died before PR_SET_PDEATHSIG took hold
            status = subprocess.Popen(command).wait()
    except _Stopped as stopped:
        status = 128 + stopped.signum
    finally:
        while True:  # a stop signal that comes before _end_group ignores them starts it again
            try:
                _end_group()
                break
            except _Stopped:
                continue
    return status


if __name__ == "__main__":
    # ``python -P tracking_server.py PARENT_PID COMMAND...``, as ``start`` runs it.
    sys.exit(supervise(int(sys.argv[1]), sys.argv[2:]))
