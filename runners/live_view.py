"""The live view of a sweep on stderr: a bar over runs, each running run's step and loss, and
a line for every run as it ends (failures with their cause)."""

from __future__ import annotations

import sys
from typing import Any

from runners.plan import PlannedRun


class LiveView:
    def __init__(self, runs: list[PlannedRun], board: Any, enabled: bool = True):
        from tqdm import tqdm

        self.runs = {p.run_hash: p for p in runs}
        self.board = board
        self.done: set[str] = set()
        # In a log file (not a terminal) redraw rarely: every redraw appends a line's worth.
        self.bar = tqdm(total=len(runs), unit="run", desc="sweep", file=sys.stderr,
                        disable=not enabled, dynamic_ncols=True,
                        mininterval=0.5 if sys.stderr.isatty() else 30.0)

    def refresh(self) -> None:
        import ray

        latest = ray.get(self.board.snapshot.remote())
        running = [(h, v) for h, v in latest.items() if h not in self.done]
        parts = [f"{self.runs[h].spec.id}@{self.runs[h].recipe.lr:g}/s{self.runs[h].recipe.seed}"
                 f" {step}/{total} loss {loss:.3f}" for h, (step, total, loss) in running
                 if h in self.runs]
        self.bar.set_postfix_str(" | ".join(parts[:4]) + (" ..." if len(parts) > 4 else ""))

    def finished(self, p: PlannedRun, outcome: dict[str, Any]) -> None:
        self.done.add(p.run_hash)
        status = outcome.get("status", "?")
        detail = (f"val_loss {outcome['val_loss']:.4f}" if "val_loss" in outcome
                  else outcome.get("cause") or outcome.get("divergence") or "")
        self.bar.write(f"{status:9s} {p.spec.id} lr={p.recipe.lr:g} seed={p.recipe.seed} "
                       f"{detail}", file=sys.stderr)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
