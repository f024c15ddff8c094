"""A verdict per claim of the paper (``claims.yaml``), per setting: the evidence of every
claim and unit (``evidence.py``), corrected as one family, decided and written as rows.

**Several claims.** Every row with a p-value is one family, adjusted by Holm's step-down
method (``stats.inference.holm``): the chance of any false "reproduced" or "not reproduced"
in the report stays at most 0.05. ``p_value`` is the raw p, ``p_adjusted`` the one the verdict
uses. With a sequential ``Design`` (``gatelab sweep --until-decided``), the t-test claims are
decided by ``stats/sequential.py`` instead (alpha spending over rounds, Holm within each look)
and the other kinds form their own Holm family.

**Verdicts** (``gatelab.verdict.Verdict``). ``reproduced``: the paper's sign, adjusted
p < 0.05. ``not reproduced``: the opposite sign, adjusted p < 0.05 (for ``share``: the interval
excludes half the gain). ``reproduced, but a control gains as much``: the gain over the
reference is established but the variant does not beat one of the claim's ``controls``.
``inconclusive at this scale``: neither. With a design, ``undecided within the cap``: the last
look came and the claim did not cross its boundary. A non-significant difference is never read
as "no effect".

**Power.** Every t-test row says how far it is from deciding, from the seed-to-seed spread of
its differences (``stats.power.power_analysis``, 80% power, at the corrected level 0.05/m for
m tests): ``mde``, the smallest effect detectable at this n, and ``seeds_needed``, the seeds
(pairs) that would decide the observed effect. An inconclusive verdict's statistic ends with
both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from gatelab.dashboards.stats.inference import ALPHA, holm
from gatelab.dashboards.stats.power import Power, power_analysis
from gatelab.dashboards.stats.sequential import PROCEDURE, Design, decide
from gatelab.dashboards.store.columns import DType
from gatelab.dashboards.store.identity import split_variants
from gatelab.dashboards.tables.paper_tables import with_context_gap
from gatelab.dashboards.verdicts.claims import Claim, ClaimKind, load_claims
from gatelab.dashboards.verdicts.evidence import TESTS, Evidence, lr_tolerance, ranking, units
from gatelab.dashboards.verdicts.text import as_ratio, power_text
from gatelab.verdict import Verdict

FIXED_PROCEDURE = "Holm over the claims tested here"

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
    split = split_variants(runs)
    ids = set(runs["variant_id"].to_list()) if split else set()
    for claim in claims:
        named = [v for v in dict.fromkeys((*claim.variants(), *claim.controls)) if v in split]
        if named and set(claim.variants()) <= ids:
            rows.append(_Row(claim, "", "", "", None, _not_one_model(claim, named, split)))
            continue
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


def _not_one_model(claim: Claim, named: Sequence[str], split: dict[str, list[str]]
                   ) -> Evidence:
    """The row of a claim that names a variant id recorded with several architectures
    (``store/identity.py``): not tested, the architectures named."""
    ids = "; ".join(f"{v} names {len(split[v])} architectures ({', '.join(split[v])})"
                    for v in named)
    why = (f"not tested: {ids}, and a claim compares one model with another; report one "
           "sweep (rerun, it takes the runs of an older spec out of itself) or give each "
           "architecture an id of its own (gatelab new)")

    def decide(p_adj: float | None) -> tuple[Verdict, str | None]:
        return Verdict.INCONCLUSIVE, why

    against = "" if claim.kind is ClaimKind.LEVEL else f" vs {claim.reference}"
    return Evidence(f"{claim.variant}{against}: {claim.metric}", 0, None, None, None, decide,
                    lambda _: why, why, power_note="not tested: no power computed")


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
    if verdict.open:
        statistic += f"; {power_text(power, e.unit, e.scale, m)}"
    ratio = e.scale == "ratio"
    est = as_ratio(e.estimate) if ratio else e.estimate
    low = as_ratio(e.low) if ratio else e.low
    high = as_ratio(e.high) if ratio else e.high
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
            out.append(_record(row, Verdict.INCONCLUSIVE, "fewer seeds than the design's "
                               f"first look ({design.looks[0]})", None, len(sequential),
                               PROCEDURE))
            continue
        decision = decisions.get(row.key)
        if decision is None:
            at = rows_at[look][row.key]
            verdict = Verdict.UNDECIDED if look == last else Verdict.INCONCLUSIVE
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
    frame = with_context_gap(runs)  # the ctx4x_gap claim's column
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


def open_claims(runs: pl.DataFrame, claims: Sequence[Claim], design: Design) -> list[str]:
    """The ids of ``claims`` with a row that ``design`` could still decide and has not: a
    t-test row inconclusive at a look before the last (at the last one it is undecided, and
    more seeds are not coming). Every claim is open while there are no runs."""
    if runs.is_empty():
        return [c.id for c in claims]
    table = verdicts(runs, claims, design)
    undecided = table.filter(pl.col("procedure").str.starts_with(PROCEDURE)
                             & (pl.col("verdict") == Verdict.INCONCLUSIVE))
    return list(dict.fromkeys(undecided["claim"].to_list()))
