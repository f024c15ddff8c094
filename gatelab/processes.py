"""Whether a process of this host is alive: shared by the lease (``runners/run/lease.py``) and
the MLflow server of ``gatelab ui`` and ``gatelab server`` (``gatelab/tracking_server.py``), which
import nothing from each other."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
