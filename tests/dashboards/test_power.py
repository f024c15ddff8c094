"""The power of the paired t-test (``mde``, ``seeds_needed``) against the large-n normal closed
form and against a simulation of paired-difference datasets tested with scipy's ``ttest_rel``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from gatelab.dashboards.stats.inference import ALPHA, ci_half_width, sd_from_ci95
from gatelab.dashboards.stats.power import (
    POWER,
    SEEDS_NEEDED_CAP,
    mde,
    power_analysis,
    seeds_needed,
    t_test_power,
)

Z_ALPHA = float(sps.norm.ppf(1 - ALPHA / 2))
Z_SUM = Z_ALPHA + float(sps.norm.ppf(POWER))


def rejection_rate(n: int, effect: float, sd: float, trials: int, seed: int) -> float:
    """The fraction of ``trials`` datasets of ``n`` pairs (a - b has mean ``effect`` and
    spread ``sd``) in which scipy's paired t-test rejects at ``ALPHA``."""
    rng = np.random.default_rng(seed)
    b = rng.normal(5.0, 0.3, (trials, n))
    a = b + rng.normal(effect, sd, (trials, n))
    return float(np.mean(sps.ttest_rel(a, b, axis=1).pvalue < ALPHA))


@pytest.mark.parametrize("size", [0.05, 0.1, 0.2])
def test_seeds_needed_approaches_the_normal_closed_form(size: float) -> None:
    n_z = (Z_SUM / size) ** 2  # 785 for d/s = 0.1
    n = seeds_needed(size * 0.7, 0.7)
    assert n is not None and math.ceil(n_z) <= n <= math.ceil(n_z) + 3
    # The t-test's known correction: about z(1 - alpha/2)^2 / 2 more pairs than the normal test.
    assert n == pytest.approx(n_z + Z_ALPHA**2 / 2, abs=1)


@pytest.mark.parametrize("n", [500, 2000])
def test_mde_approaches_the_normal_closed_form(n: int) -> None:
    assert mde(0.3, n) == pytest.approx(Z_SUM * 0.3 / math.sqrt(n), rel=2e-3)


def test_mde_is_far_above_the_normal_form_at_few_seeds() -> None:
    # With 1 degree of freedom t(0.975) = 12.7: the normal form would understate it tenfold.
    assert mde(1.0, 2) > 5 * Z_SUM / math.sqrt(2)


def test_power_at_the_mde_is_the_target_and_seeds_needed_inverts_it() -> None:
    for n in (2, 3, 5, 10, 50):
        d = mde(0.02, n)
        assert float(t_test_power(n, d / 0.02)) == pytest.approx(POWER, abs=1e-9)
        assert seeds_needed(d * (1 + 1e-6), 0.02) == n
        assert seeds_needed(d * (1 - 1e-6), 0.02) == n + 1


def test_mde_decreases_with_n() -> None:
    values = [mde(0.05, n) for n in range(2, 41)]
    assert all(later < earlier for earlier, later in zip(values, values[1:], strict=False))
    assert mde(0.1, 7) == pytest.approx(2 * mde(0.05, 7))  # in the units of the spread


def test_a_simulated_paired_t_test_has_the_computed_power_at_seeds_needed() -> None:
    effect, sd, trials = -0.03, 0.06, 4000
    n = seeds_needed(effect, sd)
    assert n is not None and 30 <= n <= 40  # d/s = 0.5: 31.4 pairs by the normal form
    exact = float(t_test_power(n, abs(effect) / sd))
    assert POWER <= exact < float(t_test_power(n + 1, abs(effect) / sd))
    assert float(t_test_power(n - 1, abs(effect) / sd)) < POWER
    se = math.sqrt(exact * (1 - exact) / trials)
    assert rejection_rate(n, effect, sd, trials, seed=1) == pytest.approx(exact, abs=4 * se)


@pytest.mark.parametrize("n", [3, 6])
def test_a_simulated_effect_of_one_mde_is_detected_80_percent_of_the_time(n: int) -> None:
    trials = 4000
    rate = rejection_rate(n, mde(0.05, n), 0.05, trials, seed=n)
    assert rate == pytest.approx(POWER, abs=4 * math.sqrt(POWER * (1 - POWER) / trials))


def test_power_analysis_needs_two_seeds_and_a_spread() -> None:
    for n, sd in ((0, None), (1, None), (1, 0.1)):
        p = power_analysis(-0.1, sd, n)
        assert p.mde is None and p.seeds_needed is None
        assert p.note == "needs at least 2 seeds to measure the spread"
    zero = power_analysis(-0.1, 0.0, 4)
    assert zero.mde is None and zero.seeds_needed is None and "zero spread" in str(zero.note)
    with pytest.raises(ValueError, match="n >= 2"):
        mde(0.1, 1)
    assert math.isnan(float(t_test_power(1, 0.5)))


def test_power_analysis_of_a_zero_or_tiny_effect() -> None:
    zero = power_analysis(0.0, 0.05, 5)
    assert zero.seeds_needed is None and zero.mde == pytest.approx(mde(0.05, 5))
    assert "observed effect is 0" in str(zero.note)
    tiny = power_analysis(1e-4, 0.05, 5)  # d/s = 0.002: about 2 million pairs
    assert tiny.seeds_needed is None and f"more than {SEEDS_NEEDED_CAP}" in str(tiny.note)
    found = power_analysis(-0.05, 0.05, 5)
    assert found.seeds_needed == seeds_needed(0.05, 0.05) and found.note is None


@pytest.mark.parametrize("n", [2, 3, 10])
def test_sd_from_ci95_inverts_the_interval(n: int) -> None:
    assert sd_from_ci95(float(ci_half_width(0.37, n)), n) == pytest.approx(0.37, rel=1e-12)
    assert sd_from_ci95(None, n) is None and sd_from_ci95(0.5, 1) is None
