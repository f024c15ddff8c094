"""The statistics against known answers and against scipy's reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from gatelab.dashboards.stats.inference import (
    ci_half_width,
    fisher_greater,
    mean_ci,
    one_sample_t_test,
    paired_t_test,
    spearman,
)


def test_mean_ci_known_answer() -> None:
    m = mean_ci([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.302652729911275
    assert m.n == 3 and m.mean == pytest.approx(2.0) and m.sd == pytest.approx(1.0)
    assert m.ci95 == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert (m.low, m.high) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_mean_ci_matches_scipy_t_interval(n: int) -> None:
    x = np.random.default_rng(n).normal(3.0, 0.7, n)
    m = mean_ci(x.tolist())
    low, high = sps.t.interval(0.95, n - 1, loc=x.mean(), scale=sps.sem(x))
    assert (m.low, m.high) == pytest.approx((low, high), rel=1e-10)


def test_one_value_has_no_interval_and_says_why() -> None:
    m = mean_ci([4.2])
    assert m.mean == 4.2 and m.ci95 is None and m.low is None
    t = one_sample_t_test([4.2], 0.0)
    assert t.p_value is None and t.ci95 is None and "n=1" in (t.note or "")
    assert mean_ci([]).mean is None
    assert math.isnan(float(ci_half_width(1.0, 1)))


@pytest.mark.parametrize("n", [2, 3, 4, 8, 20])
def test_paired_t_test_matches_scipy_ttest_rel(n: int) -> None:
    rng = np.random.default_rng(100 + n)
    b = rng.normal(5.0, 0.3, n)
    a = b - 0.05 + rng.normal(0, 0.04, n)
    ours = paired_t_test(a.tolist(), b.tolist())
    ref = sps.ttest_rel(a, b)
    assert ours.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert ours.estimate == pytest.approx(float((a - b).mean()))
    low, high = sps.t.interval(0.95, n - 1, loc=(a - b).mean(), scale=sps.sem(a - b))
    assert (ours.low, ours.high) == pytest.approx((low, high), rel=1e-9)


def test_one_sample_t_test_matches_scipy() -> None:
    x = [0.31, 0.28, 0.35, 0.30]
    assert one_sample_t_test(x, 0.5).p_value == pytest.approx(
        float(sps.ttest_1samp(x, 0.5).pvalue), rel=1e-9)


def test_zero_spread_gives_no_p_value() -> None:
    t = paired_t_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert t.estimate == 0.0 and t.p_value is None and "zero spread" in (t.note or "")
    with pytest.raises(ValueError, match="length"):
        paired_t_test([1.0], [1.0, 2.0])


def test_spearman_rho_and_p_match_scipy_above_the_exact_range() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=15)
    y = x + rng.normal(scale=1.0, size=15)
    ours, ref = spearman(x.tolist(), y.tolist()), sps.spearmanr(x, y)
    assert ours.rho == pytest.approx(float(ref.statistic))
    assert ours.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)


@pytest.mark.parametrize("n", [4, 5, 7])
def test_spearman_exact_p_matches_a_permutation_test(n: int) -> None:
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=n), rng.normal(size=n)
    ours = spearman(x.tolist(), y.tolist())
    ref = sps.permutation_test((x,), lambda a: sps.spearmanr(a, y).statistic,
                               permutation_type="pairings", n_resamples=np.inf)
    assert ours.rho == pytest.approx(float(sps.spearmanr(x, y).statistic))
    assert ours.p_value == pytest.approx(float(ref.pvalue))


def test_spearman_small_orderings() -> None:
    # Three variants in the same order: rho = 1, and 2 of the 6 orderings are as extreme.
    perfect = spearman([5.76, 5.79, 6.03], [1.0, 2.0, 3.0])
    assert perfect.rho == pytest.approx(1.0) and perfect.p_value == pytest.approx(1 / 3)
    reverse = spearman([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0])
    assert reverse.rho == pytest.approx(-1.0) and reverse.p_value == pytest.approx(2 / 24)
    two = spearman([1.0, 2.0], [2.0, 1.0])
    assert two.rho == pytest.approx(-1.0) and two.p_value is None and two.note
    ties = spearman([1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    assert ties.rho == pytest.approx(float(sps.spearmanr([1, 1, 2, 3], [1, 2, 3, 4]).statistic))
    assert spearman([1.0], [2.0]).rho is None
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).rho is None


def test_fisher_exact_one_sided() -> None:
    # 3/3 against 0/3 diverged: one table of C(6,3) = 20 is as extreme.
    assert fisher_greater(3, 3, 0, 3) == pytest.approx(1 / 20)
    assert fisher_greater(1, 1, 0, 1) == pytest.approx(0.5)
    assert fisher_greater(0, 3, 3, 3) == pytest.approx(1.0)
    assert fisher_greater(4, 6, 1, 6) == pytest.approx(float(
        sps.fisher_exact([[4, 2], [1, 5]], alternative="greater").pvalue))
