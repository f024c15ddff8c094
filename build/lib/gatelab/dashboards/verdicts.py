"""A verdict per claim of the paper: "reproduced", "not reproduced" or "inconclusive at this
scale", with the statistic behind it.

The rule is the same for every claim: **reproduced** when the effect has the paper's sign and is
significant (two-sided p < 0.05); **not reproduced** when it is significant with the opposite
sign (or, for "keeps most of the gain", when the interval excludes half the gain);
**inconclusive at this scale** otherwise, which includes every comparison with fewer than two
pairs of seeds. A non-significant difference is never read as "no effect". Comparisons pair
runs of the same setting and seed and pool the pairs over settings (an LR grid gives one pair
per finished LR and seed). A claim whose variants were not run is left out; ``untested``
lists those.

Every t-test verdict also says how far it is from deciding, from the seed-to-seed spread of its
differences (``stats.power_analysis``, 80% power, the same two-sided test at p < 0.05): ``mde``,
the smallest effect detectable at this n, and ``seeds_needed``, the seeds (pairs) that would
decide the observed effect. An inconclusive verdict's statistic ends with both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from gatelab.dashboards.columns import DType
from gatelab.dashboards.compare import REFERENCE, completed, finished, paired_diff
from gatelab.dashboards.lr_tolerance import lr_grid, lr_summary
from gatelab.dashboards.stats import (
    ALPHA,
    POWER,
    Power,
    fisher_greater,
    one_sample_t_test,
    power_analysis,
    sd_from_ci95,
)
from gatelab.dashboards.tables import rank_agreement

Verdict = Literal["reproduced", "not reproduced", "inconclusive at this scale"]
REPRODUCED: Verdict = "reproduced"
NOT_REPRODUCED: Verdict = "not reproduced"
INCONCLUSIVE: Verdict = "inconclusive at this scale"

SINK_MIN_F_ATTN = 0.2
"""Below this baseline ``f_attn`` there is no attention sink to remove: uniform causal
attention over 64-256 tokens already puts 0.02-0.07 on the first token, the paper's baseline
0.467. A sink claim is inconclusive when the baseline stays below it."""

VERDICT_SCHEMA: dict[str, DType] = {
    "claim": pl.Utf8, "statement": pl.Utf8, "paper": pl.Utf8, "comparison": pl.Utf8,
    "n": pl.Int64, "estimate": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
    "p_value": pl.Float64, "verdict": pl.Utf8, "statistic": pl.Utf8, "note": pl.Utf8,
    "mde": pl.Float64, "seeds_needed": pl.Int64, "power_note": pl.Utf8,
}
"""``n``: pairs of seeds (or runs) behind the estimate; ``estimate`` with its 95% interval.
``mde``: the smallest |difference| the test detects with 80% power at this n, in the
estimate's units; ``seeds_needed``: pairs (runs, for a one-sample test) that would decide the
observed difference with 80% power; ``power_note``: why either is missing."""


@dataclass(frozen=True)
class Evidence:
    """What one claim's test found."""

    comparison: str
    n: int
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    verdict: Verdict
    statistic: str
    note: str | None = None
    power: Power = Power(None, None, "not a t-test over seeds: no power computed")
    unit: str = ""
    """Of the estimate and ``power.mde``, as written after a number (" nats")."""


def _sig(p: float | None) -> bool:
    return p is not None and p < ALPHA


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _signed_verdict(estimate: float | None, p: float | None, sign: int) -> Verdict:
    if estimate is None or not _sig(p):
        return INCONCLUSIVE
    return REPRODUCED if estimate * sign > 0 else NOT_REPRODUCED


def _pooled(runs: pl.DataFrame, variant: str, reference: str, metric: str
            ) -> dict[str, Any] | None:
    """``paired_diff`` of ``variant`` against ``reference`` pooled over settings; ``None`` when
    either variant has no runs at all."""
    present = set(runs["variant"].to_list())
    if variant not in present or reference not in present:
        return None
    diff = paired_diff(runs.filter(pl.col("variant").is_in([variant, reference])), metric,
                       reference, by=("variant",))
    if diff.is_empty():
        return {"n_pairs": 0, "diff": None, "diff_ci95": None, "p_value": None,
                "note": "no runs of both on the same setting and seed"}
    return diff.row(0, named=True)


def _interval(row: dict[str, Any]) -> tuple[float | None, float | None]:
    if row["diff"] is None or row["diff_ci95"] is None:
        return None, None
    return row["diff"] - row["diff_ci95"], row["diff"] + row["diff_ci95"]


def _power(effect: float | None, ci95: float | None, n: int) -> Power:
    """``power_analysis`` from a t-interval: its half-width gives back the seeds' spread."""
    return power_analysis(effect, sd_from_ci95(ci95, n), n)


def power_text(power: Power, unit: str = "") -> str:
    """What an inconclusive verdict's statistic ends with: seeds needed and what is detectable
    now, or why there is no number."""
    if power.seeds_needed is not None and power.mde is not None:
        return (f"would take about {power.seeds_needed} seeds ({POWER:.0%} power); detectable "
                f"now: {_fmt(power.mde, 2)}{unit}")
    if power.mde is not None:
        return f"{power.note}; detectable now: {_fmt(power.mde, 2)}{unit}"
    return f"power: {power.note}"


@dataclass(frozen=True)
class Claim:
    """A claim of the paper and how to test it on recorded runs."""

    id: str
    statement: str
    paper: str
    test: Callable[[pl.DataFrame], Evidence | None]


def paired(variant: str, metric: str, sign: int = -1, reference: str = REFERENCE,
           done: bool = False, unit: str = "") -> Callable[[pl.DataFrame], Evidence | None]:
    """Test that ``metric(variant) - metric(reference)`` has ``sign`` (-1: lower), paired on
    seeds; over finished runs, or finished and diverged ones with ``done``."""
    def test(runs: pl.DataFrame) -> Evidence | None:
        row = _pooled(completed(runs) if done else finished(runs), variant, reference, metric)
        if row is None:
            return None
        low, high = _interval(row)
        stat = (f"Δ{metric} = {_fmt(row['diff'])}{unit} [{_fmt(low)}, {_fmt(high)}], "
                f"paired t-test p = {_fmt(row['p_value'], 2)}, n = {row['n_pairs']} pairs")
        return Evidence(f"{variant} − {reference}: {metric}", row["n_pairs"], row["diff"], low,
                        high, row["p_value"], _signed_verdict(row["diff"], row["p_value"], sign),
                        stat, row["note"], _power(row["diff"], row["diff_ci95"], row["n_pairs"]),
                        unit)
    return test


def sink_removed(variant: str) -> Callable[[pl.DataFrame], Evidence | None]:
    """``f_attn`` lower than the baseline's, if the baseline forms a sink at all."""
    base_test = paired(variant, "f_attn")

    def test(runs: pl.DataFrame) -> Evidence | None:
        evidence = base_test(runs)
        if evidence is None:
            return None
        base = (finished(runs).filter(pl.col("variant") == REFERENCE)
                .select(pl.col("f_attn").mean()).item())
        if isinstance(base, float) and base < SINK_MIN_F_ATTN:
            note = (f"the baseline forms no attention sink here (f_attn {base:.3f} < "
                    f"{SINK_MIN_F_ATTN}; the paper's 0.467): there is nothing to remove")
            return Evidence(evidence.comparison, evidence.n, evidence.estimate, evidence.ci_low,
                            evidence.ci_high, evidence.p_value, INCONCLUSIVE,
                            evidence.statistic, note, evidence.power, evidence.unit)
        return evidence
    return test


def headwise_keeps_gain(runs: pl.DataFrame) -> Evidence | None:
    """Headwise G1 keeps at least half of the elementwise G1 loss gain (the paper: ~88%)."""
    fin = finished(runs)
    elem = _pooled(fin, "g1-elementwise", REFERENCE, "val_loss")
    head = _pooled(fin, "g1-headwise", REFERENCE, "val_loss")
    if elem is None or head is None:
        return None
    n = int(head["n_pairs"])
    power = Power(None, None, "a ratio of two gains: no power computed (see the power of "
                  "gate-lowers-loss and headwise-lowers-loss)")
    if elem["diff"] is None or head["diff"] is None:
        return Evidence("gain(g1-headwise) / gain(g1-elementwise), val_loss", n, None, None,
                        None, None, INCONCLUSIVE, "no paired runs", head["note"] or elem["note"],
                        power)
    gain_e, gain_h = -elem["diff"], -head["diff"]
    ratio = gain_h / gain_e if gain_e > 0 else None
    h_low, h_high = _interval(head)
    stat = (f"gain elementwise {_fmt(gain_e)} nats (p = {_fmt(elem['p_value'], 2)}), "
            f"headwise {_fmt(gain_h)} nats (p = {_fmt(head['p_value'], 2)}), ratio "
            f"{_fmt(ratio, 3)}, n = {n} pairs")
    note = None
    verdict = INCONCLUSIVE
    if not (_sig(elem["p_value"]) and gain_e > 0):
        note = "the elementwise gain itself is not established"
    elif _sig(head["p_value"]) and gain_h > 0 and ratio is not None and ratio >= 0.5:
        verdict = REPRODUCED
    elif h_low is not None and -h_low < 0.5 * gain_e:
        verdict = NOT_REPRODUCED
        note = "the headwise gain's 95% interval lies below half the elementwise gain"
    low = -h_high / gain_e if h_high is not None and gain_e > 0 else None
    high = -h_low / gain_e if h_low is not None and gain_e > 0 else None
    return Evidence("gain(g1-headwise) / gain(g1-elementwise), val_loss", n, ratio, low, high,
                    head["p_value"], verdict, stat, note or head["note"], power)


def gate_scores_sparse(runs: pl.DataFrame) -> Evidence | None:
    """The elementwise G1 gate's mean score falls below 0.5, where a sigmoid gate starts (the
    paper: 0.116). Below 0.5 is the direction of sparsity, not yet the paper's sparsity: the
    note says when the scores remain far from it."""
    values = (finished(runs).filter(pl.col("variant") == "g1-elementwise")["gate_score.mean"]
              .drop_nulls().drop_nans().to_list())
    if not values:
        return None
    t = one_sample_t_test(values, 0.5)
    stat = (f"mean gate score {_fmt(t.estimate)} [{_fmt(t.low)}, {_fmt(t.high)}], one-sample "
            f"t-test against 0.5: p = {_fmt(t.p_value, 2)}, n = {t.n} runs")
    verdict = _signed_verdict(None if t.estimate is None else t.estimate - 0.5, t.p_value, -1)
    note = t.note
    if verdict == REPRODUCED and t.estimate is not None and t.estimate > 0.25:
        note = (f"below 0.5, but far from the paper's 0.116 (mean {t.estimate:.3f}): sparsity "
                "has begun, not formed")
    effect = None if t.estimate is None else t.estimate - 0.5
    return Evidence("g1-elementwise: gate_score.mean vs 0.5", t.n, t.estimate, t.low, t.high,
                    t.p_value, verdict, stat, note, _power(effect, t.ci95, t.n))


def larger_stable_lr(runs: pl.DataFrame, variant: str = "g1-elementwise"
                     ) -> Evidence | None:
    """The gated model's largest stable LR exceeds the baseline's, and at the baseline's first
    diverging LR it diverges less often (Fisher's exact test, one-sided)."""
    summary = lr_summary(runs)
    both = summary.filter(pl.col("variant").is_in([variant, REFERENCE]))
    settings = (both.group_by("lr_setting_id").agg(pl.len().alias("k"),
                                                    pl.col("n_lrs").max().alias("lrs"))
                .filter(pl.col("k") == 2).sort("lrs", descending=True))
    if settings.is_empty():
        return None
    sid = settings["lr_setting_id"][0]
    rows = {r["variant"]: r for r in both.filter(pl.col("lr_setting_id") == sid)
            .iter_rows(named=True)}
    base, gated = rows[REFERENCE], rows[variant]
    comparison = f"{variant} vs {REFERENCE}: largest stable LR"
    ratio = gated["stable_lr_ratio"]
    power = Power(None, None, "Fisher's exact test on divergence counts: no power computed")
    if base["n_lrs"] < 2:
        return Evidence(comparison, 0, ratio, None, None, None, INCONCLUSIVE,
                        "one learning rate", "an LR grid is needed (e.g. the lr-tolerance sweep)",
                        power)
    grid = lr_grid(runs).filter(pl.col("lr_setting_id") == sid)

    def counts(name: str, lr: float) -> tuple[int, int]:
        cell = grid.filter((pl.col("variant") == name) & (pl.col("lr") == lr))
        if cell.is_empty():
            return 0, 0
        k = int(cell["n_diverged"][0])
        return k, k + int(cell["n"][0])

    stat = (f"largest stable LR {_fmt(gated['largest_stable_lr'])} vs "
            f"{_fmt(base['largest_stable_lr'])} (ratio {_fmt(ratio, 3)})")
    if base["smallest_diverging_lr"] is None:
        return Evidence(comparison, 0, ratio, None, None, None, INCONCLUSIVE, stat,
                        "the baseline diverged at no LR tried: extend the grid upwards", power)
    lr = base["smallest_diverging_lr"]
    kb, nb = counts(REFERENCE, lr)
    kg, ng = counts(variant, lr)
    p = fisher_greater(kb, nb, kg, ng) if nb and ng else None
    stat += (f"; at LR {lr:g} diverged {kb}/{nb} (baseline) vs {kg}/{ng}: Fisher one-sided "
             f"p = {_fmt(p, 2)}")
    verdict = INCONCLUSIVE
    if ratio is not None and ratio > 1 and _sig(p):
        verdict = REPRODUCED
    elif ratio is not None and ratio < 1 and gated["smallest_diverging_lr"] is not None:
        kg2, ng2 = counts(variant, gated["smallest_diverging_lr"])
        kb2, nb2 = counts(REFERENCE, gated["smallest_diverging_lr"])
        p2 = fisher_greater(kg2, ng2, kb2, nb2) if ng2 and nb2 else None
        if _sig(p2):
            verdict, p = NOT_REPRODUCED, p2
    return Evidence(comparison, nb + ng, ratio, None, None, p, verdict, stat,
                    None if nb > 1 else "one seed per LR: Fisher's test cannot reach p < 0.05",
                    power)


def ranking_matches(runs: pl.DataFrame) -> Evidence | None:
    """Our ordering of variants by PPL agrees with the paper's (Spearman rho > 0)."""
    agreement = rank_agreement(runs).sort("n_variants", descending=True)
    if agreement.is_empty():
        return None
    row = agreement.row(0, named=True)
    stat = (f"Spearman rho = {_fmt(row['spearman_rho'], 3)}, p = {_fmt(row['p_value'], 2)} "
            f"over {row['n_variants']} variants ({row['setting']})")
    return Evidence("our PPL order vs the paper's", row["n_variants"], row["spearman_rho"],
                    None, None, row["p_value"],
                    _signed_verdict(row["spearman_rho"], row["p_value"], +1), stat, row["note"],
                    Power(None, None, "Spearman's rank correlation over variants: no power "
                          "computed"))


CLAIMS: tuple[Claim, ...] = (
    Claim("gate-lowers-loss", "The G1 elementwise sigmoid gate lowers validation loss",
          "PPL 5.761 vs 6.026 (T1-5 vs T1-1)", paired("g1-elementwise", "val_loss",
                                                        unit=" nats")),
    Claim("headwise-lowers-loss", "The G1 headwise gate lowers validation loss",
          "PPL 5.792 vs 6.026 (T1-10)", paired("g1-headwise", "val_loss", unit=" nats")),
    Claim("headwise-keeps-gain", "Headwise G1 keeps most of the elementwise gain",
          "~88% of the gain with <1% of the parameters (T1-10 vs T1-5)", headwise_keeps_gain),
    Claim("g2-lowers-loss", "The G2 (value) elementwise gate lowers validation loss",
          "PPL 5.820 vs 6.026 (T1-6)", paired("g2-elementwise", "val_loss", unit=" nats")),
    Claim("gate-beats-capacity", "G1 elementwise beats adding as many parameters as q heads",
          "PPL 5.761 vs 5.953 at +201M each (T1-5 vs T1-3)",
          paired("g1-elementwise", "val_loss", reference="more-q-heads", unit=" nats")),
    Claim("specific-beats-shared", "Head-specific gate scores beat head-shared ones",
          "PPL 5.761 vs 5.801 (T1-5 vs T1-12)",
          paired("g1-elementwise", "val_loss", reference="g1-head-shared", unit=" nats")),
    Claim("multiplicative-beats-additive", "A multiplicative gate beats an additive one",
          "PPL 5.761 vs 5.821 (T1-5 vs T1-14)",
          paired("g1-elementwise", "val_loss", reference="g1-additive-silu", unit=" nats")),
    Claim("sigmoid-beats-silu", "A sigmoid gate beats a SiLU gate",
          "PPL 5.761 vs 5.822 (T1-5 vs T1-15)",
          paired("g1-elementwise", "val_loss", reference="g1-silu", unit=" nats")),
    Claim("sink-removed", "The G1 elementwise gate removes the attention sink (lower f_attn)",
          "f_attn 0.048 vs 0.467 (T4)", sink_removed("g1-elementwise")),
    Claim("sink-removed-headwise", "The G1 headwise gate removes the attention sink",
          "f_attn 0.073 vs 0.467 (T4)", sink_removed("g1-headwise")),
    Claim("massive-activations-lower", "The G1 gate lowers massive activations (m_act)",
          "m_act 94 vs 1053 (T4)", paired("g1-elementwise", "m_act")),
    Claim("gate-scores-sparse", "G1 elementwise gate scores move towards sparsity (mean < 0.5)",
          "mean gate score 0.116 (T4)", gate_scores_sparse),
    Claim("larger-stable-lr", "The gate tolerates a larger learning rate",
          "8e-3 trains gated, the baseline degrades or diverges (T2)", larger_stable_lr),
    Claim("fewer-spikes", "The gate removes loss spikes (lower spike score)",
          "dozens of spikes in the 3.5T baseline, none gated (T2 text)",
          paired("g1-elementwise", "spike_score", done=True, unit=" nats")),
    Claim("long-context", "The gate extrapolates better beyond the training length",
          "RULER 58.8 vs 31.7 at 128k (T5); here: loss at 4x minus 1x the length",
          paired("g1-elementwise", "ctx4x_gap", unit=" nats")),
    Claim("ranking-matches-paper", "Variants rank in the paper's PPL order",
          "Tables 1, 3, 4 (one 15A2B setting)", ranking_matches),
)
"""Every claim tested, in the order the report shows them."""


def _with_gap(runs: pl.DataFrame) -> pl.DataFrame:
    return runs.with_columns(
        (pl.col("val_loss_ctx4x") - pl.col("val_loss_ctx1x")).alias("ctx4x_gap"))


def verdicts(runs: pl.DataFrame, claims: tuple[Claim, ...] = CLAIMS) -> pl.DataFrame:
    """One row per testable claim (``VERDICT_SCHEMA``); an inconclusive verdict's statistic
    ends with ``power_text``."""
    frame = _with_gap(runs)
    rows = []
    for claim in claims:
        e = claim.test(frame)
        if e is None:
            continue
        statistic = e.statistic
        if e.verdict == INCONCLUSIVE:
            statistic += f"; {power_text(e.power, e.unit)}"
        rows.append({"claim": claim.id, "statement": claim.statement, "paper": claim.paper,
                     "comparison": e.comparison, "n": e.n, "estimate": e.estimate,
                     "ci_low": e.ci_low, "ci_high": e.ci_high, "p_value": e.p_value,
                     "verdict": e.verdict, "statistic": statistic, "note": e.note,
                     "mde": e.power.mde, "seeds_needed": e.power.seeds_needed,
                     "power_note": e.power.note})
    return pl.DataFrame(rows, schema=VERDICT_SCHEMA)


def untested(runs: pl.DataFrame, claims: tuple[Claim, ...] = CLAIMS) -> list[str]:
    """The ids of claims whose variants (or LR grid) these runs do not have."""
    tested = set(verdicts(runs, claims)["claim"].to_list())
    return [c.id for c in claims if c.id not in tested]
