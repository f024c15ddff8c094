"""What a report opens with: each variant's effect on validation loss against the baseline (a
forest plot, the paper's effect marked beside ours) and the paper's internals per variant (the
verdicts as sentences, which follow them, are ``verdicts/text.py``'s).

``effects`` is the forest plot's data, in the main setting (the one with the most finished
runs): the paired difference of final validation loss against the baseline over seeds, its
95% t-interval, n, and the paper's effect in the same unit, ``ln(PPL_variant / PPL_baseline)``
(validation loss is the log of perplexity). ``internals`` gives ``f_attn``, ``m_act`` and the
mean gate score per variant with their intervals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from gatelab.dashboards.report.plots import (
    main_setting,
    new_figure,
    save_png,
    setting_name,
    variant_colors,
)
from gatelab.dashboards.tables.compare import REFERENCE, finished, paired_diff, summarise
from gatelab.dashboards.tables.paper_numbers import paper_frame
from gatelab.metrics import Metric

INTERNALS = ((Metric.F_ATTN, "f_attn (first-token share)", "paper_f_attn"),
             (Metric.M_ACT, "m_act (max |hidden state|)", "paper_m_act"),
             (Metric.GATE_SCORE_MEAN, "mean gate score", "paper_gate_score"))


def effects(runs: pl.DataFrame) -> pl.DataFrame:
    """Per variant of the main setting: ``d_val_loss`` against the baseline on the same seeds
    (nats), its 95% interval (``low``, ``high``), ``p_value``, ``n_pairs``, and
    ``paper_d_loss`` (the paper's ``ln(PPL / 6.026)``), sorted by our effect."""
    sid = main_setting(runs)
    if sid is None:
        return pl.DataFrame(schema={"variant": pl.Utf8})
    fin = finished(runs).filter(pl.col("setting_id") == sid)
    diff = paired_diff(fin, Metric.VAL_LOSS)
    paper = paper_frame().select("variant", "paper_ppl")
    base = paper.filter(pl.col("variant") == REFERENCE)["paper_ppl"]
    base_ppl = float(base[0]) if base.len() and base[0] is not None else None
    out = diff.join(paper, on="variant", how="left").with_columns(
        (pl.col("diff") - pl.col("diff_ci95")).alias("low"),
        (pl.col("diff") + pl.col("diff_ci95")).alias("high"),
        (pl.col("paper_ppl") / base_ppl).log().alias("paper_d_loss") if base_ppl
        else pl.lit(None, dtype=pl.Float64).alias("paper_d_loss"))
    return (out.rename({"diff": "d_val_loss"})
            .select("variant", "n_pairs", "d_val_loss", "low", "high", "p_value",
                    "paper_d_loss").sort("d_val_loss", nulls_last=True))


def forest_plot(runs: pl.DataFrame, path: Path) -> tuple[Path, str] | None:
    """The forest plot and its alt text (what it shows, in words), or ``None`` without pairs."""
    table = effects(runs)
    if table.is_empty() or table["d_val_loss"].drop_nulls().len() == 0:
        return None
    sid = main_setting(runs)
    assert sid is not None
    rows = table.filter(pl.col("d_val_loss").is_not_null()).reverse()
    colors = variant_colors([REFERENCE, *rows["variant"].to_list()])
    fig = new_figure(9.0, 1.5 + 0.38 * rows.height)
    ax = fig.subplots()
    y = np.arange(rows.height)
    for i, r in enumerate(rows.iter_rows(named=True)):
        if r["low"] is not None:
            ax.plot([r["low"], r["high"]], [i, i], color=colors[r["variant"]], lw=2)
        ax.plot(r["d_val_loss"], i, "o", color=colors[r["variant"]], ms=6)
        if r["paper_d_loss"] is not None:
            ax.plot(r["paper_d_loss"], i + 0.22, "D", color="grey", ms=5, mfc="white")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [f"{v} (n={n})" for v, n in zip(rows["variant"], rows["n_pairs"],
                                                      strict=True)])
    ax.set_xlabel("Δ validation loss vs baseline (nats; left = better)")
    ax.plot([], [], "o-", color="C0", label="ours: mean, 95% CI over paired seeds")
    ax.plot([], [], "D", color="grey", mfc="white", label="paper: ln(PPL / 6.026)")
    fig.legend(fontsize=8, loc="outside lower center", ncol=2)
    ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"Effect on validation loss, {setting_name(runs, sid)}", fontsize=10)
    best = rows.row(rows.height - 1, named=True)
    alt = (f"Forest plot of each variant's change in validation loss against the baseline on "
           f"the same seeds, {rows.height} variants; the largest gain is {best['variant']} at "
           f"{best['d_val_loss']:+.3f} nats" + (
               f" [{best['low']:+.3f}, {best['high']:+.3f}]" if best["low"] is not None
               else " (one seed: no interval)") + "; grey diamonds mark the paper's effects.")
    return save_png(fig, path), alt


def internals(runs: pl.DataFrame) -> pl.DataFrame:
    """Per variant of the main setting: mean ``f_attn``, ``m_act`` and gate score with their
    95% intervals, beside the paper's Table 4 values."""
    sid = main_setting(runs)
    if sid is None:
        return pl.DataFrame(schema={"variant": pl.Utf8})
    fin = finished(runs).filter(pl.col("setting_id") == sid)
    out = summarise(fin, [m for m, _, _ in INTERNALS], by=("variant",))
    return out.join(paper_frame().select("variant", *[p for _, _, p in INTERNALS]),
                    on="variant", how="left")


def internals_plot(runs: pl.DataFrame, path: Path) -> tuple[Path, str] | None:
    """Three panels, one per internal measurement, a bar per variant (mean, 95% CI)."""
    table = internals(runs)
    if table.is_empty():
        return None
    sid = main_setting(runs)
    assert sid is not None
    order = table.sort(pl.col("variant") != REFERENCE, "variant")
    colors = variant_colors(order["variant"].to_list())
    fig = new_figure(12.0, 1.0 + 0.32 * order.height)
    axes = fig.subplots(1, len(INTERNALS), sharey=True)
    y = np.arange(order.height)
    for ax, (metric, label, paper) in zip(axes, INTERNALS, strict=True):
        values = order[metric].to_numpy().astype(float)
        ci = order[f"{metric}_ci95"].fill_null(0.0).to_numpy().astype(float)
        ax.barh(y, np.nan_to_num(values), xerr=ci, color=[colors[v] for v in order["variant"]],
                capsize=2)
        marks = order[paper].to_numpy().astype(float)
        ax.plot(marks, y, "D", color="grey", mfc="white", ms=5)
        ax.set_xlabel(label)
        if metric == Metric.M_ACT:
            ax.set_xscale("log")
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(y, order["variant"].to_list())
    fig.suptitle(f"Sink, massive activations, gate scores, {setting_name(runs, sid)} "
                 "(bars: ours, mean ± 95% CI; diamonds: the paper's Table 4)", fontsize=10)
    parts = []
    for metric, label, _ in INTERNALS[:2]:
        base = order.filter(pl.col("variant") == REFERENCE)[metric]
        if base.len() and base[0] is not None:
            parts.append(f"baseline {label.split(' (')[0]} {base[0]:.3g}")
    alt = (f"Bar charts of f_attn, m_act and the mean gate score for {order.height} variants"
           + (f" ({'; '.join(parts)})" if parts else "") + ", the paper's values as diamonds.")
    return save_png(fig, path), alt
