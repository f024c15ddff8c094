"""The statistics behind every table: means over seeds with a t-based 95% confidence interval,
paired and one-sample t-tests, Spearman's rank correlation, Fisher's exact test and Holm's
correction for several tests at once (their power: ``power.py``).

Seed sweeps are small, so each function says what it cannot compute instead of returning NaN:
with one value there is no interval and no p-value (``None``, and a ``note`` saying why). The
array functions (``ci_half_width``, ``t_test_p``) are the single implementation; the scalar
helpers and the Polars aggregations in ``tables/compare.py`` are built on them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

CONFIDENCE = 0.95
"""Level of every confidence interval."""
ALPHA = 0.05
"""A p-value below this counts as significant in the verdicts (two-sided tests)."""

Floats = NDArray[np.float64]


def ci_half_width(sd: ArrayLike, n: ArrayLike) -> Floats:
    """Half-width of the 95% t-interval of a mean: t(0.975, n-1) * sd / sqrt(n).
    NaN where ``n < 2`` (no spread to estimate) or ``sd`` is missing."""
    sd_a = np.asarray(sd, dtype=np.float64)
    n_a = np.asarray(n, dtype=np.float64)
    ok = n_a >= 2
    dof = np.where(ok, n_a - 1, 1.0)
    t = sps.t.ppf(0.5 + CONFIDENCE / 2, dof)
    out: Floats = np.where(ok, t * sd_a / np.sqrt(np.where(ok, n_a, 1.0)), np.nan)
    return out


def t_test_p(mean: ArrayLike, sd: ArrayLike, n: ArrayLike, mu: float = 0.0) -> Floats:
    """Two-sided p-value of a one-sample t-test of ``mean`` against ``mu`` (a paired test when
    the values are paired differences). NaN where ``n < 2`` or the spread is zero."""
    mean_a = np.asarray(mean, dtype=np.float64)
    sd_a = np.asarray(sd, dtype=np.float64)
    n_a = np.asarray(n, dtype=np.float64)
    ok = (n_a >= 2) & (sd_a > 0)
    se = np.where(ok, sd_a / np.sqrt(np.where(ok, n_a, 1.0)), 1.0)
    t = (mean_a - mu) / se
    p = 2 * sps.t.sf(np.abs(t), np.where(ok, n_a - 1, 1.0))
    out: Floats = np.where(ok, p, np.nan)
    return out


def small_n_note(n: int, spread_zero: bool = False) -> str | None:
    """Why an interval or a p-value is missing, or ``None`` when both exist."""
    if n == 0:
        return "no data"
    if n == 1:
        return "n=1: no confidence interval or p-value"
    if spread_zero:
        return "zero spread: no p-value"
    return None


def _none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _bound(center: float | None, half_width: float | None, sign: int) -> float | None:
    """An end of the interval ``center ± half_width``; ``None`` when either is missing."""
    return None if center is None or half_width is None else center + sign * half_width


@dataclass(frozen=True)
class MeanCI:
    """A mean over ``n`` values with its 95% t-interval (``mean ± ci95``)."""

    n: int
    mean: float | None
    sd: float | None
    ci95: float | None
    """Half-width of the interval; ``None`` when ``n < 2``."""

    @property
    def low(self) -> float | None:
        return _bound(self.mean, self.ci95, -1)

    @property
    def high(self) -> float | None:
        return _bound(self.mean, self.ci95, +1)


def mean_ci(values: Sequence[float]) -> MeanCI:
    """Mean, sample standard deviation and 95% t-interval of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return MeanCI(0, None, None, None)
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    return MeanCI(n, float(x.mean()), _none(sd), _none(float(ci_half_width(sd, n))))


@dataclass(frozen=True)
class TTest:
    """A t-test of a mean (of values, or of paired differences ``a - b``) against ``mu``."""

    n: int
    estimate: float | None
    """The mean (of the differences, for a paired test)."""
    ci95: float | None
    p_value: float | None
    """Two-sided; ``None`` when ``n < 2`` or the spread is zero."""
    note: str | None

    @property
    def low(self) -> float | None:
        return _bound(self.estimate, self.ci95, -1)

    @property
    def high(self) -> float | None:
        return _bound(self.estimate, self.ci95, +1)


def one_sample_t_test(values: Sequence[float], mu: float = 0.0) -> TTest:
    """Is the mean of ``values`` different from ``mu``? (two-sided)"""
    m = mean_ci(values)
    if m.mean is None:
        return TTest(0, None, None, None, small_n_note(0))
    sd = m.sd if m.sd is not None else math.nan
    p = _none(float(t_test_p(m.mean, sd, m.n, mu)))
    return TTest(m.n, m.mean, m.ci95, p, small_n_note(m.n, spread_zero=m.n > 1 and sd == 0))


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> TTest:
    """Paired t-test of ``a - b`` (same seeds, in the same order) against zero."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return one_sample_t_test(d.tolist())


@dataclass(frozen=True)
class Correlation:
    """Spearman's rank correlation of two orderings of the same ``n`` items."""

    n: int
    rho: float | None
    p_value: float | None
    """Two-sided (see ``spearman``); ``None`` when ``n < 3``."""
    note: str | None


def ranks(values: Sequence[float]) -> Floats:
    """Ranks 1..n, ties sharing their average rank."""
    out: Floats = np.asarray(sps.rankdata(np.asarray(values, dtype=np.float64)),
                             dtype=np.float64)
    return out


EXACT_SPEARMAN_MAX_N = 8
"""Up to this many items the Spearman p-value is exact (all n! orderings); above it, the
t-approximation. The t-approximation gives p = 0 for a perfect ordering of 3 items, where the
exact answer is 1/3."""


def _rho(rx: Floats, ry: Floats) -> float:
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> Correlation:
    """Spearman's rho: the Pearson correlation of the ranks. Two-sided p-value: exact by
    permutation for n <= ``EXACT_SPEARMAN_MAX_N``, else from t = rho * sqrt((n-2)/(1-rho^2))
    with n - 2 degrees of freedom (scipy's ``spearmanr``)."""
    if len(x) != len(y):
        raise ValueError(f"orderings differ in length: {len(x)} and {len(y)}")
    n = len(x)
    if n < 2:
        return Correlation(n, None, None, "fewer than 2 variants: no rank correlation")
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return Correlation(n, None, None, "all values tied: no rank correlation")
    rho = _rho(rx, ry)
    if n < 3:
        return Correlation(n, rho, None, "n=2 variants: rho is ±1, no p-value")
    if n <= EXACT_SPEARMAN_MAX_N:
        # Every permutation of ry has the same mean and norm: rho is one dot product each.
        xc, yc = rx - rx.mean(), ry - ry.mean()
        perms = np.array(list(itertools.permutations(yc)), dtype=np.float64)
        rhos = perms @ xc / (np.linalg.norm(xc) * np.linalg.norm(yc))
        p_exact = float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))
        return Correlation(n, rho, p_exact, None)
    if abs(rho) >= 1.0:
        return Correlation(n, rho, 0.0, None)
    t = rho * math.sqrt((n - 2) / (1 - rho * rho))
    return Correlation(n, rho, float(2 * sps.t.sf(abs(t), n - 2)), None)


def fisher_greater(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided p-value of Fisher's exact test that group 1's rate ``k1/n1`` exceeds group 2's
    ``k2/n2`` (e.g. the baseline diverges more often than the gated model at one LR)."""
    table = [[k1, n1 - k1], [k2, n2 - k2]]
    return float(sps.fisher_exact(table, alternative="greater").pvalue)


def sd_from_ci95(ci95: float | None, n: int) -> float | None:
    """The sample standard deviation behind a 95% t-interval's half-width (the inverse of
    ``ci_half_width``); ``None`` when there is no interval (``n < 2``)."""
    if ci95 is None or n < 2 or math.isnan(ci95):
        return None
    return float(ci95 * math.sqrt(n) / sps.t.ppf(0.5 + CONFIDENCE / 2, n - 1))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (Holm 1979, Scand. J. Statist. 6:65-70) of ``p_values``
    taken as one family: the i-th smallest of m becomes max over j <= i of (m - j + 1) p_(j),
    capped at 1. Rejecting where the adjusted p < alpha keeps the chance of any false
    rejection in the family at most alpha, whatever the tests' dependence. ``None`` (no test)
    stays ``None`` and does not count in m."""
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(present)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
