"""A local Ray's processes stopped within seconds when the sweep driver that started them dies,
kill -9 included.

``ray.init()`` without an address starts Ray's services (GCS, raylet, monitor, dashboard, log
monitor) as children of the driver and ties them to its life: on Linux each gets the
parent-death signal, so they die with it. Not the raylet's own children: its dashboard agent and
runtime-env agent notice the raylet's death through a pipe, then try to report it to the GCS
that died with it, and wait out that report's 60 s timeout (Ray's ``publish_error_to_driver``)
before they exit: after a kill -9 of the driver two agents outlived it by a minute or more.
Ray has no setting for that wait.

``guard_local_ray`` starts this module as a small watcher (``python -m``) in a session of its
own, holding the read end of a pipe whose only write end the driver holds. While the driver
lives, the watcher lists the driver's descendants every ``POLL_S`` (those still running from
earlier lists stay on it); when the pipe closes (the driver ended, however it ended), it stops
every listed process that still runs with the same start time (a pid reused since is left
alone): SIGTERM, then SIGKILL after ``STOP_GRACE_S``. A run's worker that receives the SIGTERM
stops at its next step boundary, as after any SIGTERM (``runners/run/stop_signals.py``), if it
can within the grace.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys

import psutil

POLL_S = 0.5
"""Seconds between two listings of the driver's descendants."""
STOP_GRACE_S = 3.0
"""Seconds the listed processes get to end after SIGTERM before SIGKILL."""

_WATCHER: subprocess.Popen[bytes] | None = None
"""This process's watcher; held so that the pipe's write end stays open while it lives."""


def guard_local_ray() -> int:
    """Start this process's watcher (once per process); its pid."""
    global _WATCHER
    if _WATCHER is None or _WATCHER.poll() is not None:
        _WATCHER = subprocess.Popen([sys.executable, "-m", __name__, str(os.getpid())],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
    return _WATCHER.pid


def watch(driver_pid: int, pipe_fd: int) -> list[psutil.Process]:
    """List ``driver_pid``'s descendants until ``pipe_fd`` closes, then stop them; the
    processes it stopped."""
    me = os.getpid()
    listed: dict[int, psutil.Process] = {}
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return []
    while True:
        readable, _, _ = select.select([pipe_fd], [], [], POLL_S)
        if readable and not os.read(pipe_fd, 4096):
            break  # the driver is gone
        listed = {pid: p for pid, p in listed.items() if p.is_running()}
        try:
            for child in driver.children(recursive=True):
                if child.pid != me:
                    listed.setdefault(child.pid, child)
        except psutil.NoSuchProcess:  # gone between two reads: the pipe says so next
            continue
    return stop(list(listed.values()))


def stop(processes: list[psutil.Process]) -> list[psutil.Process]:
    """SIGTERM every process of ``processes`` that still runs as listed (``is_running``
    compares its start time), SIGKILL those left after ``STOP_GRACE_S``; those signalled."""
    alive = [p for p in processes if p.is_running()]
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, left = psutil.wait_procs(alive, timeout=STOP_GRACE_S)
    for p in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    return alive


def _main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver's Ctrl-C is the driver's
    watch(int(sys.argv[1]), sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(_main())
