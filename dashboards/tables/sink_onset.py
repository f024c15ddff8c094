"""When a sink forms during one run: from the per-layer sink metrics logged at each evaluation
(``sink_head_max.layerXX``: the largest head's first-token share in layer XX), the first step
at which some head of some layer reaches ``SINK_HEAD_THRESHOLD`` (the sink metric of Gu et al.
2024), per run; with ``eval_schedule: log`` (the ``sink-onset`` sweep) the steps are
log-spaced, so the onset is bracketed within a factor of the spacing."""

from __future__ import annotations

import polars as pl

from gatelab.contract import SINK_HEAD_THRESHOLD
from gatelab.dashboards.store.columns import layer_columns
from gatelab.metrics import Metric

SINK_ONSET_SCHEMA = {
    "variant": pl.Utf8, "seed": pl.Int64, "setting": pl.Utf8, "evaluations": pl.Int64,
    "last_step": pl.Int64, "onset_step": pl.Int64, "onset_layer": pl.Utf8,
    "largest_share": pl.Float64, "largest_at_step": pl.Int64, "note": pl.Utf8,
}


def sink_onset(history: pl.DataFrame) -> pl.DataFrame:
    """``history``: ``Runs.history`` of the ``sink_head_max.layerXX`` metrics. Per run: how
    many evaluations, the first step at which some layer's largest head reached the threshold
    and which layer (null: never), and the largest share seen with its step."""
    if history.is_empty():
        return pl.DataFrame(schema=SINK_ONSET_SCHEMA)
    sink_layers = layer_columns(history["metric"].unique().to_list(), Metric.SINK_HEAD_MAX)
    points = history.filter(pl.col("metric").is_in(sink_layers) & pl.col("value").is_not_nan())
    rows = []
    for _, run in points.group_by("run_id", maintain_order=True):
        run = run.sort("step")
        over = run.filter(pl.col("value") >= SINK_HEAD_THRESHOLD)
        top = run.sort("value", descending=True).row(0, named=True)
        first = over.row(0, named=True) if over.height else None
        steps = run["step"].unique()
        note = (None if first else
                f"no head reached {SINK_HEAD_THRESHOLD} in {steps.len()} evaluations up to "
                f"step {int(steps.max())}")  # type: ignore[arg-type]
        rows.append({
            "variant": top["variant"], "seed": top["seed"], "setting": top["setting"],
            "evaluations": steps.len(), "last_step": int(steps.max()),  # type: ignore[arg-type]
            "onset_step": None if first is None else first["step"],
            "onset_layer": None if first is None else first["metric"].rsplit(".", 1)[-1],
            "largest_share": top["value"], "largest_at_step": top["step"], "note": note,
        })
    return pl.DataFrame(rows, schema=SINK_ONSET_SCHEMA).sort("setting", "variant", "seed")
