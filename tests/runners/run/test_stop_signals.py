"""A stop signal is a request taken at the next step boundary; later signals add nothing; a
loop that does not reach its boundary within the grace period is interrupted where it is; the
handlers are given back afterwards."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time

import pytest

from gatelab.runners.run.stop_signals import STOP_SIGNALS, Interrupted, StopSignals


def test_the_first_signal_asks_for_a_stop_that_check_takes() -> None:
    with StopSignals() as stop:
        stop.check()  # nothing asked yet
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs in the main thread, between bytecodes
        assert stop.requested == signal.SIGTERM
        with pytest.raises(Interrupted) as raised:
            stop.check()
    assert raised.value.signum == signal.SIGTERM and raised.value.signal_name == "SIGTERM"
    assert str(raised.value) == "stopped by SIGTERM"
    assert isinstance(raised.value, KeyboardInterrupt)  # handled wherever Ctrl-C is


def test_later_signals_add_nothing() -> None:
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.requested == signal.SIGINT


def test_a_loop_that_misses_its_boundary_is_interrupted_after_the_grace_period() -> None:
    start = time.monotonic()
    with pytest.raises(Interrupted) as raised, StopSignals(grace_s=0.3):
        os.kill(os.getpid(), signal.SIGTERM)
        while time.monotonic() - start < 30:  # a step that never ends
            time.sleep(0.01)
    assert raised.value.signum == signal.SIGTERM
    assert 0.3 <= time.monotonic() - start < 5


def test_a_stop_under_way_is_not_interrupted() -> None:
    with StopSignals(grace_s=0.2) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        stop.disarm()
        time.sleep(0.5)  # past the grace period: nothing is raised
        assert stop.requested == signal.SIGTERM


def test_without_a_grace_period_nothing_is_interrupted() -> None:
    with StopSignals(grace_s=None) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)
        assert stop.requested == signal.SIGTERM


def test_the_handlers_are_given_back() -> None:
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    with StopSignals():
        assert all(signal.getsignal(s) != before[s] for s in STOP_SIGNALS)
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


def test_outside_the_main_thread_the_handlers_are_left_alone() -> None:
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    seen: list[dict[int, object]] = []

    def run() -> None:
        with StopSignals():
            seen.append({s: signal.getsignal(s) for s in STOP_SIGNALS})

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [before]


def test_an_interruption_keeps_its_signal_across_pickling() -> None:
    """As it crosses the Ray boundary from a worker to the sweep's driver."""
    copy = pickle.loads(pickle.dumps(Interrupted(signal.SIGTERM)))
    assert isinstance(copy, Interrupted) and copy.signum == signal.SIGTERM


def test_a_stop_is_handed_on_to_a_python_handler_that_was_there_before() -> None:
    """Ray's SIGTERM handler in a worker: it ends the worker, so Ray reruns the run."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with StopSignals() as stop:
            stop.hand_on(signal.SIGTERM)
            stop.hand_on(signal.SIGINT)  # the default: raises KeyboardInterrupt, not called
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [signal.SIGTERM]
