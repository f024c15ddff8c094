"""A verdict per claim of the paper (``claims.yaml``), per setting, with the statistic behind it.

**Like with like.** A claim is tested within one setting (recipe, data, numerics and learning
rate: the runner's ``setting_id``), pairing runs of the same seed. A sweep over an LR grid
gives a verdict per LR and one at each variant's best LR (its lowest mean loss; the pair is
then the variant at its best LR against the reference at its own); settings are never pooled
as if they were extra seeds.

**The test.** ``paired`` and ``sink`` claims: a paired t-test of the metric's differences
(``scale: difference``) or of its log-ratios (``scale: log-ratio``, reported as a ratio with its
interval: ``m_act`` spans orders of magnitude over an LR grid and ``f_attn`` is a share);
``level`` claims: a one-sample t-test against the claim's threshold, which carries the paper's
size as well as its sign (sparse gate scores: mean below 0.2, the paper's 0.116, not merely
below 0.5).

**Several claims.** Every row with a p-value is one family, adjusted by Holm's step-down
method (``stats.holm``): the chance of any false "reproduced" or "not reproduced" in the
report stays at most 0.05. ``p_value`` is the raw p, ``p_adjusted`` the one the verdict uses.
With a sequential ``Design`` (``gatelab sweep --until-decided``), the t-test claims are
decided by ``dashboards/sequential.py`` instead (alpha spending over rounds, Holm within each
look) and the other kinds form their own Holm family.

**Verdicts.** ``reproduced``: the paper's sign, adjusted p < 0.05. ``not reproduced``: the
opposite sign, adjusted p < 0.05 (for ``share``: the interval excludes half the gain).
``reproduced, but a control gains as much``: the gain over the reference is established but
the variant does not beat one of the claim's ``controls`` (variants lacking the paper's
mechanism, such as the scale control), so the gain cannot be credited to the mechanism.
``inconclusive at this scale``: neither, including a sink claim whose reference forms no sink
(measured per head: no head puts ``SINK_HEAD_THRESHOLD`` on the first token). With a design,
``undecided within the cap``: the last look came and the claim did not cross its boundary.
A non-significant difference is never read as "no effect".

**Power.** Every t-test row says how far it is from deciding, from the seed-to-seed spread of
its differences (``stats.power_analysis``, 80% power, at the corrected level 0.05/m for m
tests): ``mde``, the smallest effect detectable at this n, and ``seeds_needed``, the seeds
(pairs) that would decide the observed effect. An inconclusive verdict's statistic ends with
both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import polars as pl

from gatelab.contract import SINK_HEAD_THRESHOLD
from gatelab.dashboards.claims import Claim, ClaimKind, Scale, load_claims
from gatelab.dashboards.columns import DType
from gatelab.dashboards.compare import PAIR_ON, REFERENCE, completed, finished, paired_diff
from gatelab.dashboards.lr_tolerance import DEGRADED_MARGIN, lr_grid, lr_summary
from gatelab.dashboards.sequential import PROCEDURE, Design, decide
from gatelab.dashboards.stats import (
    ALPHA,
    POWER,
    Power,
    fisher_greater,
    holm,
    one_sample_t_test,
    power_analysis,
    sd_from_ci95,
)
from gatelab.dashboards.tables import rank_agreement

Verdict = Literal["reproduced", "not reproduced", "inconclusive at this scale",
                  "undecided within the cap", "reproduced, but a control gains as much"]
REPRODUCED: Verdict = "reproduced"
NOT_REPRODUCED: Verdict = "not reproduced"
INCONCLUSIVE: Verdict = "inconclusive at this scale"
UNDECIDED: Verdict = "undecided within the cap"
CONFOUNDED: Verdict = "reproduced, but a control gains as much"

FIXED_PROCEDURE = "Holm over the claims tested here"

LR_RATIO = "stable-LR ratio"
"""The scale of an LR-tolerance row decided on divergences: the variant's largest
non-diverged LR over the reference's."""

SINK_MIN_F_ATTN = 0.2
"""For runs recorded before the per-head metrics: below this baseline ``f_attn`` there is no
sink to remove (uniform causal attention over 64-256 tokens puts 0.02-0.07 on the first token,
the paper's baseline 0.467)."""

VERDICT_SCHEMA: dict[str, DType] = {
    "claim": pl.Utf8, "statement": pl.Utf8, "paper": pl.Utf8, "comparison": pl.Utf8,
    "setting": pl.Utf8, "at": pl.Utf8, "lr": pl.Float64, "n": pl.Int64,
    "estimate": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "scale": pl.Utf8,
    "p_value": pl.Float64, "p_adjusted": pl.Float64, "verdict": pl.Utf8,
    "statistic": pl.Utf8, "note": pl.Utf8, "controls": pl.Utf8,
    "mde": pl.Float64, "seeds_needed": pl.Int64, "power_note": pl.Utf8,
    "procedure": pl.Utf8, "setting_id": pl.Utf8,
}
"""One row per claim and setting (``at``: ``lr 0.003`` on an LR grid, ``best LR``, or empty).
``n``: pairs of seeds (or runs) behind the estimate; ``estimate`` with its 95% interval, in
the metric's unit (``scale: difference``) or as a ratio (``scale: ratio``). ``p_value`` raw,
``p_adjusted`` after ``procedure``'s correction. ``controls``: how the variant fares against
the claim's controls. ``mde``: the smallest |difference| (for a ratio: |log-ratio|) detectable
with 80% power at this n at the corrected level; ``seeds_needed``: pairs (runs, for a
one-sample test) that would decide the observed difference so; ``power_note``: why either is
missing."""


@dataclass(frozen=True)
class Unit:
    """The runs one verdict row is computed from: one setting (or the best-LR pairing)."""

    setting: str
    setting_id: str
    at: str
    lr: float | None
    runs: pl.DataFrame


@dataclass(frozen=True)
class Evidence:
    """What one claim's test found in one unit, before the family's correction."""

    comparison: str
    n: int
    estimate: float | None
    """In the test's scale (a log-ratio for ``Scale.LOG_RATIO``)."""
    ci95: float | None
    p_value: float | None
    decide: Callable[[float | None], tuple[Verdict, str | None]]
    """The verdict and a note, given the family-corrected p-value."""
    statistic: Callable[[float | None], str]
    """The statistic's text, given the corrected p-value."""
    note: str | None = None
    sequential: bool = False
    """Decided by a t-test over seeds (``--until-decided`` adds seeds for it)."""
    sd: float | None = None
    """The seeds' spread of what is tested, for power."""
    scale: str = "difference"
    unit: str = ""
    controls: str | None = None
    power_note: str = "not a t-test over seeds: no power computed"
    shown: tuple[float | None, float | None, float | None] | None = None
    """The estimate and interval as reported, where they differ from the tested quantity (a
    level claim reports the mean, and tests its distance from the threshold)."""

    @property
    def low(self) -> float | None:
        return None if self.estimate is None or self.ci95 is None else self.estimate - self.ci95

    @property
    def high(self) -> float | None:
        return None if self.estimate is None or self.ci95 is None else self.estimate + self.ci95


def _sig(p: float | None, alpha: float = ALPHA) -> bool:
    return p is not None and p < alpha


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _signed_verdict(estimate: float | None, p: float | None, sign: int) -> Verdict:
    if estimate is None or not _sig(p):
        return INCONCLUSIVE
    return REPRODUCED if estimate * sign > 0 else NOT_REPRODUCED


def _ratio(x: float | None) -> float | None:
    return None if x is None else math.exp(x)


def _value(runs: pl.DataFrame, metric: str, scale: Scale) -> pl.DataFrame:
    """``runs`` with ``__value``: the metric, or its log for a log-ratio (non-positive: null)."""
    col = pl.col(metric).cast(pl.Float64).fill_nan(None)
    if scale is Scale.LOG_RATIO:
        col = pl.when(col > 0).then(col.log()).otherwise(None)
    return runs.with_columns(col.alias("__value"))


def _pair(runs: pl.DataFrame, variant: str, reference: str, metric: str, scale: Scale
          ) -> dict[str, Any] | None:
    """The paired test of ``variant`` against ``reference`` in one unit; ``None`` when either
    has no runs there."""
    present = set(runs["variant"].to_list())
    if variant not in present or reference not in present:
        return None
    # Only the columns the test reads: filtering a unit's full frame (~150 columns) for each
    # of a report's hundreds of pairs was most of the verdicts' time at 10,000 runs.
    both = _value(runs.select("variant", *PAIR_ON, metric)
                  .filter(pl.col("variant").is_in([variant, reference])), metric, scale)
    diff = paired_diff(both, "__value", reference, by=("variant",))
    if diff.is_empty():
        return {"n_pairs": 0, "diff": None, "diff_ci95": None, "p_value": None,
                "note": "no runs of both on the same setting and seed"}
    return diff.row(0, named=True)


def _difference_text(metric: str, scale: Scale, row: dict[str, Any], unit: str) -> str:
    diff, ci = row["diff"], row["diff_ci95"]
    assert diff is None or isinstance(diff, float)
    assert ci is None or isinstance(ci, float)
    low = None if diff is None or ci is None else diff - ci
    high = None if diff is None or ci is None else diff + ci
    if scale is Scale.LOG_RATIO:
        return (f"{metric} ratio {_fmt(_ratio(diff), 3)} [{_fmt(_ratio(low), 3)}, "
                f"{_fmt(_ratio(high), 3)}]")
    return f"Δ{metric} = {_fmt(diff)}{unit} [{_fmt(low)}, {_fmt(high)}]"


def _p_text(p: float | None, p_adj: float | None) -> str:
    return f"p = {_fmt(p, 2)} (adjusted {_fmt(p_adj, 2)})"


def _controls(claim: Claim, unit: Unit) -> list[tuple[str, dict[str, Any]]]:
    """The claim's controls present in the unit, each with the variant's paired test
    against it."""
    out = []
    for control in claim.controls:
        row = _pair(unit.runs, claim.variant, control, claim.metric, claim.scale)
        if row is not None and row["diff"] is not None:
            out.append((control, row))
    return out


def _control_text(claim: Claim, tests: list[tuple[str, dict[str, Any]]]) -> str | None:
    if not tests:
        return None
    parts = []
    for control, row in tests:
        beaten = _beats(claim, row)
        parts.append(f"{'beats' if beaten else 'does not beat'} {control} "
                     f"({_difference_text(claim.metric, claim.scale, row, _unit(claim))}, "
                     f"p = {_fmt(row['p_value'], 2)}, n = {row['n_pairs']})")
    return "; ".join(parts)


def _beats(claim: Claim, row: dict[str, Any]) -> bool:
    diff, p = row["diff"], row["p_value"]
    assert diff is None or isinstance(diff, float)
    assert p is None or isinstance(p, float)
    return diff is not None and diff * claim.direction.sign > 0 and _sig(p)


def _unit(claim: Claim) -> str:
    return f" {claim.unit}" if claim.unit else ""


def paired(claim: Claim, unit: Unit) -> Evidence | None:
    """``metric(variant)`` against ``metric(reference)`` on the unit's pairs of seeds, and
    against each of the claim's controls present."""
    runs = completed(unit.runs) if claim.include_diverged else finished(unit.runs)
    row = _pair(runs, claim.variant, claim.reference, claim.metric, claim.scale)
    if row is None:
        return None
    n = int(row["n_pairs"])  # type: ignore[call-overload]
    diff, ci, p = row["diff"], row["diff_ci95"], row["p_value"]
    assert diff is None or isinstance(diff, float)
    assert ci is None or isinstance(ci, float)
    assert p is None or isinstance(p, float)
    tests = _controls(claim, replace(unit, runs=runs))
    sign = claim.direction.sign

    def decide(p_adj: float | None) -> tuple[Verdict, str | None]:
        verdict = _signed_verdict(diff, p_adj, sign)
        if verdict == REPRODUCED:
            unbeaten = [c for c, r in tests if not _beats(claim, r)]
            if unbeaten:
                return CONFOUNDED, (f"{', '.join(unbeaten)} (lacking the paper's mechanism) "
                                    "is not beaten: the gain is not shown to be the gate's")
        return verdict, None

    def statistic(p_adj: float | None) -> str:
        return (f"{_difference_text(claim.metric, claim.scale, row, _unit(claim))}, paired "
                f"t-test {_p_text(p, p_adj)}, n = {n} pairs")

    note = row["note"]
    assert note is None or isinstance(note, str)
    return Evidence(f"{claim.variant} vs {claim.reference}: {claim.metric}", n, diff, ci, p,
                    decide, statistic, note, sequential=True, sd=sd_from_ci95(ci, n),
                    scale="ratio" if claim.scale is Scale.LOG_RATIO else "difference",
                    unit=_unit(claim), controls=_control_text(claim, tests))


def sink(claim: Claim, unit: Unit) -> Evidence | None:
    """``paired``, once the reference forms a sink: some head of some layer puts at least
    ``SINK_HEAD_THRESHOLD`` of its attention on the first token (``sink_head_max``, the
    per-head metric of Gu et al. 2024); a mean over heads would hide a single sink head."""
    evidence = paired(claim, unit)
    if evidence is None:
        return None
    ref = finished(unit.runs).filter(pl.col("variant") == claim.reference)
    head = ref["sink_head_max"].cast(pl.Float64).fill_nan(None).drop_nulls()
    if head.len():
        largest = float(head.mean())  # type: ignore[arg-type]
        if largest >= SINK_HEAD_THRESHOLD:
            return evidence
        why = (f"{claim.reference} forms no attention sink here: its largest head puts "
               f"{largest:.3f} on the first token (mean over runs; a sink head has >= "
               f"{SINK_HEAD_THRESHOLD}), so there is nothing to remove")
    else:
        mean = ref["f_attn"].cast(pl.Float64).fill_nan(None).drop_nulls()
        if not mean.len() or float(mean.mean()) >= SINK_MIN_F_ATTN:  # type: ignore[arg-type]
            return evidence
        why = (f"{claim.reference} forms no attention sink here (f_attn "
               f"{float(mean.mean()):.3f} < {SINK_MIN_F_ATTN}; runs without per-head metrics)")  # type: ignore[arg-type]

    def decide(p_adj: float | None) -> tuple[Verdict, str | None]:
        return INCONCLUSIVE, why

    return replace(evidence, decide=decide, note=why, sequential=False,
                   power_note="no sink to remove: no number of seeds decides it here")


def level(claim: Claim, unit: Unit) -> Evidence | None:
    """The variant's metric against the claim's threshold (one-sample t-test over runs)."""
    assert claim.threshold is not None
    values = (finished(unit.runs).filter(pl.col("variant") == claim.variant)[claim.metric]
              .cast(pl.Float64).fill_nan(None).drop_nulls().to_list())
    if not values:
        return None
    t = one_sample_t_test(values, claim.threshold)
    effect = None if t.estimate is None else t.estimate - claim.threshold

    def decide(p_adj: float | None) -> tuple[Verdict, str | None]:
        return _signed_verdict(effect, p_adj, claim.direction.sign), None

    def statistic(p_adj: float | None) -> str:
        return (f"mean {claim.metric} {_fmt(t.estimate)} [{_fmt(t.low)}, {_fmt(t.high)}], "
                f"one-sample t-test against {claim.threshold:g}: {_p_text(t.p_value, p_adj)}, "
                f"n = {t.n} runs")

    return Evidence(f"{claim.variant}: {claim.metric} vs {claim.threshold:g}", t.n, effect,
                    t.ci95, t.p_value, decide, statistic, t.note, sequential=True,
                    sd=sd_from_ci95(t.ci95, t.n), scale=f"mean vs {claim.threshold:g}",
                    shown=(t.estimate, t.low, t.high))


def share(claim: Claim, unit: Unit) -> Evidence | None:
    """``variant`` keeps at least half of ``reference``'s gain over the baseline (the paper:
    headwise keeps ~88% of the elementwise gain)."""
    fin = finished(unit.runs)
    full = _pair(fin, claim.reference, REFERENCE, claim.metric, Scale.DIFFERENCE)
    part = _pair(fin, claim.variant, REFERENCE, claim.metric, Scale.DIFFERENCE)
    if full is None or part is None:
        return None
    n = int(part["n_pairs"])  # type: ignore[call-overload]
    comparison = f"gain({claim.variant}) / gain({claim.reference}), {claim.metric}"
    d_full, d_part = full["diff"], part["diff"]
    assert d_full is None or isinstance(d_full, float)
    assert d_part is None or isinstance(d_part, float)
    if d_full is None or d_part is None:
        return Evidence(comparison, n, None, None, None, lambda _: (INCONCLUSIVE, None),
                        lambda _: "no paired runs", "no runs of both on the same seeds")
    sign = claim.direction.sign
    gain_full, gain_part = sign * d_full, sign * d_part
    ratio = gain_part / gain_full if gain_full > 0 else None
    ci = part["diff_ci95"]
    assert ci is None or isinstance(ci, float)
    p_full, p_part = full["p_value"], part["p_value"]
    assert p_full is None or isinstance(p_full, float)
    assert p_part is None or isinstance(p_part, float)

    def decide(p_adj: float | None) -> tuple[Verdict, str | None]:
        if not (_sig(p_full) and gain_full > 0):
            return INCONCLUSIVE, f"{claim.reference}'s gain itself is not established"
        if _sig(p_adj) and gain_part > 0 and ratio is not None and ratio >= 0.5:
            return REPRODUCED, None
        if ci is not None and gain_part + ci < 0.5 * gain_full:
            return NOT_REPRODUCED, (f"{claim.variant}'s gain's 95% interval lies below half "
                                    f"of {claim.reference}'s")
        return INCONCLUSIVE, None

    def statistic(p_adj: float | None) -> str:
        return (f"gain {claim.reference} {_fmt(gain_full)} (p = {_fmt(p_full, 2)}), "
                f"{claim.variant} {_fmt(gain_part)} ({_p_text(p_part, p_adj)}), ratio "
                f"{_fmt(ratio, 3)}, n = {n} pairs")

    low = (gain_part - ci) / gain_full if ci is not None and gain_full > 0 else None
    estimate = ratio
    half = None if low is None or ratio is None else ratio - low
    note = part["note"]
    assert note is None or isinstance(note, str)
    return Evidence(comparison, n, estimate, half, p_part, decide, statistic, note,
                    scale="share", power_note=(
                        "a ratio of two gains: no power computed (see the power of each gain's "
                        "own claim)"))


def lr_tolerance(claim: Claim, runs: pl.DataFrame, lr_setting_id: str) -> Evidence | None:
    """The variant's largest stable LR against the reference's in one LR grid: where the
    reference diverges, Fisher's exact test on divergence counts (one-sided); where it only
    degrades (its loss more than ``DEGRADED_MARGIN`` nats above its best, as the paper's
    Table 2 marks a baseline "degraded"), a paired t-test of the loss at that LR."""
    grid_runs = runs.filter(pl.col("lr_setting_id") == lr_setting_id)
    summary = lr_summary(grid_runs)
    rows = {r["variant"]: r for r in summary.iter_rows(named=True)}
    if claim.variant not in rows or claim.reference not in rows:
        return None
    base, gated = rows[claim.reference], rows[claim.variant]
    comparison = f"{claim.variant} vs {claim.reference}: largest stable LR"
    ratio = (None if gated["largest_stable_lr"] is None or base["largest_stable_lr"] is None
             else gated["largest_stable_lr"] / base["largest_stable_lr"])
    tolerant = (None if gated["largest_within_margin_lr"] is None
                or base["largest_within_margin_lr"] is None
                else gated["largest_within_margin_lr"] / base["largest_within_margin_lr"])
    head = (f"largest non-diverged LR {_fmt(gated['largest_stable_lr'])} vs "
            f"{_fmt(base['largest_stable_lr'])}; largest LR within {DEGRADED_MARGIN:g} nats of "
            f"its best {_fmt(gated['largest_within_margin_lr'])} vs "
            f"{_fmt(base['largest_within_margin_lr'])} (ratio {_fmt(tolerant, 3)})")
    if base["n_lrs"] < 2:
        return Evidence(comparison, 0, ratio, None, None,
                        lambda _: (INCONCLUSIVE, "an LR grid is needed (the lr-tolerance "
                                                 "sweep)"), lambda _: "one learning rate",
                        scale=LR_RATIO)
    grid = lr_grid(grid_runs)

    def counts(name: str, lr: float) -> tuple[int, int]:
        cell = grid.filter((pl.col("variant") == name) & (pl.col("lr") == lr))
        if cell.is_empty():
            return 0, 0
        k = int(cell["n_diverged"][0])
        return k, k + int(cell["n"][0])

    if base["smallest_diverging_lr"] is not None:
        lr = base["smallest_diverging_lr"]
        kb, nb = counts(claim.reference, lr)
        kg, ng = counts(claim.variant, lr)
        p = fisher_greater(kb, nb, kg, ng) if nb and ng else None
        text = (f"{head}; at LR {lr:g} diverged {kb}/{nb} ({claim.reference}) vs {kg}/{ng}: "
                f"Fisher one-sided")

        def decide(p_adj: float | None) -> tuple[Verdict, str | None]:
            if _sig(p_adj):
                return REPRODUCED, None
            return INCONCLUSIVE, (None if nb > 1 else
                                  "one seed per LR: Fisher's test cannot reach p < 0.05")
        return Evidence(comparison, nb + ng, ratio, None, p, decide,
                        lambda p_adj: f"{text} {_p_text(p, p_adj)}", power_note=(
                            "Fisher's exact test on divergence counts: no power computed"),
                        scale=LR_RATIO)
    if base["degraded_lr"] is None:
        return Evidence(comparison, 0, ratio, None, None,
                        lambda _: (INCONCLUSIVE, f"{claim.reference} neither diverged nor "
                                                 "degraded at any LR tried: extend the grid "
                                                 "upwards"), lambda _: head, scale=LR_RATIO)
    lr = base["degraded_lr"]
    at_lr = runs.filter((pl.col("lr_setting_id") == lr_setting_id) & (pl.col("lr") == lr))
    row = _pair(completed(at_lr), claim.variant, claim.reference, "val_loss",
                Scale.DIFFERENCE)
    if row is None or row["diff"] is None:
        return None
    diff, p, ci = row["diff"], row["p_value"], row["diff_ci95"]
    assert isinstance(diff, float)
    assert p is None or isinstance(p, float)
    assert ci is None or isinstance(ci, float)
    n = int(row["n_pairs"])  # type: ignore[call-overload]

    def decide_degraded(p_adj: float | None) -> tuple[Verdict, str | None]:
        return _signed_verdict(diff, p_adj, -1), None

    return Evidence(comparison, n, diff, ci, p, decide_degraded,
                    lambda p_adj: (f"{head}; {claim.reference} degrades from LR {lr:g}, "
                                   f"where Δval_loss = {_fmt(diff)} nats, paired t-test "
                                   f"{_p_text(p, p_adj)}, n = {n} pairs"),
                    sequential=True, sd=sd_from_ci95(ci, n), unit=" nats")


def ranking(runs: pl.DataFrame) -> list[tuple[str, Evidence]]:
    """Our ordering of variants by PPL against the paper's (Spearman rho > 0), per setting."""
    out = []
    for row in rank_agreement(runs).iter_rows(named=True):
        rho, p = row["spearman_rho"], row["p_value"]
        text = (f"Spearman rho = {_fmt(rho, 3)}, {{p}} over {row['n_variants']} variants")

        def decide(p_adj: float | None, rho: float | None = rho) -> tuple[Verdict, str | None]:
            return _signed_verdict(rho, p_adj, +1), None

        def statistic(p_adj: float | None, text: str = text, p: float | None = p) -> str:
            return text.format(p=_p_text(p, p_adj))

        out.append((row["setting"], Evidence("our PPL order vs the paper's", row["n_variants"],
                                             rho, None, p, decide, statistic, row["note"],
                                             scale="rho", power_note=(
                                                 "Spearman's rank correlation over variants: "
                                                 "no power computed"))))
    return out


TESTS: dict[ClaimKind, Callable[[Claim, Unit], Evidence | None]] = {
    ClaimKind.PAIRED: paired, ClaimKind.SINK: sink, ClaimKind.LEVEL: level,
    ClaimKind.SHARE: share,
}
"""The kinds tested within one unit (one setting or the best-LR pairing)."""


def _with_gap(runs: pl.DataFrame) -> pl.DataFrame:
    return runs.with_columns(
        (pl.col("val_loss_ctx4x") - pl.col("val_loss_ctx1x")).alias("ctx4x_gap"))


def units(runs: pl.DataFrame) -> list[Unit]:
    """One unit per setting (an LR of a grid is a setting), plus one per LR grid pairing each
    variant at its best LR (lowest mean final loss of finished runs)."""
    out: list[Unit] = []
    grids = (runs.group_by("lr_setting_id").agg(pl.col("lr").n_unique().alias("k"))
             .filter(pl.col("k") > 1)["lr_setting_id"].to_list())
    for (sid,), part in runs.group_by(["setting_id"], maintain_order=True):
        lr = part["lr"].drop_nulls()
        lr_value = float(lr[0]) if lr.len() else None
        on_grid = part["lr_setting_id"][0] in grids
        at = f"lr {lr_value:g}" if on_grid and lr_value is not None else ""
        out.append(Unit(str(part["setting"][0]), str(sid), at, lr_value if on_grid else None,
                        part))
    for gid in grids:
        grid = runs.filter(pl.col("lr_setting_id") == gid)
        best = (finished(grid).group_by("variant", "lr").agg(pl.col("val_loss").mean())
                .sort("val_loss").group_by("variant", maintain_order=True).first())
        picked = grid.join(best.select("variant", "lr"), on=["variant", "lr"], how="semi")
        picked = picked.with_columns(pl.lit(f"best:{gid}").alias("setting_id"))
        out.append(Unit(str(grid["lr_setting"][0]), f"best:{gid}", "best LR", None, picked))
    return out


@dataclass(frozen=True)
class _Row:
    claim: Claim
    setting: str
    setting_id: str
    at: str
    lr: float | None
    evidence: Evidence

    @property
    def key(self) -> str:
        return f"{self.claim.id}@{self.setting_id}"


def _rows(runs: pl.DataFrame, claims: Sequence[Claim]) -> list[_Row]:
    rows: list[_Row] = []
    all_units = units(runs)
    for claim in claims:
        if claim.kind is ClaimKind.RANKING:
            rows += [_Row(claim, s, "", "", None, e) for s, e in ranking(runs)]
            continue
        if claim.kind is ClaimKind.LR_TOLERANCE:
            for gid in runs["lr_setting_id"].unique(maintain_order=True).to_list():
                e = lr_tolerance(claim, runs, gid)
                if e is not None:
                    label = runs.filter(pl.col("lr_setting_id") == gid)["lr_setting"][0]
                    rows.append(_Row(claim, str(label), f"lr:{gid}", "LR grid", None, e))
            continue
        for unit in all_units:
            e = TESTS[claim.kind](claim, unit)
            if e is not None:
                rows.append(_Row(claim, unit.setting, unit.setting_id, unit.at, unit.lr, e))
    return rows


def _power_text(power: Power, unit: str, scale: str, m: int) -> str:
    level = f"at α = {ALPHA:g}/{m}" if m > 1 else f"at α = {ALPHA:g}"
    if scale == "ratio":
        mde = (None if power.mde is None
               else f"×{math.exp(-power.mde):.3g} or ×{math.exp(power.mde):.3g}")
    else:
        mde = None if power.mde is None else f"{_fmt(power.mde, 2)}{unit}"
    if power.seeds_needed is not None and mde is not None:
        return (f"would take about {power.seeds_needed} seeds ({POWER:.0%} power {level}); "
                f"detectable now: {mde}")
    if mde is not None:
        return f"{power.note}; detectable now: {mde}"
    return f"power: {power.note}"


def _power(e: Evidence, m: int) -> Power:
    if not e.sequential:
        return Power(None, None, e.power_note)
    return power_analysis(e.estimate, e.sd, e.n, alpha=ALPHA / max(m, 1))


def _record(row: _Row, verdict: Verdict, note: str | None, p_adj: float | None, m: int,
            procedure: str, extra: str | None = None) -> dict[str, Any]:
    e = row.evidence
    power = _power(e, m)
    statistic = e.statistic(p_adj)
    if extra:
        statistic += f"; {extra}"
    if verdict in (INCONCLUSIVE, UNDECIDED):
        statistic += f"; {_power_text(power, e.unit, e.scale, m)}"
    ratio = e.scale == "ratio"
    est = _ratio(e.estimate) if ratio else e.estimate
    low = _ratio(e.low) if ratio else e.low
    high = _ratio(e.high) if ratio else e.high
    if e.scale == "share":
        low, high = (None if e.estimate is None or e.ci95 is None else e.estimate - e.ci95,
                     None if e.estimate is None or e.ci95 is None else e.estimate + e.ci95)
    if e.shown is not None:
        est, low, high = e.shown
    return {"claim": row.claim.id, "statement": row.claim.statement, "paper": row.claim.paper,
            "comparison": e.comparison, "setting": row.setting, "at": row.at, "lr": row.lr,
            "n": e.n, "estimate": est, "ci_low": low, "ci_high": high, "scale": e.scale,
            "p_value": e.p_value, "p_adjusted": p_adj, "verdict": verdict,
            "statistic": statistic, "note": note or e.note, "controls": e.controls,
            "mde": power.mde, "seeds_needed": power.seeds_needed, "power_note": power.note,
            "procedure": procedure, "setting_id": row.setting_id}


def _fixed(rows: list[_Row], procedure: str = FIXED_PROCEDURE) -> list[dict[str, Any]]:
    adjusted = holm([r.evidence.p_value for r in rows])
    m = sum(p is not None for p in adjusted)
    out = []
    for row, p_adj in zip(rows, adjusted, strict=True):
        verdict, note = row.evidence.decide(p_adj)
        out.append(_record(row, verdict, note, p_adj, m, f"{procedure} (m = {m})"))
    return out


def _restrict(runs: pl.DataFrame, seeds: Sequence[int]) -> pl.DataFrame:
    return runs.filter(pl.col("seed").is_in(list(seeds)))


def _sequential(runs: pl.DataFrame, claims: Sequence[Claim], design: Design
                ) -> list[dict[str, Any]]:
    """Replay the design's looks on the recorded runs: each t-test row is decided at the first
    look where it crosses its boundary, else reported at the latest look it reached. A row
    reaches look ``k`` only when all of that look's seeds are paired for it (``n`` equals the
    look's seed count): runs of a look that is still training (some seeds, some variants)
    never count as that look, so an interrupted round is not taken for the final one."""
    def in_design(row: _Row) -> bool:
        return row.evidence.sequential and (not design.claims or row.claim.id in design.claims)

    rows_at = [{r.key: r for r in _rows(_restrict(runs, design.seeds_at(k)), claims)
                if in_design(r)} for k in range(len(design.looks))]
    reached: dict[str, int] = {}
    for k, rows in enumerate(rows_at):
        for key, row in rows.items():
            if row.evidence.n >= design.looks[k]:
                reached[key] = k
    present = set(runs["seed"].drop_nulls().to_list())
    current = max(reached.values(), default=design.look_of(
        sum(1 for s in design.seeds if s in present)))
    latest = _rows(runs if current is None else _restrict(runs, design.seeds_at(current)),
                   claims)
    sequential = [r for r in latest if in_design(r)]
    others = [r for r in latest if not in_design(r)]
    out = _fixed(others, "Holm over the claims not decided by seeds")
    looks = [{key: r.evidence.p_value for key, r in rows.items() if reached.get(key, -1) >= k}
             for k, rows in enumerate(rows_at)]
    decisions = decide(looks, design)
    last = len(design.looks) - 1
    open_rows = [rows_at[reached[r.key]][r.key] for r in sequential
                 if r.key in reached and r.key not in decisions]
    open_adj = dict(zip([r.key for r in open_rows],
                        holm([r.evidence.p_value for r in open_rows]), strict=True))
    look_text = f"look {{k}} of {len(design.looks)} ({{n}} seeds, cap {design.max_seeds})"
    for row in sequential:
        look = reached.get(row.key)
        if look is None:
            out.append(_record(row, INCONCLUSIVE, f"fewer seeds than the design's first look "
                               f"({design.looks[0]})", None, len(sequential), PROCEDURE))
            continue
        decision = decisions.get(row.key)
        if decision is None:
            at = rows_at[look][row.key]
            verdict = UNDECIDED if look == last else INCONCLUSIVE
            extra = (f"{look_text.format(k=look + 1, n=design.looks[look])}: not decided"
                     f" (needs adjusted p < {design.spent(look):.3g} at this look)")
            out.append(_record(at, verdict, None, open_adj.get(row.key), len(open_rows),
                               PROCEDURE, extra))
            continue
        at = rows_at[decision.look][row.key]
        verdict, note = at.evidence.decide(0.0)
        where = look_text.format(k=decision.look + 1, n=design.looks[decision.look])
        extra = (f"decided at {where}, adjusted p {decision.p_adjusted:.3g} < "
                 f"{decision.level:.3g}")
        out.append(_record(at, verdict, note, decision.p_adjusted, len(sequential), PROCEDURE,
                           extra))
    return out


def verdicts(runs: pl.DataFrame, claims: Sequence[Claim] | None = None,
             design: Design | None = None) -> pl.DataFrame:
    """One row per claim and setting these runs can test (``VERDICT_SCHEMA``); ``claims``:
    ``load_claims()`` when ``None``; ``design``: decide the t-test claims sequentially."""
    claims = load_claims() if claims is None else claims
    frame = _with_gap(runs)
    records = (_sequential(frame, claims, design) if design is not None
               else _fixed(_rows(frame, claims)))
    order = {c.id: i for i, c in enumerate(claims)}
    out = pl.DataFrame(records, schema=VERDICT_SCHEMA)
    return (out.with_columns(pl.col("claim").replace_strict(order, return_dtype=pl.Int64)
                             .alias("__order"))
            .sort("__order", "setting", "at", maintain_order=True).drop("__order"))


def untested(runs: pl.DataFrame, claims: Sequence[Claim] | None = None) -> list[str]:
    """The ids of claims whose variants (or LR grid) these runs do not have."""
    claims = load_claims() if claims is None else claims
    tested = set(verdicts(runs, claims)["claim"].to_list())
    return [c.id for c in claims if c.id not in tested]


def testable(runs: pl.DataFrame, claims: Sequence[Claim]) -> list[str]:
    """The ids of ``claims`` whose variants all appear in ``runs`` (before any test)."""
    present = set(runs["variant"].to_list())
    return [c.id for c in claims if set(c.variants()) <= present]

