"""The live view of a sweep on stderr: a bar over runs, each running run's step and loss, and
a line for every run as it ends (failures with their cause). A ``SweepObserver``."""

from __future__ import annotations

import sys

from gatelab.runners.run.train import RunResult
from gatelab.runners.sweep.plan import PlannedRun


class LiveView:
    def __init__(self, runs: list[PlannedRun], enabled: bool = True):
        from tqdm import tqdm

        self.runs = {p.run_hash: p for p in runs}
        self.done: set[str] = set()
        # In a log file (not a terminal) redraw rarely: every redraw appends a line's worth.
        self.bar = tqdm(total=len(runs), unit="run", desc="sweep", file=sys.stderr,
                        disable=not enabled, dynamic_ncols=True,
                        mininterval=0.5 if sys.stderr.isatty() else 30.0)

    def refresh(self, latest: dict[str, tuple[int, int, float]]) -> None:
        parts = []
        for h, (step, total, loss) in latest.items():
            p = self.runs.get(h)
            if p is not None and h not in self.done:
                parts.append(f"{p.spec.id}@{p.recipe.lr:g}/s{p.recipe.seed} {step}/{total} "
                             f"loss {loss:.3f}")
        self.bar.set_postfix_str(" | ".join(parts[:4]) + (" ..." if len(parts) > 4 else ""))

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
