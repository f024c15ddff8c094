"""Seeds until decided: the alpha-spending design, its false-positive rate on simulated null
sweeps, its power on simulated effects, and its replay on recorded runs."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps
from synthetic import FakeRun, frame

from gatelab.dashboards.stats.power import t_test_power
from gatelab.dashboards.stats.sequential import Design, decide, design_for, obf_spending
from gatelab.dashboards.verdicts.procedure import verdicts
from gatelab.verdict import Verdict

ALPHA = 0.05


def test_obrien_fleming_spending_spends_little_early_and_alpha_in_all() -> None:
    assert obf_spending(0.0) == 0.0 and obf_spending(1.0) == pytest.approx(ALPHA)
    # Closed form at t = 1/4: 2 - 2 Phi(1.95996 * 2) = 2 - 2 Phi(3.9199) ~ 8.86e-5.
    assert obf_spending(0.25) == pytest.approx(2 - 2 * sps.norm.cdf(2 * 1.959964), rel=1e-6)
    ts = np.linspace(0.05, 1, 20)
    spent = [obf_spending(float(t)) for t in ts]
    assert all(a < b for a, b in zip(spent, spent[1:], strict=False))


def test_a_design_spends_alpha_over_its_looks() -> None:
    design = design_for([0, 1, 2], max_seeds=9)
    assert design.seeds == tuple(range(9)) and design.looks == (3, 5, 7, 9)
    assert sum(design.spent(k) for k in range(4)) == pytest.approx(ALPHA)
    assert design.spent(0) < design.spent(3)
    assert design.look_of(2) is None and design.look_of(6) == 1 and design.look_of(9) == 3
    assert Design.from_dict(design.as_dict()) == design
    odd = design_for([4, 7], max_seeds=5, step=1)
    assert odd.seeds == (4, 7, 0, 1, 2) and odd.looks == (2, 3, 4, 5)
    with pytest.raises(ValueError, match="below the sweep's own 3 seeds"):
        design_for([0, 1, 2], max_seeds=2)


def _simulate(effect: float, m: int, design: Design, sims: int, seed: int) -> np.ndarray:
    """Per simulated sweep, whether any of m claims was decided in the wrong direction
    (``effect == 0``: any decision at all) or, for ``effect > 0``, the first claim was
    decided in the right direction. Each claim's paired differences are N(effect, 1)."""
    rng = np.random.default_rng(seed)
    d = rng.normal(effect, 1.0, size=(sims, m, design.max_seeds))
    p = np.stack([sps.ttest_1samp(d[:, :, :n], 0.0, axis=2).pvalue for n in design.looks])
    outcome = np.zeros(sims, dtype=bool)
    for i in range(sims):
        looks = [{f"c{j}": float(p[k, i, j]) for j in range(m)}
                 for k in range(len(design.looks))]
        decided = decide(looks, design)
        if effect == 0:
            outcome[i] = bool(decided)
        else:
            c0 = decided.get("c0")
            outcome[i] = c0 is not None and d[i, 0, :design.looks[c0.look]].mean() > 0
    return outcome


def test_the_false_positive_rate_stays_at_alpha_on_null_sweeps() -> None:
    """3 claims with no effect, looks at 3, 5, 7, 9 seeds: the chance that any claim is
    decided is at most alpha plus two standard errors over 4,000 simulated sweeps."""
    sims = 4000
    rate = _simulate(0.0, 3, design_for([0, 1, 2], 9), sims, seed=1).mean()
    se = math.sqrt(ALPHA * (1 - ALPHA) / sims)
    assert rate <= ALPHA + 2 * se, rate
    # And peeking without the correction would not: testing each look at alpha itself.
    naive = Design(tuple(range(9)), (3, 5, 7, 9), alpha=ALPHA)
    unspent = _naive_rate(naive, sims)
    assert unspent > ALPHA + 2 * se, unspent


def _naive_rate(design: Design, sims: int) -> float:
    d = np.random.default_rng(2).normal(0, 1, size=(sims, 3, design.max_seeds))
    hit = np.zeros(sims, dtype=bool)
    for n in design.looks:
        hit |= (sps.ttest_1samp(d[:, :, :n], 0.0, axis=2).pvalue < ALPHA).any(axis=1)
    return float(hit.mean())


def test_the_procedure_has_power_on_real_effects() -> None:
    """The price of looking early is small: a one-standard-deviation effect among 3 claims is
    decided, rightly, by 9 seeds in at least 80% as many sweeps as one test at 9 seeds
    (Bonferroni over the 3, closed form) would decide it; a two-standard-deviation effect
    almost always."""
    design = design_for([0, 1, 2], 9)
    power_1 = _simulate(1.0, 3, design, 600, seed=3).mean()
    power_2 = _simulate(2.0, 3, design, 600, seed=4).mean()
    fixed = float(t_test_power(9, 1.0, ALPHA / 3))
    assert power_1 >= 0.8 * fixed and power_2 > 0.95, (power_1, fixed)


def _runs(deltas: list[float]) -> list[FakeRun]:
    noise = np.random.default_rng(5).normal(0, 0.004, len(deltas))
    return ([FakeRun("baseline", s, 5.0 + 0.03 * s) for s in range(len(deltas))]
            + [FakeRun("g1-elementwise", s, 5.0 + 0.03 * s + d + float(noise[s]))
               for s, d in enumerate(deltas)])


def test_a_report_replays_the_looks_and_keeps_an_early_decision() -> None:
    design = design_for([0, 1, 2], max_seeds=7, step=2)
    # A clear gain on the first 3 seeds, then four that would blur it: decided at the first
    # look (3 seeds) and kept there.
    table = verdicts(frame(_runs([-0.1] * 3 + [0.3] * 4)), design=design)
    row = table.filter(pl.col("claim") == "gate-lowers-loss").row(0, named=True)
    assert row["verdict"] == Verdict.REPRODUCED and row["n"] == 3
    assert "decided at look 1 of 3 (3 seeds, cap 7)" in str(row["statistic"])
    assert "alpha spending" in str(row["procedure"])


def test_a_claim_open_at_the_last_look_is_undecided_within_the_cap() -> None:
    design = design_for([0, 1, 2], max_seeds=5, step=2)
    noisy = [0.01, -0.02, 0.015, -0.01, 0.0]
    table = verdicts(frame(_runs(noisy)), design=design)
    row = table.filter(pl.col("claim") == "gate-lowers-loss").row(0, named=True)
    assert row["verdict"] == Verdict.UNDECIDED and row["n"] == 5
    assert "look 2 of 2" in str(row["statistic"]) and "would take about" in str(row["statistic"])


def test_a_look_still_training_is_not_taken_for_the_last_one() -> None:
    """Round 2 interrupted: seeds 3 and 4 recorded for the baseline only (and one of them
    still running). The claim stays at look 1 (3 pairs), inconclusive, never 'undecided within
    the cap'."""
    design = design_for([0, 1, 2], max_seeds=5, step=2)
    runs = _runs([0.01, -0.02, 0.015, -0.01, 0.0])
    partial = [r for r in runs if r.seed < 3 or r.variant == "baseline"]
    partial.append(FakeRun("g1-elementwise", 3, 5.1, status="running"))
    table = verdicts(frame(partial), design=design)
    row = table.filter(pl.col("claim") == "gate-lowers-loss").row(0, named=True)
    assert row["verdict"] == Verdict.INCONCLUSIVE and row["n"] == 3
    assert "look 1 of 2 (3 seeds, cap 5): not decided" in str(row["statistic"])
