"""The columns of the run frame: which MLflow tag, param or metric becomes which typed column.

One row per training run. Tags become named columns (``gatelab.seed`` -> ``seed``, Int64);
params keep their flattened names (``recipe.lr``, ``spec.gate.position``, ``backbone.n_layers``)
with a type inferred from all runs' values; metrics keep their recorded names (``val_loss``,
``f_attn.layer03``, ``gate_score.mean``) as Float64, each the run's latest value (for a
finished run: the final measurement).
"""

from __future__ import annotations

import polars as pl

DType = pl.DataType | type[pl.DataType]
"""A Polars dtype, as a class (``pl.Int64``) or an instance (``pl.List(pl.Utf8)``)."""

TAG_COLUMNS: dict[str, tuple[str, DType]] = {
    "gatelab.variant": ("variant", pl.Utf8),
    "gatelab.run_hash": ("run_hash", pl.Utf8),
    "gatelab.status": ("status", pl.Utf8),
    "gatelab.seed": ("seed", pl.Int64),
    "gatelab.lr": ("lr", pl.Float64),
    "gatelab.size": ("size", pl.Utf8),
    "gatelab.position": ("position", pl.Utf8),
    "gatelab.granularity": ("granularity", pl.Utf8),
    "gatelab.paper_row": ("paper_row", pl.Utf8),
    "gatelab.diverged_step": ("diverged_step", pl.Int64),
    "gatelab.divergence": ("divergence", pl.Utf8),
    "gatelab.failure": ("failure", pl.Utf8),
    "gatelab.git_commit": ("git_commit", pl.Utf8),
}
"""gatelab tag -> (column, dtype). The value ``none`` (the baseline's position) becomes null."""

SWEEP_TAG_PREFIX = "gatelab.sweep."
"""A run belongs to sweep NAME when it has the tag ``gatelab.sweep.NAME``."""
SUMMARY_TAG = "gatelab.summary"
"""Set on the summary runs ``gatelab report`` writes; such runs are never training runs."""
HASH_TAG = "gatelab.run_hash"
"""Every training run has one; runs without it are not loaded."""

RUN_COLUMNS: dict[str, DType] = {
    "run_id": pl.Utf8,
    "run_name": pl.Utf8,
    "experiment": pl.Utf8,
    "mlflow_status": pl.Utf8,
    "start_time": pl.Datetime("ms", "UTC"),
    "end_time": pl.Datetime("ms", "UTC"),
}
"""Columns taken from the MLflow run itself."""

FINAL_METRICS: tuple[str, ...] = (
    "val_loss", "val_ppl", "val_bpb", "val_loss_ctx1x", "val_loss_ctx2x", "val_loss_ctx4x",
    "f_attn", "m_act", "gate_score.mean", "gate_score.frac_below_0.01",
    "gate_score.frac_below_0.1", "loss_spikes", "spike_score", "max_grad_norm",
    "tokens_per_s", "train_time_s", "params", "tokens", "steps",
)
"""Metrics every frame has as columns (null where a run did not record them)."""

PARAM_TYPES: dict[str, DType] = {
    "recipe.seed": pl.Int64, "recipe.lr": pl.Float64, "recipe.steps": pl.Int64,
    "recipe.tokens": pl.Int64, "spec.gate.init.bias": pl.Float64,
}
"""Params whose type is known even when every run recorded ``None`` (others are inferred)."""

METRIC_PREFIX = "metric."
"""Prefix of a metric whose name is also a tag column: the per-step ``lr`` metric (the last
learning rate of the schedule) is ``metric.lr``, beside the ``lr`` tag (the peak LR)."""

DERIVED_COLUMNS: dict[str, DType] = {
    "sweeps": pl.List(pl.Utf8),
    "setting_id": pl.Utf8,
    "lr_setting_id": pl.Utf8,
    "setting": pl.Utf8,
    "lr_setting": pl.Utf8,
}
"""``sweeps``: the sweeps a run is tagged with. ``setting_id``: a hash of the recipe without
the seed (runs that differ only by seed share it: they are the seeds of one setting).
``lr_setting_id``: the same without the learning rate (the rows of an LR grid). ``setting``:
a readable label of the setting (size, steps or tokens, batch, sequence length, LR);
``lr_setting``: the same without the LR."""

DONE_STATUSES = ("finished", "diverged")
"""Runs whose result is final; ``failed``, ``running`` and ``interrupted`` ones are not."""


def layer_columns(columns: list[str], metric: str) -> list[str]:
    """The per-layer columns of ``metric`` (``f_attn`` -> ``f_attn.layer00``, ...), in order."""
    prefix = f"{metric}.layer"
    return sorted(c for c in columns if c.startswith(prefix) and c[len(prefix):].isdigit())


def empty_frame() -> pl.DataFrame:
    """A frame with no runs and every fixed column."""
    schema: dict[str, pl.DataType | DType] = dict(RUN_COLUMNS)
    schema.update({col: dtype for col, dtype in TAG_COLUMNS.values()})
    schema.update(DERIVED_COLUMNS)
    schema.update({m: pl.Float64 for m in FINAL_METRICS})
    return pl.DataFrame(schema=schema)
