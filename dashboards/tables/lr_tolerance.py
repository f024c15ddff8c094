"""Learning-rate tolerance: each variant's final loss over an LR grid, with its divergences.

The grid is every LR recorded for a setting that differs only by LR and seed
(``lr_setting_id``). ``lr_grid`` is the long, typed form (one row per variant and LR);
``lr_tolerance`` is the table a reader scans: one row per variant, one column per LR holding
the mean final validation loss or ``diverged k/n``, then the best LR (lowest mean loss), the
largest stable LR (the largest at which no run diverged and at least one finished) and its
ratio to the baseline's, and the largest LR whose loss stays within ``DEGRADED_MARGIN`` nats of
the variant's best (at the tiny size runs rarely diverge even at lr 0.1, but they degrade, as
the paper's Table 2 marks a baseline "degraded" at 9.195 against 7.4) and its ratio to the
baseline's. ``lr_grid`` also carries the mean ``m_act`` per LR: massive activations grow by
orders of magnitude with the LR.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from gatelab.dashboards.store.columns import DIVERGED, FINISHED
from gatelab.dashboards.tables.compare import REFERENCE, completed, finished, summarise
from gatelab.dashboards.tables.paper_numbers import paper_frame
from gatelab.metrics import Metric

GRID = ("lr_setting_id", "variant", "lr")

DEGRADED_MARGIN = 0.1
"""Nats above a variant's best mean loss beyond which an LR counts as degraded (~2% of the
tiny model's ~5 nats; the paper's degraded baseline is 1.7 nats above its best)."""


def _cell(row: dict[str, Any]) -> str:
    n, k = int(row["n"] or 0), int(row["n_diverged"] or 0)
    if n == 0:
        return f"diverged {k}/{k}"
    loss = f"{row[Metric.VAL_LOSS]:.3f}"
    if row["val_loss_ci95"] is not None:
        loss += f" ± {row['val_loss_ci95']:.3f}"
    return loss if k == 0 else f"{loss} (diverged {k}/{n + k})"


def lr_grid(runs: pl.DataFrame) -> pl.DataFrame:
    """One row per (LR setting, variant, LR): ``n`` finished, ``n_diverged``, the mean final
    validation loss of the finished runs with its 95% interval, and ``cell`` (its text)."""
    done = completed(runs)
    counts = done.group_by(GRID, maintain_order=True).agg(
        pl.col("lr_setting").first(),
        (pl.col("status") == FINISHED).sum().cast(pl.Int64).alias("n"),
        (pl.col("status") == DIVERGED).sum().cast(pl.Int64).alias("n_diverged"))
    loss = summarise(finished(runs), [Metric.VAL_LOSS, Metric.M_ACT], by=GRID).drop("n")
    out = counts.join(loss, on=list(GRID), how="left")
    cells = [_cell(row) for row in out.iter_rows(named=True)]
    out = out.with_columns(pl.Series("cell", cells, dtype=pl.Utf8))
    return out.sort("lr_setting", "variant", "lr").select(
        "lr_setting", "variant", "lr", "n", "n_diverged", Metric.VAL_LOSS, "val_loss_ci95",
        Metric.M_ACT, "m_act_ci95", "cell", "lr_setting_id")


def lr_summary(runs: pl.DataFrame) -> pl.DataFrame:
    """Per (LR setting, variant): ``n_lrs``, ``best_lr`` and its ``best_val_loss``,
    ``largest_stable_lr``, ``smallest_diverging_lr`` and ``stable_lr_ratio`` (largest stable
    LR over the baseline's in the same setting); ``largest_within_margin_lr`` (the largest
    LR whose mean loss is within ``DEGRADED_MARGIN`` of the best, with no divergence),
    ``degraded_lr`` (the smallest LR above the best that is beyond the margin or diverged)
    and ``tolerance_ratio`` (largest within margin over the baseline's)."""
    grid = lr_grid(runs)
    key = ["lr_setting_id", "variant"]
    stable = (pl.col("n_diverged") == 0) & (pl.col("n") > 0)
    loss = pl.col(Metric.VAL_LOSS)
    best = (grid.filter(pl.col(Metric.VAL_LOSS).is_not_null()).sort(Metric.VAL_LOSS)
            .group_by(key, maintain_order=True)
            .agg(pl.col("lr").first().alias("best_lr"),
                 pl.col(Metric.VAL_LOSS).first().alias("best_val_loss")))
    out = grid.group_by(key, maintain_order=True).agg(
        pl.col("lr_setting").first(), pl.col("lr").n_unique().cast(pl.Int64).alias("n_lrs"),
        pl.col("lr").filter(stable).max().alias("largest_stable_lr"),
        pl.col("lr").filter(pl.col("n_diverged") > 0).min().alias("smallest_diverging_lr"))
    base = (out.filter(pl.col("variant") == REFERENCE)
            .select("lr_setting_id", pl.col("largest_stable_lr").alias("__base")))
    margin = (grid.join(best, on=key, how="inner")
              .with_columns(((pl.col("n_diverged") == 0) & loss.is_not_null()
                             & (loss <= pl.col("best_val_loss") + DEGRADED_MARGIN))
                            .alias("__ok"))
              .group_by(key, maintain_order=True)
              .agg(pl.col("lr").filter(pl.col("__ok")).max().alias("largest_within_margin_lr"),
                   pl.col("lr").filter(~pl.col("__ok") & (pl.col("lr") > pl.col("best_lr")))
                   .min().alias("degraded_lr")))
    base_margin = (margin.filter(pl.col("variant") == REFERENCE)
                   .select("lr_setting_id", pl.col("largest_within_margin_lr").alias("__bm")))
    out = (out.join(best, on=key, how="left").join(base, on="lr_setting_id", how="left")
           .join(margin, on=key, how="left").join(base_margin, on="lr_setting_id", how="left")
           .with_columns((pl.col("largest_stable_lr") / pl.col("__base"))
                         .alias("stable_lr_ratio"),
                         (pl.col("largest_within_margin_lr") / pl.col("__bm"))
                         .alias("tolerance_ratio")))
    note = (pl.when(pl.col("n_lrs") < 2).then(pl.lit("one learning rate: no tolerance to see"))
            .when(pl.col("largest_stable_lr").is_null()).then(pl.lit("diverged at every LR"))
            .when(pl.col("smallest_diverging_lr").is_null())
            .then(pl.lit("stable at every LR tried: the grid does not reach its limit")))
    return out.with_columns(note.alias("note")).select(
        "lr_setting", "variant", "n_lrs", "best_lr", "best_val_loss", "largest_stable_lr",
        "smallest_diverging_lr", "stable_lr_ratio", "largest_within_margin_lr", "degraded_lr",
        "tolerance_ratio", "note", "lr_setting_id")


def lr_tolerance(runs: pl.DataFrame) -> pl.DataFrame:
    """Variant x LR: a column ``lr=<value>`` per LR with the final loss or ``diverged k/n``,
    then ``lr_summary``'s columns."""
    grid = lr_grid(runs)
    summary = lr_summary(runs)
    if grid.is_empty():
        return summary
    lrs = sorted(grid["lr"].drop_nulls().unique().to_list())
    names = {lr: f"lr={lr:g}" for lr in lrs}
    wide = (grid.filter(pl.col("lr").is_not_null())
            .with_columns(pl.col("lr").replace_strict(names, return_dtype=pl.Utf8)
                          .alias("__lr"))
            .pivot(on="__lr", index=["lr_setting_id", "variant"], values="cell"))
    out = summary.join(wide, on=["lr_setting_id", "variant"], how="left")
    out = out.join(paper_frame().select("variant", "paper_row"), on="variant", how="left")
    order = (pl.when(pl.col("variant") == REFERENCE).then(0).otherwise(1))
    cols = [names[lr] for lr in lrs if names[lr] in out.columns]
    return out.sort("lr_setting", order, "variant").select(
        "lr_setting", "variant", "paper_row", *cols, "best_lr", "best_val_loss",
        "largest_stable_lr", "smallest_diverging_lr", "stable_lr_ratio",
        "largest_within_margin_lr", "degraded_lr", "tolerance_ratio", "note", "lr_setting_id")


def massive_activations_per_lr(runs: pl.DataFrame) -> pl.DataFrame:
    """Variant x LR: the mean ``m_act`` of the finished runs at each LR (``m_act=<lr>``
    columns) and its growth from the smallest to the largest LR with finished runs."""
    grid = lr_grid(runs).filter(pl.col(Metric.M_ACT).is_not_null())
    if grid.is_empty():
        return pl.DataFrame(schema={"lr_setting": pl.Utf8, "variant": pl.Utf8})
    lrs = sorted(grid["lr"].unique().to_list())
    names = {lr: f"m_act@lr={lr:g}" for lr in lrs}
    wide = (grid.with_columns(pl.col("lr").replace_strict(names, return_dtype=pl.Utf8)
                              .alias("__lr"))
            .pivot(on="__lr", index=["lr_setting", "lr_setting_id", "variant"],
                   values=Metric.M_ACT))
    growth = (grid.sort("lr").group_by("lr_setting_id", "variant", maintain_order=True)
              .agg((pl.col(Metric.M_ACT).last() / pl.col(Metric.M_ACT).first()).alias("growth")))
    cols = [names[lr] for lr in lrs if names[lr] in wide.columns]
    return (wide.join(growth, on=["lr_setting_id", "variant"], how="left")
            .sort("lr_setting", "variant").select("lr_setting", "variant", *cols, "growth"))
