"""Live progress on stderr: ``TrainBar`` for one run (steps, loss, tokens/s), ``LiveView`` for a
sweep (a bar over runs, each running run's step and loss, and a line for every run as it ends,
failures with their cause; a ``SweepObserver``). Outside a terminal both redraw rarely: every
redraw appends a line to a log file."""

from __future__ import annotations

import sys
from typing import Any

from gatelab.runners.run.train import Progress, RunResult
from gatelab.runners.sweep.plan import PlannedRun


def _redraw_every(terminal_s: float) -> float:
    return terminal_s if sys.stderr.isatty() else 30.0


class TrainBar:
    """A progress bar for one run, fed by ``train``'s ``on_progress``; it starts at the first
    step it sees, so a resumed run's bar continues from its checkpoint."""

    def __init__(self, desc: str, enabled: bool = True):
        self.desc, self.enabled = desc, enabled
        self.bar: Any = None

    def update(self, p: Progress) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=p.total, initial=p.step - 1, desc=self.desc, unit="step",
                            dynamic_ncols=True, leave=True, mininterval=_redraw_every(0.2))
        self.bar.update(p.step - self.bar.n)
        self.bar.set_postfix(loss=f"{p.loss:.3f}", tok_s=f"{p.tokens_per_s:,.0f}",
                             refresh=False)

    def __enter__(self) -> TrainBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


class LiveView:
    def __init__(self, runs: list[PlannedRun], enabled: bool = True):
        from tqdm import tqdm

        self.runs = {p.run_hash: p for p in runs}
        self.done: set[str] = set()
        # In a log file (not a terminal) redraw rarely: every redraw appends a line's worth.
        self.bar = tqdm(total=len(runs), unit="run", desc="sweep", file=sys.stderr,
                        disable=not enabled, dynamic_ncols=True,
                        mininterval=_redraw_every(0.5))

    def refresh(self, latest: dict[str, tuple[int, int, float]]) -> None:
        parts = []
        for h, (step, total, loss) in latest.items():
            p = self.runs.get(h)
            if p is not None and h not in self.done:
                parts.append(f"{p.spec.id}@{p.recipe.lr:g}/s{p.recipe.seed} {step}/{total} "
                             f"loss {loss:.3f}")
        self.bar.set_postfix_str(" | ".join(parts[:4]) + (" ..." if len(parts) > 4 else ""),
                                 refresh=False)

    def finished(self, p: PlannedRun, result: RunResult) -> None:
        self.done.add(p.run_hash)
        val_loss = result.metric("val_loss")
        detail = (f"val_loss {val_loss:.4f}" if val_loss is not None
                  else result.cause or str(result.summary.get("divergence", "")))
        self.bar.write(f"{result.status.value:9s} {p.spec.id} lr={p.recipe.lr:g} "
                       f"seed={p.recipe.seed} {detail}", file=sys.stderr)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
