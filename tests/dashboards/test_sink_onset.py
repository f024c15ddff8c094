"""The sink onset of a run, from its per-layer sink metrics at each evaluation."""

from __future__ import annotations

import polars as pl

from gatelab.dashboards.tables.sink_onset import sink_onset
from gatelab.runners.run.schedule import eval_steps


def _history(run: str, variant: str, points: dict[int, tuple[float, float]]) -> pl.DataFrame:
    rows = []
    for step, shares in points.items():
        rows += [{"run_id": run, "variant": variant, "seed": 0, "lr": 3e-3, "setting": "s",
                  "setting_id": "x", "status": "finished", "metric": f"sink_head_max.layer0{i}",
                  "step": step, "value": v} for i, v in enumerate(shares)]
    return pl.DataFrame(rows)


def test_the_first_step_where_a_head_reaches_the_threshold() -> None:
    steps = sorted(eval_steps(1000, 100, 8))
    base = {s: (0.05, min(0.6, 0.0005 * s)) for s in steps}  # layer 01 grows into a sink
    gate = {s: (0.05, 0.06) for s in steps}
    table = sink_onset(pl.concat([_history("a", "baseline", base),
                                  _history("b", "g1-elementwise", gate)]))
    b = table.filter(pl.col("variant") == "baseline").row(0, named=True)
    first = min(s for s in steps if 0.0005 * s >= 0.3)
    assert b["onset_step"] == first and b["onset_layer"] == "layer01"
    assert b["evaluations"] == len(steps) and b["largest_share"] == 0.5
    g = table.filter(pl.col("variant") == "g1-elementwise").row(0, named=True)
    assert g["onset_step"] is None and "no head reached 0.3 in 8 evaluations" in g["note"]


def test_log_spaced_evaluations_are_dense_early_and_end_at_the_last_step() -> None:
    steps = sorted(eval_steps(9000, 500, 24))
    assert steps[0] == 1 and steps[-1] == 9000 and 15 <= len(steps) <= 24
    assert all(b / a <= 2.5 for a, b in zip(steps[3:], steps[4:], strict=False))
    assert sorted(eval_steps(300, 100)) == [100, 200, 300]
    assert sorted(eval_steps(250, 100)) == [100, 200, 250]
