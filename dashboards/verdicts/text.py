"""Verdicts in words: each row's statistic (the difference or ratio with its interval, the
p-value before and after correction), how far an open verdict is from being decided (its
power), and a verdict row as one sentence of the report. Numbers go through the dashboards'
one formatter (``dashboards/numbers.py``).
"""

from __future__ import annotations

import math
from typing import Any

from gatelab.dashboards.numbers import number
from gatelab.dashboards.stats.inference import ALPHA
from gatelab.dashboards.stats.power import POWER, Power
from gatelab.dashboards.verdicts.claims import Claim, Scale
from gatelab.verdict import Verdict


def as_ratio(log_ratio: float | None) -> float | None:
    """A paired log-ratio as the ratio it stands for."""
    return None if log_ratio is None else math.exp(log_ratio)


def difference_text(metric: str, scale: Scale, row: dict[str, Any], unit: str) -> str:
    """A paired test's estimate with its 95% interval (``row``: a ``paired_diff`` row): a
    difference with its ``unit``, or for a log-ratio the ratio."""
    diff, ci = row["diff"], row["diff_ci95"]
    assert diff is None or isinstance(diff, float)
    assert ci is None or isinstance(ci, float)
    low = None if diff is None or ci is None else diff - ci
    high = None if diff is None or ci is None else diff + ci
    if scale is Scale.LOG_RATIO:
        return (f"{metric} ratio {number(as_ratio(diff), 3)} [{number(as_ratio(low), 3)}, "
                f"{number(as_ratio(high), 3)}]")
    return f"Δ{metric} = {number(diff)}{unit} [{number(low)}, {number(high)}]"


def p_text(p: float | None, p_adj: float | None) -> str:
    """The raw p-value and the one after the family's correction."""
    return f"p = {number(p, 2)} (adjusted {number(p_adj, 2)})"


def unit_text(claim: Claim) -> str:
    """What is written after a difference: `` nats``, or nothing."""
    return f" {claim.unit}" if claim.unit else ""


def power_text(power: Power, unit: str, scale: str, m: int) -> str:
    """How far an open verdict is from deciding, at the level corrected for ``m`` tests."""
    level = f"at α = {ALPHA:g}/{m}" if m > 1 else f"at α = {ALPHA:g}"
    if scale == "ratio":
        mde = (None if power.mde is None
               else f"×{math.exp(-power.mde):.3g} or ×{math.exp(power.mde):.3g}")
    else:
        mde = None if power.mde is None else f"{number(power.mde, 2)}{unit}"
    if power.seeds_needed is not None and mde is not None:
        return (f"would take about {power.seeds_needed} seeds ({POWER:.0%} power {level}); "
                f"detectable now: {mde}")
    if mde is not None:
        return f"{power.note}; detectable now: {mde}"
    return f"power: {power.note}"



def verdict_sentence(row: dict[str, Any]) -> str:
    """One verdict row as a sentence: the claim, where, the effect with its interval, the
    p-value the verdict used, n, and the verdict (in bold Markdown)."""
    where = f" ({row['at']})" if row.get("at") else ""
    est, low, high = row["estimate"], row["ci_low"], row["ci_high"]
    if est is None:
        effect = "no estimate"
    elif row["scale"] == "ratio":
        effect = f"ratio {number(est, 3)} [{number(low, 3)}, {number(high, 3)}]"
    elif row["scale"] == "difference":
        effect = f"Δ {est:+.3g} [{number(low, 3)}, {number(high, 3)}]"
    elif row["scale"].startswith("mean vs "):
        effect = (f"mean {number(est, 3)} [{number(low, 3)}, {number(high, 3)}] against "
                  f"{row['scale'].removeprefix('mean vs ')}")
    else:
        effect = f"{row['scale']} {number(est, 3)}"
    p = row["p_adjusted"] if row["p_adjusted"] is not None else row["p_value"]
    p_part = "no p-value" if p is None else f"p = {number(p, 2)}" + (
        " adjusted" if row["p_adjusted"] is not None else "")
    sentence = (f"{row['statement']}{where}: {effect}, {p_part}, n = {row['n']}: "
                f"**{row['verdict']}**.")
    if row.get("seeds_needed") is not None and Verdict(row["verdict"]).open:
        sentence += f" About {row['seeds_needed']} seeds would decide it."
    elif row.get("note"):
        sentence += f" ({row['note']})"
    return sentence
