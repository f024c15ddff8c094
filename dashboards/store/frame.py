"""Recorded runs -> one Polars frame: a row per training run, typed columns (``columns.py``).

``load_frame`` reads a store (``open_store.py``) and ``to_frame`` types what it read: tags
become named columns, params keep their names with a type inferred over all runs (Int64,
Float64, Boolean or Utf8; the string ``None`` is null), latest metrics become Float64 columns.
Where a hash was recorded twice (it should not be), the newest run is kept. Where one variant
id was recorded with several architectures, each is a variant of its own, ``ID@HASH8``
(``identity.py``); ``variant_id`` is the id as recorded.
"""

from __future__ import annotations

import polars as pl

from gatelab.contract import IN_SWEEP, NO_VALUE, SWEEP_TAG_PREFIX
from gatelab.dashboards.store.columns import (
    FINAL_METRICS,
    METRIC_PREFIX,
    PARAM_TYPES,
    RUN_COLUMNS,
    TAG_COLUMNS,
    DType,
    empty_frame,
)
from gatelab.dashboards.store.identity import by_architecture
from gatelab.dashboards.store.open_store import Backend, open_store
from gatelab.dashboards.store.raw_runs import RawRuns


def load_frame(tracking_uri: str | None = None, experiment: str | None = "gatelab",
               sweep: str | None = None, backend: Backend = "auto") -> pl.DataFrame:
    """The training runs of ``experiment`` (``None``: all) in ``sweep`` (``None``: all)."""
    return to_frame(open_store(tracking_uri, backend).read_runs(experiment, sweep))


def to_frame(raw: RawRuns) -> pl.DataFrame:
    """Type and join the long tables of ``raw`` into one row per run."""
    if raw.runs.is_empty():
        return empty_frame()
    frame = (
        raw.runs.with_columns(pl.col("start_time", "end_time").cast(pl.Datetime("ms"))
                              .dt.replace_time_zone("UTC"))
        .join(_tag_columns(raw.tags), on="run_id", how="left")
        .join(_param_columns(raw.params), on="run_id", how="left")
        .join(_metric_columns(raw.metrics), on="run_id", how="left")
    )
    # A run recorded before the runner tagged setting hashes is a setting of its own.
    frame = frame.with_columns(pl.col("setting_id").fill_null(pl.col("run_hash")),
                               pl.col("lr_setting_id").fill_null(pl.col("run_hash")))
    missing = [m for m in FINAL_METRICS if m not in frame.columns]
    frame = frame.with_columns(pl.lit(None, pl.Float64).alias(m) for m in missing)
    frame = (frame.sort("start_time", descending=True, nulls_last=True)
             .unique("run_hash", keep="first", maintain_order=True))
    frame = (by_architecture(frame, raw.params)
             .sort("variant", "setting_id", "seed", nulls_last=True))
    frame = frame.join(_setting_labels(frame), on="setting_id", how="left")
    return frame.select(_column_order(frame.columns))


def _tag_columns(tags: pl.DataFrame) -> pl.DataFrame:
    ids = tags.select("run_id").unique()
    known = tags.filter(pl.col("key").is_in(list(TAG_COLUMNS)))
    wide = known.pivot(on="key", index="run_id", values="value") if known.height else ids
    wide = ids.join(wide, on="run_id", how="left")
    typed = []
    for tag, (name, dtype) in TAG_COLUMNS.items():
        col = pl.col(tag) if tag in wide.columns else pl.lit(None, pl.Utf8)
        col = pl.when(col == NO_VALUE).then(None).otherwise(col)
        typed.append(col.cast(dtype, strict=False).alias(name))
    sweeps = (tags.filter(pl.col("key").str.starts_with(SWEEP_TAG_PREFIX)
                          & (pl.col("value") == IN_SWEEP))
              .group_by("run_id")
              .agg(pl.col("key").str.strip_prefix(SWEEP_TAG_PREFIX).sort().alias("sweeps")))
    return (wide.select("run_id", *typed).join(sweeps, on="run_id", how="left")
            .with_columns(pl.col("sweeps").fill_null(pl.lit([], pl.List(pl.Utf8)))))


def infer_dtype(values: pl.Series) -> pl.Series:
    """A column of MLflow param strings, typed: Int64 if every value is an integer, else
    Float64 if every value is a number, else Boolean for True/False, else Utf8.
    ``None`` (Python's ``str(None)``) and missing values are null."""
    s = values.cast(pl.Utf8)
    s = pl.select(pl.when(s == "None").then(None).otherwise(s)).to_series().alias(values.name)
    present = s.drop_nulls()
    if present.len() == 0:
        return s
    as_int = present.str.to_integer(strict=False)
    if as_int.null_count() == 0:
        return s.str.to_integer(strict=False)
    as_float = present.cast(pl.Float64, strict=False)
    if as_float.null_count() == 0:
        return s.cast(pl.Float64, strict=False)
    if present.is_in(["True", "False"]).all():
        return s == "True"
    return s


def _param_columns(params: pl.DataFrame) -> pl.DataFrame:
    if params.is_empty():
        return pl.DataFrame(schema={"run_id": pl.Utf8})
    wide = params.pivot(on="key", index="run_id", values="value")
    return wide.select("run_id", *(
        _typed(wide[c], PARAM_TYPES[c]) if c in PARAM_TYPES else infer_dtype(wide[c])
        for c in wide.columns if c != "run_id"))


def _typed(values: pl.Series, dtype: DType) -> pl.Series:
    none = pl.select(pl.when(values == "None").then(None).otherwise(values)).to_series()
    return none.cast(dtype, strict=False).alias(values.name)


def _metric_columns(metrics: pl.DataFrame) -> pl.DataFrame:
    if metrics.is_empty():
        return pl.DataFrame(schema={"run_id": pl.Utf8})
    wide = metrics.pivot(on="key", index="run_id", values="value")
    taken = {*RUN_COLUMNS, *(name for name, _ in TAG_COLUMNS.values())}
    return wide.rename({c: METRIC_PREFIX + c for c in wide.columns if c in taken - {"run_id"}})


def setting_label(size: object, steps: object, tokens: object, batch: object, seq: object,
                  lr: object) -> str:
    """``tiny, 300 steps, batch 16x128, lr 0.003``; parts that are missing are left out."""
    parts = [str(size) if size is not None else "?"]
    if tokens is not None:
        parts.append(f"{tokens:,} tokens")
    elif steps is not None:
        parts.append(f"{steps} steps")
    if batch is not None and seq is not None:
        parts.append(f"batch {batch}x{seq}")
    if lr is not None:
        parts.append(f"lr {lr:g}")
    return ", ".join(parts)


def _setting_labels(frame: pl.DataFrame) -> pl.DataFrame:
    """Readable labels of ``setting_id`` (``setting``) and ``lr_setting_id`` (``lr_setting``,
    the same without the LR); two settings with the same label get their ids appended."""
    def col(name: str, fallback: str | None = None) -> pl.Expr:
        if name in frame.columns:
            return pl.col(name)
        return pl.col(fallback) if fallback else pl.lit(None)

    parts = frame.select(
        "setting_id", "lr_setting_id", col("recipe.size", "size").alias("size"),
        col("recipe.steps").alias("steps"), col("recipe.tokens").alias("tokens"),
        col("recipe.batch_size").alias("batch"), col("recipe.seq_len").alias("seq"),
        col("recipe.lr", "lr").alias("lr"),
    ).unique("setting_id", maintain_order=True)
    rows = list(parts.iter_rows(named=True))
    full = _dedupe_labels({r["setting_id"]: setting_label(
        r["size"], r["steps"], r["tokens"], r["batch"], r["seq"], r["lr"]) for r in rows})
    no_lr = _dedupe_labels({r["lr_setting_id"]: setting_label(
        r["size"], r["steps"], r["tokens"], r["batch"], r["seq"], None) for r in rows})
    return parts.select(
        "setting_id",
        pl.col("setting_id").replace_strict(full, return_dtype=pl.Utf8).alias("setting"),
        pl.col("lr_setting_id").replace_strict(no_lr, return_dtype=pl.Utf8).alias("lr_setting"),
    )


def _dedupe_labels(labels: dict[str, str]) -> dict[str, str]:
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {key: label if counts[label] == 1 else f"{label} #{key}"
            for key, label in labels.items()}


def _column_order(columns: list[str]) -> list[str]:
    tag_cols = [name for name, _ in TAG_COLUMNS.values()]
    first = ["run_id", "run_name", "experiment", *tag_cols[:9], "sweeps", "variant_id",
             "spec_hash", "setting",
             "lr_setting", *tag_cols[9:], *RUN_COLUMNS.keys(),
             *FINAL_METRICS]
    ordered = [c for c in dict.fromkeys(first) if c in columns]
    rest = [c for c in columns if c not in ordered]
    is_param = [c.startswith(("spec.", "recipe.", "backbone.")) for c in rest]
    metrics = sorted(c for c, param in zip(rest, is_param, strict=True) if not param)
    params = sorted(c for c, param in zip(rest, is_param, strict=True) if param)
    return ordered + metrics + params
