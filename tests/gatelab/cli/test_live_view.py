"""Progress outside a terminal: a sweep's is a line per run event and a status line at most
every 30 s, one run's a line at its ends and every 30 s, never a redrawn bar; checked on a fake
clock, then on a real sweep whose output is a pipe (where MLflow's database set-up messages must
not show either)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gatelab.cli.live_view import STATUS_EVERY_S, LiveView, TrainBar
from gatelab.contract import PlanState, RunStatus
from gatelab.run_summary import RunSummary
from gatelab.runners.run.result import Progress, RunResult

REPO = Path(__file__).resolve().parents[3]
STAMP = r"\d\d:\d\d:\d\d "
EVENT = re.compile(STAMP + r"(started|resumed|finished|diverged|failed)\s+(\S+) lr=\S+ seed=\d+")
STATUS = re.compile(STAMP + r"status: \d+/\d+ runs ended; ")
DB_SETUP = ("alembic", "Context impl", "non-transactional DDL", "Creating initial MLflow",
            "Updating database tables", "Running upgrade")
"""Fragments of MLflow's and alembic's messages as they set up a SQLite store."""


def planned(variant: str, state: PlanState = PlanState.TO_RUN) -> Any:
    """What ``LiveView`` reads of a ``PlannedRun``."""
    return SimpleNamespace(run_hash=f"h-{variant}", state=state,
                           spec=SimpleNamespace(id=variant),
                           recipe=SimpleNamespace(lr=0.003, seed=0))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_outside_a_terminal_each_event_is_a_line_and_status_comes_every_30_s() -> None:
    runs = [planned("baseline"), planned("g1-headwise", PlanState.RESUME)]
    out, clock = io.StringIO(), Clock()
    view = LiveView(runs, enabled=True, stream=out, clock=clock)  # a StringIO is no terminal
    for second in range(0, 95):  # the driver refreshes about once a second
        clock.now = 1000.0 + second
        latest = {"h-baseline": (second + 1, 200, 5.0)}
        if second >= 3:
            latest["h-g1-headwise"] = (100 + second, 200, 5.5)
        view.refresh(latest)
    summary = RunSummary(steps=200, tokens=1600, params=10, vocab_size=512, loss_spikes=0,
                         spike_score=0.0, max_grad_norm=1.0, train_time_s=9.0, val_loss=4.25)
    view.finished(runs[0], RunResult("r1", "h-baseline", RunStatus.FINISHED, summary))
    view.finished(runs[1], RunResult(None, "h-g1-headwise", RunStatus.FAILED,
                                     cause="RuntimeError: boom"))
    view.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    events = [m.groups() for line in lines if (m := EVENT.match(line))]
    assert events == [("started", "baseline"), ("resumed", "g1-headwise"),
                      ("finished", "baseline"), ("failed", "g1-headwise")]
    assert "resumed   g1-headwise lr=0.003 seed=0 at step 103/200" in out.getvalue()
    assert lines[-2].endswith("finished  baseline lr=0.003 seed=0 val_loss 4.2500 (1/2)")
    assert lines[-1].endswith("failed    g1-headwise lr=0.003 seed=0 RuntimeError: boom (2/2)")
    statuses = [line for line in lines if STATUS.match(line)]
    assert len(statuses) == 3  # at 30, 60 and 90 s: never closer than STATUS_EVERY_S
    assert "baseline lr=0.003 seed=0 step 31/200 loss 5.000 | g1-headwise" in statuses[0]
    assert len(lines) == len(events) + len(statuses)


def test_no_progress_writes_plain_lines_in_a_terminal_too() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    view = LiveView([planned("baseline")], enabled=False, stream=out, clock=Clock())
    view.refresh({"h-baseline": (1, 10, 5.0)})
    view.close()
    assert EVENT.match(out.getvalue())


@pytest.mark.slow
@pytest.mark.usefixtures("work_dir")  # a copy of the corpus's data cache
def test_a_real_sweep_logs_one_line_per_event_and_no_database_set_up(tmp_path: Path) -> None:
    """Two runs through Ray into a new store, stdout and stderr to pipes (no terminal, no
    --no-progress): the lines are counted."""
    (tmp_path / "sweeps.yaml").write_text(
        "mini:\n  description: two quick runs\n  variants: [baseline, g1-headwise]\n"
        "  recipe: tiny\n  overrides: {steps: 20, eval_every: 10, checkpoint_every: 10, "
        "warmup_steps: 3, batch_size: 8, seq_len: 64, eval_batches: 2, measure_batches: 1}\n"
        "  seeds: [0]\n  resources: {cpus: 1}\n")
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled",
               PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_LOGGING_LEVEL", None)
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "gatelab", "sweep", "mini", "--sweeps",
         str(tmp_path / "sweeps.yaml"), "--tracking-uri", f"sqlite:///{tmp_path / 'new.db'}",
         "--work-dir", str(tmp_path / "work")], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=600)
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stdout + done.stderr
    log = done.stdout + done.stderr
    assert "\r" not in log
    assert not [f for f in DB_SETUP if f in log], log
    lines = done.stderr.splitlines()
    events = [m.groups() for line in lines if (m := EVENT.match(line))]
    assert sorted(events) == [("finished", "baseline"), ("finished", "g1-headwise"),
                              ("started", "baseline"), ("started", "g1-headwise")], log
    statuses = [line for line in lines if STATUS.match(line)]
    assert len(statuses) <= elapsed / STATUS_EVERY_S + 1, statuses
    others = [line for line in lines if not EVENT.match(line) and not STATUS.match(line)]
    assert len(others) <= 4, others  # the plan's counts, the data it built: one line each


def test_one_run_outside_a_terminal_is_a_line_at_its_ends_and_every_30_s() -> None:
    out, clock = io.StringIO(), Clock()
    with TrainBar("baseline", stream=out, clock=clock) as bar:
        for step in range(1, 101):
            clock.now = 1000.0 + step  # a step a second
            bar.update(Progress(step, 100, 5.0, 1234.0))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split(" ", 1)[1] for line in lines] == [
        f"baseline step {s}/100 loss 5.000 tok/s 1,234" for s in (1, 30, 60, 90, 100)]
