"""The families side by side: the paper's gates, SwitchHead and the sink mitigations (another
attention normaliser, sink tokens) under the same measurements, one row per (setting, variant).

``family_table`` is a pure function of the run frame. Each variant's family is its spec's
(``VariantSpec.family``, read through the registry, which is data); a variant no spec names any
more is ``unknown``. How the attention columns read per family (README, "The families"):
``f_attn`` is the weight queries put on the sequence's real first token, whatever the
normaliser (for sigmoid and ReLU attention a weight, not a share of a row that sums to 1; with
a sink token, the first token after it); ``gate_score.mean`` is the gate's mean score, or
SwitchHead's router's mean score over the chosen experts; ``attn_mass`` (where runs record it)
is the mean over queries of a row's weight sum: 1 for softmax, below 1 where a sink logit, the
+1 or a sink token took the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import polars as pl

from gatelab.dashboards.store.columns import FINISHED
from gatelab.dashboards.tables.compare import (
    GROUP,
    REFERENCE,
    completed,
    finished,
    paired_columns,
    summarise,
)
from gatelab.metrics import Metric
from gatelab.registry.loader import load_all_valid
from gatelab.registry.schema import Family

UNKNOWN = "unknown"
"""The family of a variant no valid spec names."""

STEP_TIME = "step_time_ms"
"""The column of the training wall time per step, in ms (``train_time_s / steps``)."""

METRICS = (Metric.VAL_LOSS, Metric.F_ATTN, Metric.M_ACT, Metric.GATE_SCORE_MEAN,
           Metric.SINK_HEAD_MAX, Metric.SINK_HEADS_FRAC, Metric.VALUE_DRAIN, STEP_TIME,
           Metric.TOKENS_PER_S)
"""Per variant: mean and 95% interval over seeds. ``step_time_ms``: training wall time per
step (``train_time_s / steps``), the cost of the explicit attention path beside the fused one."""

OPTIONAL_METRICS = ("attn_mass",)
"""Shown where the frame has them (a measurement runs may not record)."""

PAIRED = (Metric.VAL_LOSS, Metric.F_ATTN, Metric.M_ACT)
"""Compared with the baseline on the same seeds: ``d_<metric>``, ``d_<metric>_ci95``,
``p_<metric>``."""


@cache
def _families() -> dict[str, str]:
    specs, _ = load_all_valid()
    return {spec.id: spec.family.value for spec in specs}


def family_of(variants: pl.Series, families: dict[str, str] | None = None) -> pl.Series:
    """Each variant's family name (``Family``'s values, or ``UNKNOWN``)."""
    known = _families() if families is None else families
    return variants.replace_strict(known, default=UNKNOWN, return_dtype=pl.Utf8).alias("family")


def family_table(runs: pl.DataFrame, families: Sequence[Family | str] | None = None,
                 known: dict[str, str] | None = None) -> pl.DataFrame:
    """One row per (setting, variant) of ``families`` (all, by default; the baseline is always
    kept, as the reference): ``family``, ``n`` finished runs, ``n_diverged``, each of
    ``METRICS`` (and ``OPTIONAL_METRICS`` present in ``runs``) with its ``_ci95``, and the
    paired change of ``PAIRED`` against the baseline. Rows: settings in order, in each the
    baseline, then the families in ``Family``'s order, then variants by id. ``known`` maps
    variant to family in place of the registry's (tests)."""
    frame = runs.with_columns(
        family_of(runs["variant"], known),
        (1000 * pl.col(Metric.TRAIN_TIME_S).cast(pl.Float64)
         / pl.col(Metric.STEPS).cast(pl.Float64)).alias(STEP_TIME))
    if families is not None:
        wanted = [Family(f).value for f in families]
        frame = frame.filter(pl.col("family").is_in(wanted) | (pl.col("variant") == REFERENCE))
    metrics = [*METRICS, *(m for m in OPTIONAL_METRICS if m in frame.columns)]
    fin = finished(frame)
    counts = completed(frame).group_by(GROUP).agg(
        pl.col("family").first(), pl.col("setting").first(),
        (pl.col("status") == FINISHED).sum().cast(pl.Int64).alias("n"),
        (pl.col("status") != FINISHED).sum().cast(pl.Int64).alias("n_diverged"))
    out = counts.join(summarise(fin, metrics).drop("n"), on=list(GROUP), how="left")
    for metric in PAIRED:
        paired = paired_columns(fin, metric).drop(f"n_pairs_{metric}", f"note_{metric}")
        out = out.join(paired, on=list(GROUP), how="left")
    order = {f.value: i for i, f in enumerate(Family)}
    rank = (pl.when(pl.col("variant") == REFERENCE).then(-1)
            .otherwise(pl.col("family").replace_strict(order, default=len(order),
                                                       return_dtype=pl.Int64)))
    columns = ["setting", "family", "variant", "n", "n_diverged",
               *(c for m in metrics for c in (m, f"{m}_ci95")),
               *(c for m in PAIRED for c in (f"d_{m}", f"d_{m}_ci95", f"p_{m}")), "setting_id"]
    return out.sort(pl.col("setting"), rank, pl.col("variant")).select(columns)
