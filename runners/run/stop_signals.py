"""A clean stop on SIGTERM or SIGINT: what ``timeout``, Slurm, Kubernetes and Ray send before
they kill a process (preemption), and Ctrl-C.

While ``StopSignals`` is active, the first of these signals only asks for a stop: the training
loop sees ``requested`` at its next step boundary, checkpoints there, ends its MLflow run
``KILLED`` and raises ``Interrupted``. Later signals add nothing (Ray's ``cancel`` and a
terminal's Ctrl-C may both reach one worker). A loop that has not reached its boundary
``STOP_GRACE_S`` after the first signal is interrupted where it is (``Interrupted`` raised in
the main thread, no checkpoint written: the last one stays), so a stop takes a bounded time.
Signal handlers can only be installed from the main thread; elsewhere (a thread of one's own)
the context changes nothing and the signals keep their handlers.

Once the run has stopped, ``hand_on`` gives the signal to the handler that was there before,
where that is a handler of Python's own: in a Ray worker, Ray's SIGTERM handler, which makes the
worker exit as a system failure, so that Ray reruns the run (on another node when this one is
going away) from the checkpoint just written.
"""

from __future__ import annotations

import _thread
import signal
import threading
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_GRACE_S = 20.0
"""Seconds between the first stop signal and the loop's interruption where it is, if it has not
reached a step boundary by then: under the 30 s that Slurm (``KillWait``) and Kubernetes
(``terminationGracePeriodSeconds``) leave before their SIGKILL, with time for the MLflow run to
be ended."""


class Interrupted(KeyboardInterrupt):
    """A run or a sweep stopped on a signal (``signum``). A ``KeyboardInterrupt``, so that every
    caller that handles Ctrl-C handles a preemption the same way."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        return f"stopped by {self.signal_name}"


class StopSignals:
    """Turns ``STOP_SIGNALS`` into a stop request while active (a context manager); see the
    module docstring. ``grace_s``: seconds from the first signal to the interruption of the
    main thread; ``None``: never (a caller that keeps its own deadline, the sweep driver)."""

    def __init__(self, grace_s: float | None = STOP_GRACE_S):
        self.grace_s = grace_s
        self.requested: int | None = None
        """The first stop signal received, ``None`` while none was."""
        self._previous: dict[int, Any] = {}
        self._timer: threading.Timer | None = None
        self._expired = False

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self.disarm()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def check(self) -> None:
        """Raise ``Interrupted`` if a stop was asked for: call it at a step boundary."""
        if self.requested is not None:
            raise Interrupted(self.requested)

    def disarm(self) -> None:
        """Cancel the interruption after the grace period (the stop is under way)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._expired = False

    def hand_on(self, signum: int) -> None:
        """Call the handler ``signum`` had before this context, if it is a Python function
        other than the one that raises ``KeyboardInterrupt`` (see the module docstring); it
        may raise (Ray's raises ``SystemExit``)."""
        previous = self._previous.get(signum)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, None)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._expired:  # the grace period is over: stop where the main thread is
            self._expired = False
            raise Interrupted(self.requested or signum)
        if self.requested is not None:
            return
        self.requested = signum
        if self.grace_s is not None:
            self._timer = threading.Timer(self.grace_s, self._expire, (signum,))
            self._timer.daemon = True
            self._timer.start()

    def _expire(self, signum: int) -> None:
        """The grace period is over: run the handler in the main thread once more."""
        self._expired = True
        _thread.interrupt_main(signal.Signals(signum))
