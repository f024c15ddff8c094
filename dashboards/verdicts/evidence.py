"""What a claim's test finds in the runs: one ``Evidence`` per claim and unit (a setting, or
an LR grid's best-LR pairing), before the family's correction (``procedure.py``).

**Like with like.** A claim is tested within one setting (recipe, data, numerics and learning
rate: the runner's ``setting_id``), pairing runs of the same seed. A sweep over an LR grid
gives a unit per LR and one at each variant's best LR (its lowest mean loss; the pair is
then the variant at its best LR against the reference at its own); settings are never pooled
as if they were extra seeds.

**The test.** ``paired`` and ``sink`` claims: a paired t-test of the metric's differences
(``scale: difference``) or of its log-ratios (``scale: log-ratio``, reported as a ratio with its
interval: ``m_act`` spans orders of magnitude over an LR grid and ``f_attn`` is a share);
``level`` claims: a one-sample t-test against the claim's threshold, which carries the paper's
size as well as its sign (sparse gate scores: mean below 0.2, the paper's 0.116, not merely
below 0.5); ``share``: the variant's gain over the baseline against half the reference's;
``lr-tolerance``: Fisher's exact test on divergence counts, or a paired t-test where the
reference only degrades; ``ranking``: Spearman's rank correlation with the paper's order.

Each ``Evidence`` carries how it decides (its verdict, given the family-corrected p-value) and
how its statistic reads (``text.py``). A sink claim whose reference forms no sink (no head puts
``SINK_HEAD_THRESHOLD`` on the first token) is inconclusive whatever its p-value, and a
``paired`` claim whose variant does not beat one of its ``controls`` (variants lacking the
paper's mechanism, such as the scale control) is "reproduced, but a control gains as much".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import polars as pl

from gatelab.contract import SINK_HEAD_THRESHOLD
from gatelab.dashboards.numbers import number
from gatelab.dashboards.stats.inference import (
    ALPHA,
    fisher_greater,
    one_sample_t_test,
    sd_from_ci95,
)
from gatelab.dashboards.tables.compare import PAIR_ON, REFERENCE, completed, finished, paired_diff
from gatelab.dashboards.tables.lr_tolerance import DEGRADED_MARGIN, lr_grid, lr_summary
from gatelab.dashboards.tables.paper_tables import rank_agreement
from gatelab.dashboards.verdicts.claims import Claim, ClaimKind, Scale
from gatelab.dashboards.verdicts.text import difference_text, p_text, unit_text
from gatelab.metrics import Metric
from gatelab.verdict import Verdict

LR_RATIO = "stable-LR ratio"
"""The scale of an LR-tolerance row decided on divergences: the variant's largest
non-diverged LR over the reference's."""

SINK_MIN_F_ATTN = 0.2
"""For runs recorded before the per-head metrics: below this baseline ``f_attn`` there is no
sink to remove (uniform causal attention over 64-256 tokens puts 0.02-0.07 on the first token,
the paper's baseline 0.467)."""


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


def _signed_verdict(estimate: float | None, p: float | None, sign: int) -> Verdict:
    if estimate is None or not _sig(p):
        return Verdict.INCONCLUSIVE
    return Verdict.REPRODUCED if estimate * sign > 0 else Verdict.NOT_REPRODUCED


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
                     f"({difference_text(claim.metric, claim.scale, row, unit_text(claim))}, "
                     f"p = {number(row['p_value'], 2)}, n = {row['n_pairs']})")
    return "; ".join(parts)


def _beats(claim: Claim, row: dict[str, Any]) -> bool:
    diff, p = row["diff"], row["p_value"]
    assert diff is None or isinstance(diff, float)
    assert p is None or isinstance(p, float)
    return diff is not None and diff * claim.direction.sign > 0 and _sig(p)


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
        if verdict == Verdict.REPRODUCED:
            unbeaten = [c for c, r in tests if not _beats(claim, r)]
            if unbeaten:
                return Verdict.CONFOUNDED, (f"{', '.join(unbeaten)} (lacking the paper's "
                                            "mechanism) is not beaten: the gain is not shown "
                                            "to be the gate's")
        return verdict, None

    def statistic(p_adj: float | None) -> str:
        return (f"{difference_text(claim.metric, claim.scale, row, unit_text(claim))}, paired "
                f"t-test {p_text(p, p_adj)}, n = {n} pairs")

    note = row["note"]
    assert note is None or isinstance(note, str)
    return Evidence(f"{claim.variant} vs {claim.reference}: {claim.metric}", n, diff, ci, p,
                    decide, statistic, note, sequential=True, sd=sd_from_ci95(ci, n),
                    scale="ratio" if claim.scale is Scale.LOG_RATIO else "difference",
                    unit=unit_text(claim), controls=_control_text(claim, tests))


def sink(claim: Claim, unit: Unit) -> Evidence | None:
    """``paired``, once the reference forms a sink: some head of some layer puts at least
    ``SINK_HEAD_THRESHOLD`` of its attention on the first token (``sink_head_max``, the
    per-head metric of Gu et al. 2024); a mean over heads would hide a single sink head."""
    evidence = paired(claim, unit)
    if evidence is None:
        return None
    ref = finished(unit.runs).filter(pl.col("variant") == claim.reference)
    head = ref[Metric.SINK_HEAD_MAX].cast(pl.Float64).fill_nan(None).drop_nulls()
    if head.len():
        largest = float(head.mean())  # type: ignore[arg-type]
        if largest >= SINK_HEAD_THRESHOLD:
            return evidence
        why = (f"{claim.reference} forms no attention sink here: its largest head puts "
               f"{largest:.3f} on the first token (mean over runs; a sink head has >= "
               f"{SINK_HEAD_THRESHOLD}), so there is nothing to remove")
    else:
        mean = ref[Metric.F_ATTN].cast(pl.Float64).fill_nan(None).drop_nulls()
        if not mean.len() or float(mean.mean()) >= SINK_MIN_F_ATTN:  # type: ignore[arg-type]
            return evidence
        why = (f"{claim.reference} forms no attention sink here (f_attn "
               f"{float(mean.mean()):.3f} < {SINK_MIN_F_ATTN}; runs without per-head metrics)")  # type: ignore[arg-type]

    def decide(p_adj: float | None) -> tuple[Verdict, str | None]:
        return Verdict.INCONCLUSIVE, why

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
        return (f"mean {claim.metric} {number(t.estimate)} [{number(t.low)}, {number(t.high)}], "
                f"one-sample t-test against {claim.threshold:g}: {p_text(t.p_value, p_adj)}, "
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
        return Evidence(comparison, n, None, None, None, lambda _: (Verdict.INCONCLUSIVE, None),
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
            return Verdict.INCONCLUSIVE, f"{claim.reference}'s gain itself is not established"
        if _sig(p_adj) and gain_part > 0 and ratio is not None and ratio >= 0.5:
            return Verdict.REPRODUCED, None
        if ci is not None and gain_part + ci < 0.5 * gain_full:
            return Verdict.NOT_REPRODUCED, (f"{claim.variant}'s gain's 95% interval lies "
                                            f"below half of {claim.reference}'s")
        return Verdict.INCONCLUSIVE, None

    def statistic(p_adj: float | None) -> str:
        return (f"gain {claim.reference} {number(gain_full)} (p = {number(p_full, 2)}), "
                f"{claim.variant} {number(gain_part)} ({p_text(p_part, p_adj)}), ratio "
                f"{number(ratio, 3)}, n = {n} pairs")

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
    head = (f"largest non-diverged LR {number(gated['largest_stable_lr'])} vs "
            f"{number(base['largest_stable_lr'])}; largest LR within {DEGRADED_MARGIN:g} nats of "
            f"its best {number(gated['largest_within_margin_lr'])} vs "
            f"{number(base['largest_within_margin_lr'])} (ratio {number(tolerant, 3)})")
    if base["n_lrs"] < 2:
        return Evidence(comparison, 0, ratio, None, None,
                        lambda _: (Verdict.INCONCLUSIVE, "an LR grid is needed (the lr-tolerance "
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
                return Verdict.REPRODUCED, None
            return Verdict.INCONCLUSIVE, (None if nb > 1 else
                                  "one seed per LR: Fisher's test cannot reach p < 0.05")
        return Evidence(comparison, nb + ng, ratio, None, p, decide,
                        lambda p_adj: f"{text} {p_text(p, p_adj)}", power_note=(
                            "Fisher's exact test on divergence counts: no power computed"),
                        scale=LR_RATIO)
    if base["degraded_lr"] is None:
        return Evidence(comparison, 0, ratio, None, None,
                        lambda _: (Verdict.INCONCLUSIVE, f"{claim.reference} neither diverged nor "
                                                 "degraded at any LR tried: extend the grid "
                                                 "upwards"), lambda _: head, scale=LR_RATIO)
    lr = base["degraded_lr"]
    at_lr = runs.filter((pl.col("lr_setting_id") == lr_setting_id) & (pl.col("lr") == lr))
    row = _pair(completed(at_lr), claim.variant, claim.reference, Metric.VAL_LOSS,
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
                                   f"where Δval_loss = {number(diff)} nats, paired t-test "
                                   f"{p_text(p, p_adj)}, n = {n} pairs"),
                    sequential=True, sd=sd_from_ci95(ci, n), unit=" nats")


def ranking(runs: pl.DataFrame) -> list[tuple[str, Evidence]]:
    """Our ordering of variants by PPL against the paper's (Spearman rho > 0), per setting."""
    out = []
    for row in rank_agreement(runs).iter_rows(named=True):
        rho, p = row["spearman_rho"], row["p_value"]
        text = (f"Spearman rho = {number(rho, 3)}, {{p}} over {row['n_variants']} variants")

        def decide(p_adj: float | None, rho: float | None = rho) -> tuple[Verdict, str | None]:
            return _signed_verdict(rho, p_adj, +1), None

        def statistic(p_adj: float | None, text: str = text, p: float | None = p) -> str:
            return text.format(p=p_text(p, p_adj))

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
        best = (finished(grid).group_by("variant", "lr").agg(pl.col(Metric.VAL_LOSS).mean())
                .sort(Metric.VAL_LOSS).group_by("variant", maintain_order=True).first())
        picked = grid.join(best.select("variant", "lr"), on=["variant", "lr"], how="semi")
        picked = picked.with_columns(pl.lit(f"best:{gid}").alias("setting_id"))
        out.append(Unit(str(grid["lr_setting"][0]), f"best:{gid}", "best LR", None, picked))
    return out
