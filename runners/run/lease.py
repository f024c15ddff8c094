"""One training per hash, across processes and nodes: a lease file per run hash.

A lease is ``<work_dir>/leases/<run hash>.json``, created atomically and complete (written
to a private file, then hard-linked to its name, which fails if the name exists) before the
MLflow run is created or resumed, holding its owner (host, pid, since). The owner
touches it every ``HEARTBEAT_S`` from a background thread; a lease whose heartbeat is older
than ``STALE_AFTER_S``, or whose owner is a process of this host that no longer exists, is
stale and taken over (removed under a mutex file, so two contenders cannot both take it). Processes
that share a tracking store must share the work dir for the lease to hold across them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gatelab.processes import pid_alive

HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0
POLL_S = 1.0


@dataclass(frozen=True)
class LeaseOwner:
    host: str
    pid: int
    since: float
    """Seconds since the epoch."""
    token: str

    def describe(self) -> str:
        started = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"process {self.pid} on {self.host} (since {started})"


def _me() -> LeaseOwner:
    return LeaseOwner(socket.gethostname(), os.getpid(), time.time(), uuid.uuid4().hex)


class Lease:
    """The lease of one run hash; use ``acquire`` (a context manager while held)."""

    def __init__(self, work_dir: Path, run_hash: str):
        self.path = work_dir / "leases" / f"{run_hash}.json"
        self.owner: LeaseOwner | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> LeaseOwner | None:
        """Who holds the lease now (``None``: nobody, or a holder that is gone)."""
        try:
            age = time.time() - self.path.stat().st_mtime
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            owner = LeaseOwner(**json.loads(text))
        except (json.JSONDecodeError, TypeError):
            # Not written by this module: held until its time stamp says it is stale.
            unknown = LeaseOwner("an unknown host", -1, time.time() - age, "")
            return None if age > STALE_AFTER_S else unknown
        gone = owner.host == socket.gethostname() and not pid_alive(owner.pid)
        return None if gone or age > STALE_AFTER_S else owner

    def try_acquire(self) -> tuple[bool, LeaseOwner | None]:
        """One attempt: (taken, the live holder if another process has it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = _me()
        mine = self.path.with_name(f"{self.path.name}.{me.token}")
        mine.write_text(json.dumps(vars(me)))
        try:
            os.link(mine, self.path)  # atomic, and the lease is never seen half written
        except FileExistsError:
            holder = self.holder()
            if holder is None:
                self._take_aside()
            return False, holder
        finally:
            mine.unlink(missing_ok=True)
        self.owner = me
        self._start_heartbeat()
        return True, None

    def acquire(self, on_wait: Callable[[LeaseOwner], None] | None = None) -> Lease:
        """Take the lease, waiting while another live process holds it (``on_wait`` is told
        once who it is)."""
        told = False
        while True:
            taken, holder = self.try_acquire()
            if taken:
                return self
            if holder is not None:
                if on_wait is not None and not told:
                    on_wait(holder)
                    told = True
                time.sleep(POLL_S)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S * 2)
        if self.owner is not None and self._mine():
            self.path.unlink(missing_ok=True)
        self.owner = None

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _mine(self) -> bool:
        try:
            return json.loads(self.path.read_text()).get("token") == (
                self.owner.token if self.owner else None)
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    def _take_aside(self) -> None:
        """Remove a stale lease. Under a short-lived mutex file (itself created with
        ``O_EXCL``), so that a contender never removes a lease another has just taken."""
        mutex = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(mutex, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - mutex.stat().st_mtime > STALE_AFTER_S:
                    mutex.unlink()  # its taker died in the middle
            time.sleep(POLL_S / 10)
            return
        os.close(fd)
        try:
            if self.path.exists() and self.holder() is None:
                self.path.unlink(missing_ok=True)
        finally:
            mutex.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                if self._mine():
                    os.utime(self.path)

        self._thread = threading.Thread(target=beat, name="gatelab-lease", daemon=True)
        self._thread.start()
