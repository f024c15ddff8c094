"""Live progress on stderr: ``TrainBar`` for one run (steps, loss, tokens/s), ``LiveView`` for a
sweep (a ``SweepObserver``).

A sweep's progress is a line per run event (started, resumed, finished, diverged, failed,
each with what it needs: the step a run resumes at, its validation loss, a failure's cause) and
a status of the runs that are training. In a terminal the status is a bar that redraws in place.
Outside one (stderr is not a terminal, or ``--no-progress``), where every redraw would be a line
of the log, the status is a plain line at most every ``STATUS_EVERY_S`` seconds, and every line
starts with the time of day::

    14:02:11 started   baseline lr=0.003 seed=0
    14:02:41 status: 0/8 runs ended; baseline lr=0.003 seed=0 step 120/150 loss 5.412 | ...
    14:02:52 finished  baseline lr=0.003 seed=0 val_loss 5.3012 (1/8)

A single run's ``TrainBar`` does the same: a bar in a terminal, elsewhere a line at its first
step, at most every ``STATUS_EVERY_S`` seconds after, and at its last.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from gatelab.contract import PlanState
from gatelab.metrics import Metric
from gatelab.runners.run.result import Progress, RunResult
from gatelab.runners.sweep.plan import PlannedRun

STATUS_EVERY_S = 30.0
"""Outside a terminal: the least time between two status lines, in seconds."""
STATUS_RUNS = 4
"""The training runs a status names (then ``...``)."""


class TrainBar:
    """Progress of one run, fed by ``train``'s ``on_progress``. In a terminal, a bar that starts
    at the first step it sees (a resumed run's continues from its checkpoint); elsewhere a line
    at its first step, at most every ``STATUS_EVERY_S`` seconds, and at its last."""

    def __init__(self, desc: str, enabled: bool = True, *, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 status_every_s: float = STATUS_EVERY_S):
        self.desc, self.enabled = desc, enabled
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.lines = _Lines(self.stream, clock, status_every_s)
        self.bar: Any = None
        self.started = False

    def update(self, p: Progress) -> None:
        if not self.enabled:
            return
        if not self.terminal:
            text = (f"{self.desc} step {p.step}/{p.total} loss {p.loss:.3f} "
                    f"tok/s {p.tokens_per_s:,.0f}")
            if not self.started or p.step == p.total:
                self.lines.event(text)
            else:
                self.lines.status_line(text)
            self.started = True
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=p.total, initial=p.step - 1, desc=self.desc, unit="step",
                            dynamic_ncols=True, leave=True, mininterval=0.2, file=self.stream)
        self.bar.update(p.step - self.bar.n)
        self.bar.set_postfix(loss=f"{p.loss:.3f}", tok_s=f"{p.tokens_per_s:,.0f}",
                             refresh=False)

    def __enter__(self) -> TrainBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def run_label(p: PlannedRun) -> str:
    return f"{p.spec.id} lr={p.recipe.lr:g} seed={p.recipe.seed}"


class _Output(Protocol):
    """Where a ``LiveView`` writes: a bar in a terminal, plain lines elsewhere."""

    def event(self, line: str) -> None: ...

    def status(self, running: str, ended: int, total: int) -> None: ...

    def close(self) -> None: ...


class _Bar:
    """A tqdm bar over runs, the running runs as its postfix, events printed above it."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="run", desc="sweep", file=sys.stderr,
                        dynamic_ncols=True, mininterval=0.5)

    def event(self, line: str) -> None:
        self.bar.write(line, file=sys.stderr)

    def status(self, running: str, ended: int, total: int) -> None:
        self.bar.update(ended - self.bar.n)
        self.bar.set_postfix_str(running, refresh=False)

    def close(self) -> None:
        self.bar.close()


class _Lines:
    """Plain lines, each stamped with the time of day; a status line at most every
    ``every_s`` seconds of ``clock``."""

    def __init__(self, stream: TextIO, clock: Callable[[], float], every_s: float):
        self.stream, self.clock, self.every_s = stream, clock, every_s
        self.last_status = clock()

    def _print(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=self.stream, flush=True)

    def event(self, line: str) -> None:
        self._print(line)

    def status(self, running: str, ended: int, total: int) -> None:
        self.status_line(f"status: {ended}/{total} runs ended; "
                         f"{running or 'none training yet'}")

    def status_line(self, text: str) -> None:
        """``text``, unless a status line went out less than ``every_s`` ago."""
        now = self.clock()
        if now - self.last_status < self.every_s:
            return
        self.last_status = now
        self._print(text)

    def close(self) -> None:
        pass


class LiveView:
    """Follows a sweep's runs (a ``SweepObserver``); see the module docstring. ``enabled``:
    ``False`` for ``--no-progress``, which writes the plain lines even in a terminal."""

    def __init__(self, runs: list[PlannedRun], enabled: bool = True, *,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 status_every_s: float = STATUS_EVERY_S):
        stream = stream or sys.stderr
        self.runs = {p.run_hash: p for p in runs}
        self.seen: set[str] = set()
        self.done: set[str] = set()
        self.out: _Output = (_Bar(len(runs)) if enabled and stream.isatty()
                             else _Lines(stream, clock, status_every_s))

    def refresh(self, latest: dict[str, tuple[int, int, float]]) -> None:
        parts = []
        for h, (step, total, loss) in latest.items():
            p = self.runs.get(h)
            if p is None or h in self.done:
                continue
            if h not in self.seen:
                self.seen.add(h)
                resumed = p.state is PlanState.RESUME
                self.out.event(f"{'resumed' if resumed else 'started':9s} {run_label(p)}"
                               + (f" at step {step}/{total}" if resumed else ""))
            parts.append(f"{run_label(p)} step {step}/{total} loss {loss:.3f}")
        running = " | ".join(parts[:STATUS_RUNS]) + (" | ..." if len(parts) > STATUS_RUNS
                                                      else "")
        self.out.status(running, len(self.done), len(self.runs))

    def finished(self, p: PlannedRun, result: RunResult) -> None:
        self.done.add(p.run_hash)
        summary = result.summary
        val_loss = summary.val_loss if summary else None
        detail = (f"{Metric.VAL_LOSS} {val_loss:.4f}" if val_loss is not None
                  else result.cause or (summary.divergence if summary else None) or "")
        earlier = " (recorded by another process)" if result.skipped else ""
        self.out.event(f"{result.status.value:9s} {run_label(p)} {detail}{earlier} "
                       f"({len(self.done)}/{len(self.runs)})")

    def close(self) -> None:
        self.out.close()
