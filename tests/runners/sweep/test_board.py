"""The progress board's reporter: what a run tells the board, and when (that the board's module
imports no training code is in ``tests/test_layout.py``)."""

from __future__ import annotations


def test_the_reporter_tells_the_board_at_most_every_interval_and_always_at_the_end() -> None:
    from dataclasses import dataclass

    from gatelab.runners.sweep.board import Reporter

    sent: list[tuple[str, int, int, float]] = []

    class Method:
        def remote(self, *args: object) -> None:
            sent.append(args)  # type: ignore[arg-type]

    class Board:
        report = Method()

    @dataclass
    class P:
        step: int
        total: int
        loss: float

    reporter = Reporter(Board(), "h", every_s=3600.0)
    for step in range(1, 11):
        reporter(P(step, 10, 1.0 / step))
    assert [s[1] for s in sent] == [1, 10]  # the first report, then only the last step's
    assert sent[-1] == ("h", 10, 10, 0.1)
