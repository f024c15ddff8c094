"""Live progress of a sweep's runs: an actor on the driver's node that every run reports to,
and the callback through which a run reports.

This module imports neither torch nor MLflow: the actor's worker process imports only it, so
the board costs the cores no import of the training stack (on two cores, that import took
about 5 s of CPU from the first runs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import ray


@ray.remote(num_cpus=0)
class ProgressBoard:
    """The latest (step, total, loss) of every running run, by hash."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[int, int, float]] = {}

    def report(self, run_hash: str, step: int, total: int, loss: float) -> None:
        self.latest[run_hash] = (step, total, loss)

    def snapshot(self) -> dict[str, tuple[int, int, float]]:
        return dict(self.latest)


@dataclass
class Reporter:
    """A picklable progress callback (a run's ``on_progress``) that tells the board at most
    every ``every_s`` seconds, and always at the last step."""

    board: Any
    run_hash: str
    every_s: float = 1.0
    last: float = 0.0

    def __call__(self, p: Any) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s or p.step == p.total:
            self.last = now
            self.board.report.remote(self.run_hash, p.step, p.total, p.loss)


def start_board() -> Any:
    """The progress board, on the driver's node: it lives as long as the driver, whichever
    worker node is lost."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ProgressBoard.options(scheduling_strategy=here).remote()  # type: ignore[attr-defined]
