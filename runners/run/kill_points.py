"""Test-only: a training process that kills itself (SIGKILL) at a named point of its
evaluation/flush/checkpoint cycle, so that a test can stop a run at each point exactly.

Set ``GATELAB_KILL_AT=POINT@STEP`` (``eval-flushed@4``) in a ``gatelab train`` process's
environment; unset, ``reached`` does nothing. Nothing but tests sets it: a kill -9 at an
arbitrary moment falls between two of these points, and the tests of exactly-once metrics
(``tests/runners/run/test_kill_cycle.py``) must reach every one of them, not the ones a timer
happens to hit.
"""

from __future__ import annotations

import enum
import os
import signal

KILL_AT_ENV = "GATELAB_KILL_AT"


class KillPoint(enum.StrEnum):
    """The points of a step's cycle, in order."""

    STEPPED = "stepped"
    """A step's metrics are buffered, nothing flushed."""
    EVALUATED = "evaluated"
    """An evaluation's metrics are buffered, not flushed."""
    EVAL_FLUSHED = "eval-flushed"
    """An evaluation's metrics are flushed to the store; no checkpoint holds the step."""
    CHECKPOINT_FLUSHED = "checkpoint-flushed"
    """At a checkpoint step, the metrics are flushed and the checkpoint is not yet written."""
    CHECKPOINTED = "checkpointed"
    """The checkpoint of the step is written."""
    FINAL_FLUSHED = "final-flushed"
    """The final step's summary metrics are flushed; the run is not yet marked finished."""
    CLOSED = "closed"
    """The run is marked finished; its checkpoint is not yet removed."""


def reached(point: KillPoint, step: int) -> None:
    """Kill this process if ``GATELAB_KILL_AT`` names ``point`` at ``step``."""
    target = os.environ.get(KILL_AT_ENV)
    if target is not None and target == f"{point.value}@{step}":
        os.kill(os.getpid(), signal.SIGKILL)
