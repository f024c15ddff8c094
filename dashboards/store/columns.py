"""The columns of the run frame: which MLflow tag, param or metric becomes which typed column.

One row per training run. Tags become named columns (``gatelab.seed`` -> ``seed``, Int64);
params keep their flattened names (``recipe.lr``, ``spec.gate.position``, ``backbone.n_layers``)
with a type inferred from all runs' values; metrics keep their recorded names (``val_loss``,
``f_attn.layer03``, ``gate_score.mean``) as Float64, each the run's latest value (for a
finished run: the final measurement).
"""

from __future__ import annotations

import polars as pl

from gatelab.contract import DONE_STATUSES as _DONE
from gatelab.contract import RunStatus, Tag
from gatelab.metrics import Metric, context_metric, parse_layer_metric

DType = pl.DataType | type[pl.DataType]
"""A Polars dtype, as a class (``pl.Int64``) or an instance (``pl.List(pl.Utf8)``)."""

TAG_COLUMNS: dict[str, tuple[str, DType]] = {
    Tag.VARIANT.value: ("variant", pl.Utf8),
    Tag.RUN_HASH.value: ("run_hash", pl.Utf8),
    Tag.STATUS.value: ("status", pl.Utf8),
    Tag.SEED.value: ("seed", pl.Int64),
    Tag.LR.value: ("lr", pl.Float64),
    Tag.SIZE.value: ("size", pl.Utf8),
    Tag.POSITION.value: ("position", pl.Utf8),
    Tag.GRANULARITY.value: ("granularity", pl.Utf8),
    Tag.PAPER_ROW.value: ("paper_row", pl.Utf8),
    Tag.SETTING_HASH.value: ("setting_id", pl.Utf8),
    Tag.LR_SETTING_HASH.value: ("lr_setting_id", pl.Utf8),
    Tag.DIVERGED_STEP.value: ("diverged_step", pl.Int64),
    Tag.DIVERGENCE.value: ("divergence", pl.Utf8),
    Tag.FAILURE.value: ("failure", pl.Utf8),
    Tag.GIT_COMMIT.value: ("git_commit", pl.Utf8),
    Tag.DEVICE.value: ("device", pl.Utf8),
    Tag.PRECISION.value: ("precision", pl.Utf8),
    Tag.KERNEL.value: ("kernel", pl.Utf8),
    Tag.TORCH_VERSION.value: ("torch_version", pl.Utf8),
    Tag.IDENTITY_VERSION.value: ("identity_version", pl.Int64),
    Tag.STAGE.value: ("stage", pl.Utf8),
    Tag.PARENT_HASH.value: ("parent_hash", pl.Utf8),
}
"""gatelab tag -> (column, dtype). The value ``none`` (the baseline's position) becomes null.
``setting_id`` and ``lr_setting_id`` are the runner's setting hashes (``gatelab.identity``);
a run recorded before they existed gets its own run hash for both (never pooled). ``stage`` and
``parent_hash``: a stage's name in its sweep and the run it continued from (null: neither)."""

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
    Metric.VAL_LOSS, Metric.VAL_PPL, Metric.VAL_BPB,
    context_metric(1), context_metric(2), context_metric(4),
    Metric.F_ATTN, Metric.M_ACT, Metric.SINK_HEAD_MAX, Metric.SINK_HEADS_FRAC,
    Metric.VALUE_DRAIN, Metric.RESID_PEAK_FIRST, Metric.GATE_SCORE_MEAN,
    Metric.GATE_SCORE_FRAC_BELOW_001, Metric.GATE_SCORE_FRAC_BELOW_01,
    Metric.LOSS_SPIKES, Metric.SPIKE_SCORE, Metric.MAX_GRAD_NORM, Metric.TOKENS_PER_S,
    Metric.TRAIN_TIME_S, Metric.PARAMS, Metric.TOKENS, Metric.STEPS,
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
    "variant_id": pl.Utf8,
    "spec_hash": pl.Utf8,
    "setting": pl.Utf8,
    "lr_setting": pl.Utf8,
}
"""``sweeps``: the sweeps a run is tagged with. ``variant_id``: the variant id the run was
recorded with (``variant`` is ``ID@HASH8`` where the id holds several architectures:
``identity.py``); ``spec_hash``: the hash of the architecture the run recorded, as ``gatelab
show`` prints a spec's (null: none recorded). ``setting``: a readable label of the setting
(size, steps or tokens, batch, sequence length, LR); ``lr_setting``: the same without the LR."""

FINISHED = RunStatus.FINISHED.value
DIVERGED = RunStatus.DIVERGED.value
DONE_STATUSES: list[str] = sorted(s.value for s in _DONE)
"""Runs whose result is final; ``failed``, ``running`` and ``interrupted`` ones are not."""


def layer_columns(columns: list[str], metric: Metric) -> list[str]:
    """The per-layer columns of ``metric`` (``f_attn`` -> ``f_attn.layer00``, ...), in layer
    order."""
    layers = {c: parsed[1] for c in columns
              if (parsed := parse_layer_metric(c)) is not None and parsed[0] == metric}
    return sorted(layers, key=layers.__getitem__)


def empty_frame() -> pl.DataFrame:
    """A frame with no runs and every fixed column."""
    schema: dict[str, pl.DataType | DType] = dict(RUN_COLUMNS)
    schema.update({col: dtype for col, dtype in TAG_COLUMNS.values()})
    schema.update(DERIVED_COLUMNS)
    schema.update({m: pl.Float64 for m in FINAL_METRICS})
    return pl.DataFrame(schema=schema)
