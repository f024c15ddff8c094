"""``gatelab ui``: the MLflow UI for a tracking store, on loopback.

It runs ``mlflow server`` with one worker and the job runner off
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``): about 0.5 GB and 9 s to start on 2 cores,
against 2.8 GB and 25 s with the defaults (``shared/docs/stack.md``). It binds 127.0.0.1, waits
until ``/health`` answers, prints the URL, and runs until interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from gatelab.contract import resolve_tracking_uri, sqlite_path

HOST = "127.0.0.1"


def server_command(tracking_uri: str, port: int, host: str = HOST) -> list[str]:
    """The ``mlflow server`` command line for ``tracking_uri``."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port), "--workers", "1"]


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


def url_for(port: int, host: str = HOST) -> str:
    return f"http://{host}:{port}"


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120.0) -> bool:
    """True once ``url``/health answers; False if the server exits or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2.0):
                return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    return False


def start(tracking_uri: str | None, port: int, log: Path | None = None
          ) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start the server in its own process group; returns (process, URL, resolved URI). Its
    output goes to ``log``, or to this process's stderr when ``log`` is ``None`` (stdout stays
    for the URL line, so ``gatelab ui | head -1`` gives the URL)."""
    uri = resolve_tracking_uri(tracking_uri)
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"no MLflow store at {path}: run a sweep first, or pass "
                                "--tracking-uri")
    out = open(log, "ab") if log is not None else None  # noqa: SIM115
    process = subprocess.Popen(server_command(uri, port), env=server_env(),
                               stdout=out if out is not None else sys.stderr,
                               stderr=subprocess.STDOUT, start_new_session=True)
    if out is not None:
        out.close()  # the child holds its own descriptor
    return process, url_for(port), uri


def stop(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """Stop the server and its workers (its process group)."""
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


def serve(tracking_uri: str | None, port: int) -> int:
    """Run the UI in the foreground until Ctrl-C (or SIGTERM); the exit status of the command.
    The server is stopped on the way out whatever ends the command."""
    # Ctrl-C must work even when started from a shell that ignores SIGINT (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    process, url, uri = start(tracking_uri, port)
    try:
        if not wait_until_up(url, process):
            stop(process)
            print(f"gatelab ui: the MLflow server for {uri} did not start on port {port} "
                  "(is the port taken? try --port)", file=sys.stderr)
            return 1
        print(f"MLflow UI for {uri}: {url}  (Ctrl-C stops it)", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop(process)
