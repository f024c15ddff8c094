"""Seeds aggregated, and variants compared with the baseline on the same seeds, as Polars.

``summarise`` gives, per group (by default a setting and a variant), the number of runs and
each metric's mean with the half-width of its 95% t-interval (``<metric>_ci95``).
``paired_diff`` pairs each run with the reference variant's run of the same setting and seed
(the recipe is identical but for the architecture) and tests the mean of the differences:
``diff``, ``diff_ci95``, ``p_value`` (paired t-test, two-sided), ``n_pairs`` and a ``note``
where there are too few pairs. NaN and missing values are dropped before either.

**One run per side.** A pair is exactly one run of each side: a variant is one architecture
(the loaded frame names each architecture of an id recorded with several ``ID@HASH8``:
``store/identity.py``), and one architecture has one run per setting and seed. ``paired_diff``
refuses (``ValueError``) a frame where either side holds two runs of one setting and seed,
rather than pair both with one run of the other side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from gatelab.dashboards.stats.inference import ci_half_width, small_n_note, t_test_p
from gatelab.dashboards.store.columns import DONE_STATUSES, FINISHED, DType

REFERENCE = "baseline"
"""The variant every other one is compared with."""
GROUP = ("setting_id", "variant")
"""Default grouping: the seeds of one variant in one setting."""
PAIR_ON = ("setting_id", "seed")
"""Two runs are a pair when they share the setting (recipe but seed) and the seed."""


def finished(runs: pl.DataFrame) -> pl.DataFrame:
    """Runs that trained to the end (their final measurements exist)."""
    return runs.filter(pl.col("status") == FINISHED)


def completed(runs: pl.DataFrame) -> pl.DataFrame:
    """Runs whose result is final: finished or diverged."""
    return runs.filter(pl.col("status").is_in(DONE_STATUSES))


def _clean(metric: str) -> pl.Expr:
    return pl.col(metric).cast(pl.Float64).fill_nan(None)


def _nan_to_null(values: np.ndarray, name: str) -> pl.Series:
    return pl.Series(name, values, dtype=pl.Float64).fill_nan(None)


def summarise(runs: pl.DataFrame, metrics: Sequence[str], by: Sequence[str] = GROUP
              ) -> pl.DataFrame:
    """Per group of ``by``: ``n`` (runs) and, per metric, its mean and ``<metric>_ci95``."""
    aggs: list[pl.Expr] = [pl.len().cast(pl.Int64).alias("n")]
    for m in metrics:
        aggs += [_clean(m).mean().alias(m), _clean(m).std().alias(f"{m}__sd"),
                 _clean(m).count().alias(f"{m}__n")]
    out = runs.group_by(list(by), maintain_order=True).agg(aggs)
    for m in metrics:
        half = ci_half_width(out[f"{m}__sd"].fill_null(np.nan).to_numpy(),
                             out[f"{m}__n"].to_numpy())
        out = out.with_columns(_nan_to_null(half, f"{m}_ci95"))
    ordered = [*by, "n"] + [c for m in metrics for c in (m, f"{m}_ci95")]
    return out.select(ordered)


def paired_diff(runs: pl.DataFrame, metric: str, reference: str = REFERENCE,
                by: Sequence[str] = GROUP) -> pl.DataFrame:
    """Per group of ``by`` (which must include ``variant``): the mean of ``metric(variant) -
    metric(reference)`` over pairs of runs on the same setting and seed, its 95% interval,
    the paired t-test's p-value, ``n_pairs`` and a ``note``. ``runs`` should already be the
    runs that count (e.g. ``finished(runs)``); the reference's own rows are not returned.
    ``ValueError`` where a variant (or the reference) has two runs of one setting and seed."""
    keys = list(dict.fromkeys([*PAIR_ON, *by, "variant"]))
    _one_run_per_seed(runs, keys)
    ref = (runs.filter(pl.col("variant") == reference)
           .select(*PAIR_ON, _clean(metric).alias("__ref")))
    pairs = (runs.filter(pl.col("variant") != reference)
             .join(ref, on=list(PAIR_ON), how="inner")
             .with_columns((_clean(metric) - pl.col("__ref")).alias("__d"))
             .filter(pl.col("__d").is_not_null()))
    out = pairs.group_by(list(by), maintain_order=True).agg(
        pl.len().cast(pl.Int64).alias("n_pairs"), pl.col("__d").mean().alias("diff"),
        pl.col("__d").std().alias("__sd"))
    sd = out["__sd"].fill_null(np.nan).to_numpy()
    n = out["n_pairs"].to_numpy()
    notes = [small_n_note(int(k), spread_zero=bool(k > 1 and s == 0)) for k, s in zip(n, sd,
                                                                                       strict=True)]
    return out.with_columns(
        _nan_to_null(ci_half_width(sd, n), "diff_ci95"),
        _nan_to_null(t_test_p(out["diff"].to_numpy(), sd, n), "p_value"),
        pl.Series("note", notes, dtype=pl.Utf8),
    ).select(*by, "n_pairs", "diff", "diff_ci95", "p_value", "note")


def _one_run_per_seed(runs: pl.DataFrame, keys: list[str]) -> None:
    """``ValueError`` naming the first group of ``keys`` (a setting, seed and variant) that
    holds more than one run of ``runs``."""
    twice = (runs.filter(pl.col("seed").is_not_null()).group_by(keys).len()
             .filter(pl.col("len") > 1))
    if twice.is_empty():
        return
    row = twice.row(0, named=True)
    raise ValueError(f"{row['variant']} has {row['len']} runs of seed {row['seed']} in setting "
                     f"{row['setting_id']}: a pair is one run of each side; load the runs with "
                     "gatelab.dashboards.load, which names each architecture of a variant id "
                     "apart (ID@HASH8)")


def paired_columns(runs: pl.DataFrame, metric: str, name: str | None = None,
                   reference: str = REFERENCE, by: Sequence[str] = GROUP) -> pl.DataFrame:
    """``paired_diff`` with its columns named after the metric: ``d_<name>``,
    ``d_<name>_ci95``, ``p_<name>``, ``n_pairs_<name>``, ``note_<name>``."""
    name = name or metric
    return paired_diff(runs, metric, reference, by).rename({
        "diff": f"d_{name}", "diff_ci95": f"d_{name}_ci95", "p_value": f"p_{name}",
        "n_pairs": f"n_pairs_{name}", "note": f"note_{name}"})


def compare_variants(runs: pl.DataFrame, a: str, b: str, metrics: Sequence[str]
                     ) -> pl.DataFrame:
    """``a`` against ``b``, per setting and metric: each variant's mean over its finished runs
    and the paired difference ``a - b`` over runs of the same seed (``paired_diff``). Only
    metrics either variant recorded; a setting where either is missing is left out."""
    fin = finished(runs).filter(pl.col("variant").is_in([a, b]))
    frames = []
    for metric in metrics:
        if metric not in fin.columns or fin[metric].drop_nulls().len() == 0:
            continue
        diff = paired_diff(fin, metric, reference=b, by=("setting_id", "setting", "variant"))
        means = (fin.group_by("setting_id", "variant")
                 .agg(_clean(metric).mean().alias("mean"))
                 .pivot(on="variant", index="setting_id", values="mean"))
        if a not in means.columns or b not in means.columns:
            continue
        frames.append(diff.join(means.select("setting_id", pl.col(a).alias("mean_a"),
                                             pl.col(b).alias("mean_b")),
                                on="setting_id", how="inner")
                      .with_columns(pl.lit(metric).alias("metric")))
    schema: dict[str, DType] = {"setting": pl.Utf8, "metric": pl.Utf8, "mean_a": pl.Float64,
              "mean_b": pl.Float64, "diff": pl.Float64, "diff_ci95": pl.Float64,
              "p_value": pl.Float64, "n_pairs": pl.Int64, "note": pl.Utf8,
              "setting_id": pl.Utf8}
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames, how="diagonal_relaxed").select(
        [pl.col(c).cast(t) for c, t in schema.items()])
