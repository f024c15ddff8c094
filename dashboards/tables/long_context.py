"""Loss against position and length: the long-context stages (Table 5 scaled down).

A run recorded with ``position_buckets`` holds, for each multiple ``m`` of its training length
it was evaluated at, ``val_loss_ctx{m}x.pos{b}``: the mean validation loss of the predictions
made at positions ``[b*T//n, (b+1)*T//n)`` of windows ``T = m * seq_len`` tokens long (position
``t`` predicts token ``t + 1`` from ``t + 1`` tokens). A model that cannot read beyond its
training length shows it as a loss that rises in the buckets past it.

``loss_by_position`` is the long table (a row per stage, variant, length and bucket, the mean
over seeds); ``loss_by_length`` the same as one row per stage, variant and length with a column
per bucket, the report's table. Both are pure functions of the run frame. A run's stage is its
``stage`` tag (``extend``, ``yarn``: the sweep's stage names), else ``train`` for a run that
continued from none and ``continued`` for one that did; ``depth`` counts the runs before it.
"""

from __future__ import annotations

import polars as pl

from gatelab.dashboards.store.columns import FINISHED
from gatelab.metrics import CONTEXT_PATTERN, POSITION_PATTERN

FIRST_STAGE = "train"
"""The stage of a run that continued from none."""
CONTINUED = "continued"
"""The stage of a run that continued from another without a sweep's stage name."""

KEYS = ("depth", "stage", "variant", "setting", "seq_len", "rope_base", "yarn_factor",
        "multiple", "eval_len")
"""What a row of ``loss_by_length`` is (and, with the bucket, of ``loss_by_position``)."""

POSITION_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "depth": pl.Int64, "stage": pl.Utf8, "variant": pl.Utf8, "setting": pl.Utf8,
    "seq_len": pl.Int64, "rope_base": pl.Float64, "yarn_factor": pl.Float64,
    "multiple": pl.Int64, "eval_len": pl.Int64, "bucket": pl.Int64, "pos_start": pl.Int64,
    "pos_end": pl.Int64, "n": pl.Int64, "loss": pl.Float64, "loss_min": pl.Float64,
    "loss_max": pl.Float64,
}


def _column(runs: pl.DataFrame, name: str, dtype: pl.DataType | type[pl.DataType]) -> pl.Expr:
    present = pl.col(name) if name in runs.columns else pl.lit(None)
    return present.cast(dtype, strict=False)


def _depths(runs: pl.DataFrame) -> pl.Series:
    """How many runs of the frame precede each run in its chain of stages (a parent outside
    the frame counts as one)."""
    hashes = runs["run_hash"].to_list()
    parents = dict(zip(hashes, runs.select(_column(runs, "parent_hash", pl.Utf8))
                       .to_series().to_list(), strict=True))
    depth: dict[str, int] = {}

    def of(run_hash: str) -> int:
        if run_hash not in depth:
            parent = parents.get(run_hash)
            depth[run_hash] = (0 if parent is None else of(parent) + 1 if parent in parents
                               else 1)
        return depth[run_hash]

    return pl.Series("depth", [of(h) for h in hashes], dtype=pl.Int64)


def _matching(runs: pl.DataFrame, pattern: str) -> list[str]:
    return [c for c in runs.columns if pl.select(pl.lit(c).str.contains(pattern)).item()]


def _by_multiple(runs: pl.DataFrame, pattern: str, value: str) -> pl.DataFrame:
    """The columns of ``runs`` named by ``pattern`` in long form: ``run_id``, ``multiple``,
    the bucket where the pattern has one, and ``value``."""
    names = _matching(runs, pattern)
    long = runs.unpivot(on=names, index="run_id", variable_name="metric", value_name=value)
    parts = pl.col("metric").str.extract_groups(pattern)
    columns = [parts.struct.field("1").cast(pl.Int64).alias("multiple")]
    if pattern == POSITION_PATTERN:
        columns.append(parts.struct.field("2").cast(pl.Int64).alias("bucket"))
    return long.drop_nulls(value).with_columns(columns).drop("metric")


def _stage_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """Per finished run with position metrics, multiple and bucket: its keys, the bucket's
    loss (``loss``), how many buckets the window has and the whole window's loss (``whole``)."""
    fin = runs.filter(pl.col("status") == FINISHED)
    if not _matching(runs, POSITION_PATTERN) or fin.is_empty():
        return pl.DataFrame()
    parent = _column(fin, "parent_hash", pl.Utf8)
    keyed = fin.with_columns(_depths(fin)).select(
        "run_id", "setting", "depth", "variant",
        pl.coalesce(_column(fin, "stage", pl.Utf8),
                    pl.when(parent.is_null()).then(pl.lit(FIRST_STAGE))
                    .otherwise(pl.lit(CONTINUED))).alias("stage"),
        _column(fin, "recipe.seq_len", pl.Int64).alias("seq_len"),
        _column(fin, "backbone.rope_base", pl.Float64).alias("rope_base"),
        _column(fin, "recipe.yarn.factor", pl.Float64).alias("yarn_factor"))
    buckets = _by_multiple(fin, POSITION_PATTERN, "loss")
    whole = _by_multiple(fin, CONTEXT_PATTERN, "whole")
    return (keyed.join(buckets, on="run_id")
            .join(whole, on=["run_id", "multiple"], how="left")
            .with_columns((pl.col("multiple") * pl.col("seq_len")).alias("eval_len"),
                          pl.len().over("run_id", "multiple").alias("buckets")))


def loss_by_position(runs: pl.DataFrame) -> pl.DataFrame:
    """One row per (setting, stage, variant, length multiple, bucket): the positions the
    bucket covers (``pos_start`` inclusive, ``pos_end`` exclusive), ``n`` finished runs, and
    their mean, smallest and largest loss there; rows in chain order (``depth``), then by
    stage, setting, variant, multiple and bucket."""
    long = _stage_runs(runs)
    if long.is_empty():
        return pl.DataFrame(schema=POSITION_SCHEMA)
    long = long.with_columns(
        (pl.col("bucket") * pl.col("eval_len") // pl.col("buckets")).alias("pos_start"),
        ((pl.col("bucket") + 1) * pl.col("eval_len") // pl.col("buckets")).alias("pos_end"))
    out = long.group_by(*KEYS, "bucket", "pos_start", "pos_end").agg(
        pl.len().cast(pl.Int64).alias("n"), pl.col("loss").mean(),
        pl.col("loss").min().alias("loss_min"), pl.col("loss").max().alias("loss_max"))
    return (out.sort("depth", "stage", "setting", "variant", "multiple", "bucket",
                     nulls_last=True)
            .select(list(POSITION_SCHEMA)).cast(POSITION_SCHEMA))  # type: ignore[arg-type]


def loss_by_length(runs: pl.DataFrame) -> pl.DataFrame:
    """``loss_by_position`` as one row per (setting, stage, variant, length multiple): ``n``
    finished runs, ``loss`` (their mean whole-window loss, ``val_loss_ctx{m}x``) and one
    column per bucket (``pos0``, ``pos1``...: the mean loss there); the last buckets of the
    longer windows are where a model reads past its training length."""
    table = loss_by_position(runs)
    if table.is_empty():
        return pl.DataFrame(schema={**{k: POSITION_SCHEMA[k] for k in KEYS}, "n": pl.Int64,
                                    "loss": pl.Float64})
    wide = (table.with_columns(pl.format("pos{}", "bucket").alias("position"))
            .pivot(on="position", index=list(KEYS), values="loss", sort_columns=False))
    whole = (_stage_runs(runs).unique(["run_id", "multiple"])
             .group_by(*KEYS).agg(pl.len().cast(pl.Int64).alias("n"),
                                  pl.col("whole").mean().alias("loss")))
    buckets = sorted((c for c in wide.columns if c.startswith("pos")), key=lambda c: int(c[3:]))
    return (wide.join(whole, on=list(KEYS), how="left", nulls_equal=True)
            .sort("depth", "stage", "setting", "variant", "multiple", nulls_last=True)
            .select(*KEYS, "n", "loss", *buckets))
