"""The paper's tables, from the run frame: one row per (setting, variant), seeds aggregated.

Every table shows ``n`` (the runs that count), means with ``<metric>_ci95`` (95% t-interval
half-width; null when n < 2), and for each variant its paired difference from the baseline on
the same seeds (``d_<metric>``, ``d_<metric>_ci95``, ``p_<metric>``: paired t-test) where the
paper compares with the baseline; ``note`` says when n is too small for an interval or a test.
Diverged runs count in ``n_diverged`` and in the stability table, never in loss means.
"""

from __future__ import annotations

import polars as pl

from gatelab.dashboards.stats.inference import spearman
from gatelab.dashboards.store.columns import DIVERGED, FINISHED
from gatelab.dashboards.tables.compare import (
    GROUP,
    REFERENCE,
    completed,
    finished,
    paired_columns,
    summarise,
)
from gatelab.dashboards.tables.paper_numbers import paper_frame
from gatelab.metrics import Metric, context_metric

LABELS = ("setting", "lr")
"""Readable columns every table starts with (the grouping key ``setting_id`` ends it)."""


def _labels(runs: pl.DataFrame) -> pl.DataFrame:
    return runs.group_by(GROUP).agg(pl.col(*LABELS).first())


def _counts(runs: pl.DataFrame) -> pl.DataFrame:
    return completed(runs).group_by(GROUP).agg(
        (pl.col("status") == FINISHED).sum().cast(pl.Int64).alias("n"),
        (pl.col("status") == DIVERGED).sum().cast(pl.Int64).alias("n_diverged"))


def _order(frame: pl.DataFrame) -> pl.DataFrame:
    """Settings in order; in each, the baseline first, then the paper's rows in the paper's
    order (T1-2 before T1-10), then variants the paper does not have."""
    table = pl.col("paper_row").str.extract(r"^T(\d+)-", 1).cast(pl.Int64)
    row = pl.col("paper_row").str.extract(r"-(\d+)$", 1).cast(pl.Int64)
    key = (pl.when(pl.col("variant") == REFERENCE).then(0)
           .otherwise((table * 1000 + row).fill_null(1_000_000)))
    return frame.sort(pl.col("setting"), key, pl.col("variant"))


def _note(*columns: str, diverged: bool = True) -> pl.Expr:
    """The row's note: the reference is the reference; no finished run; else the first
    statistical note of ``columns``."""
    first = pl.coalesce([pl.col(c) for c in columns]) if columns else pl.lit(None, pl.Utf8)
    reference = pl.col("variant") == REFERENCE
    if diverged:
        return (pl.when(reference).then(pl.lit("reference"))
                .when(pl.col("n") == 0).then(pl.lit("no finished run"))
                .otherwise(first).alias("note"))
    return pl.when(reference).then(pl.lit("reference")).otherwise(first).alias("note")


def _assemble(runs: pl.DataFrame, base: pl.DataFrame, parts: list[pl.DataFrame],
              columns: list[str], notes: tuple[str, ...], diverged: bool = True
              ) -> pl.DataFrame:
    out = base.join(_labels(runs), on=list(GROUP), how="left")
    for part in parts:
        out = out.join(part, on=list(GROUP), how="left")
    out = out.join(paper_frame(), on="variant", how="left").with_columns(
        _note(*notes, diverged=diverged))
    return _order(out).select(*LABELS, "variant", "paper_row", *columns, "note", "setting_id")


def table1(runs: pl.DataFrame) -> pl.DataFrame:
    """Table 1's shape: per variant, added parameters (ours at our size, and the paper's at
    15A2B in millions), validation perplexity and bits per byte, the change in PPL against
    the baseline on the same seeds, the paper's PPL and change beside ours, and each ordering's
    rank (``rank``, ``paper_rank``: among the variants that have both, per setting)."""
    fin = finished(runs)
    agg = summarise(fin, [Metric.VAL_PPL, Metric.VAL_BPB, Metric.PARAMS]).drop("n")
    base_params = (agg.filter(pl.col("variant") == REFERENCE)
                   .select("setting_id", pl.col(Metric.PARAMS).alias("base_params")))
    agg = agg.join(base_params, on="setting_id", how="left").with_columns(
        (pl.col(Metric.PARAMS) - pl.col("base_params")).round().cast(pl.Int64)
        .alias("added_params"))
    paired = paired_columns(fin, Metric.VAL_PPL).rename({"n_pairs_val_ppl": "n_pairs"})
    out = _assemble(runs, _counts(runs), [agg, paired], [
        "n", "n_diverged", "added_params", "paper_added_params_m", Metric.VAL_PPL, "val_ppl_ci95",
        Metric.VAL_BPB, "val_bpb_ci95", "d_val_ppl", "d_val_ppl_ci95", "p_val_ppl", "n_pairs",
        "paper_ppl", "paper_d_ppl"], ("note_val_ppl",))
    both = pl.col(Metric.VAL_PPL).is_not_null() & pl.col("paper_ppl").is_not_null()
    ranked = (out.filter(both).with_columns(
        pl.col(Metric.VAL_PPL).rank("average").over("setting_id").alias("rank"),
        pl.col("paper_ppl").rank("average").over("setting_id").alias("paper_rank"))
        .select("setting_id", "variant", "rank", "paper_rank"))
    out = out.join(ranked, on=list(GROUP), how="left", maintain_order="left")
    tail = ["rank", "paper_rank", "note", "setting_id"]
    return out.select(*(c for c in out.columns if c not in tail), *tail)


def rank_agreement(runs: pl.DataFrame) -> pl.DataFrame:
    """Per setting: Spearman's rank correlation between our mean PPL and the paper's PPL over
    the variants that have both."""
    t1 = table1(runs).filter(pl.col(Metric.VAL_PPL).is_not_null()
                             & pl.col("paper_ppl").is_not_null())
    rows = []
    for (setting_id, setting), group in t1.group_by("setting_id", "setting",
                                                     maintain_order=True):
        corr = spearman(group[Metric.VAL_PPL].to_list(), group["paper_ppl"].to_list())
        rows.append({"setting": setting, "n_variants": corr.n, "spearman_rho": corr.rho,
                     "p_value": corr.p_value, "note": corr.note, "setting_id": setting_id})
    return pl.DataFrame(rows, schema={
        "setting": pl.Utf8, "n_variants": pl.Int64, "spearman_rho": pl.Float64,
        "p_value": pl.Float64, "note": pl.Utf8, "setting_id": pl.Utf8})


def table4(runs: pl.DataFrame) -> pl.DataFrame:
    """Table 4's shape: mean gate score (and the fraction of scores below 0.1), ``m_act``,
    ``f_attn`` and PPL, with the paired change of ``m_act`` and ``f_attn`` against the baseline,
    and the paper's numbers beside them."""
    fin = finished(runs)
    metrics = [Metric.GATE_SCORE_MEAN, Metric.GATE_SCORE_FRAC_BELOW_01, Metric.M_ACT,
               Metric.F_ATTN, Metric.VAL_PPL]
    agg = summarise(fin, metrics)
    paired = [paired_columns(fin, m).drop(f"n_pairs_{m}") for m in (Metric.M_ACT, Metric.F_ATTN)]
    return _assemble(runs, _counts(runs).drop("n_diverged"), [agg.drop("n"), *paired], [
        "n", Metric.GATE_SCORE_MEAN, "gate_score.mean_ci95", Metric.GATE_SCORE_FRAC_BELOW_01,
        Metric.M_ACT, "m_act_ci95", "d_m_act", "d_m_act_ci95", "p_m_act",
        Metric.F_ATTN, "f_attn_ci95", "d_f_attn", "d_f_attn_ci95", "p_f_attn",
        Metric.VAL_PPL, "val_ppl_ci95", "paper_gate_score", "paper_m_act", "paper_f_attn",
        "paper_ppl"], ("note_f_attn", "note_m_act"))


def stability(runs: pl.DataFrame) -> pl.DataFrame:
    """Training stability: divergences (``diverged`` as "k/n", the first diverged step), loss
    spikes, spike score (summed excess over the rolling mean, nats) and the largest gradient
    norm, over finished and diverged runs, with paired changes against the baseline."""
    done = completed(runs)
    metrics = [Metric.LOSS_SPIKES, Metric.SPIKE_SCORE, Metric.MAX_GRAD_NORM]
    agg = summarise(done, metrics).drop("n")
    extra = done.group_by(GROUP).agg(
        pl.col(Metric.MAX_GRAD_NORM).max().alias("max_grad_norm_max"),
        pl.col("diverged_step").min().alias("first_diverged_step"))
    paired = [paired_columns(done, m).drop(f"n_pairs_{m}") for m in (Metric.SPIKE_SCORE,
                                                                      Metric.MAX_GRAD_NORM)]
    base = _counts(runs).with_columns(
        pl.format("{}/{}", pl.col("n_diverged"), pl.col("n") + pl.col("n_diverged"))
        .alias("diverged"))
    return _assemble(runs, base, [agg, extra, *paired], [
        "n", "n_diverged", "diverged", "first_diverged_step", Metric.LOSS_SPIKES,
        "loss_spikes_ci95", Metric.SPIKE_SCORE, "spike_score_ci95", "d_spike_score",
        "p_spike_score", Metric.MAX_GRAD_NORM, "max_grad_norm_ci95", "max_grad_norm_max",
        "d_max_grad_norm", "p_max_grad_norm"],
        ("note_spike_score", "note_max_grad_norm"), diverged=False)


CONTEXT_GAP = "ctx4x_gap"
"""The extrapolation gap's column: the loss at 4x the training length minus at 1x, per run."""


def with_context_gap(runs: pl.DataFrame) -> pl.DataFrame:
    """``runs`` with ``CONTEXT_GAP``."""
    return runs.with_columns(
        (pl.col(context_metric(4)) - pl.col(context_metric(1))).alias(CONTEXT_GAP))


def long_context(runs: pl.DataFrame) -> pl.DataFrame:
    """Validation loss at 1x, 2x and 4x the training sequence length, and the extrapolation
    gap (loss at 4x minus loss at 1x, per run) with its paired change against the baseline."""
    fin = with_context_gap(finished(runs))
    metrics = [context_metric(1), context_metric(2), context_metric(4), CONTEXT_GAP]
    agg = summarise(fin, metrics)
    paired = paired_columns(fin, "ctx4x_gap").drop("n_pairs_ctx4x_gap")
    return _assemble(runs, _counts(runs).drop("n_diverged"), [agg.drop("n"), paired], [
        "n", *[c for m in metrics for c in (m, f"{m}_ci95")], "d_ctx4x_gap",
        "d_ctx4x_gap_ci95", "p_ctx4x_gap"], ("note_ctx4x_gap",))
