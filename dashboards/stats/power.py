"""How far a t-test over seeds is from deciding: its power, the minimum detectable effect at
the current number of seeds (``mde``) and the seeds it would take to decide the observed effect
(``seeds_needed``), for the two-sided one-sample (or paired) t-test, from the noncentral t.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize
from scipy import stats as sps

from gatelab.dashboards.stats.inference import ALPHA, Floats

POWER = 0.8
"""The power at which ``mde`` and ``seeds_needed`` are computed."""
SEEDS_NEEDED_CAP = 10_000
"""``seeds_needed`` searches no further than this many pairs."""


def t_test_power(n: ArrayLike, effect_size: ArrayLike, alpha: float = ALPHA) -> Floats:
    """Power of the two-sided one-sample (or paired) t-test at level ``alpha`` with ``n`` values
    (pairs) when the true mean (difference) lies ``effect_size`` standard deviations from the
    tested value: P(|T| > t(1 - alpha/2, n-1)), T noncentral t with n-1 degrees of freedom and
    noncentrality ``effect_size * sqrt(n)``. NaN where ``n < 2``."""
    n_a = np.asarray(n, dtype=np.float64)
    ok = n_a >= 2
    dof = np.where(ok, n_a - 1, 1.0)
    crit = sps.t.ppf(1 - alpha / 2, dof)
    nc = np.asarray(effect_size, dtype=np.float64) * np.sqrt(np.where(ok, n_a, 1.0))
    # P(T < -crit) written as the upper tail of -T (noncentrality -nc): scipy's nct.cdf gives
    # NaN far in the lower tail (e.g. nct.cdf(-12.7, 1, 8)), nct.sf does not.
    power = sps.nct.sf(crit, dof, nc) + sps.nct.sf(crit, dof, -nc)
    out: Floats = np.where(ok, power, np.nan)
    return out


def _power(n: int, effect_size: float, alpha: float) -> float:
    return float(t_test_power(n, effect_size, alpha))


def mde(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """Minimum detectable effect: the smallest |mean| (in ``sd``'s units) that the two-sided
    t-test at ``alpha`` with ``n >= 2`` values of spread ``sd`` detects with ``power``."""
    if n < 2:
        raise ValueError(f"the minimum detectable effect needs n >= 2, got {n}")
    return _standard_mde(n, power, alpha) * sd


@functools.lru_cache(maxsize=4096)
def _standard_mde(n: int, power: float, alpha: float) -> float:
    """``mde`` in units of the spread: it depends on ``n``, ``power`` and ``alpha`` only, so
    the claims of a report (a few seed counts and levels) solve it once each."""
    hi = 1.0
    while _power(n, hi, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda d: _power(n, d, alpha) - power, 0.0, hi, xtol=1e-12))


def seeds_needed(effect: float, sd: float, power: float = POWER, alpha: float = ALPHA,
                 cap: int = SEEDS_NEEDED_CAP) -> int | None:
    """The smallest ``n >= 2`` at which the two-sided t-test at ``alpha`` detects a mean of
    ``effect`` with spread ``sd > 0`` with ``power``; ``None`` when more than ``cap`` (always
    for ``effect == 0``). Power grows with n, so a bisection finds it."""
    size = abs(effect) / sd
    if _power(2, size, alpha) >= power:
        return 2
    if _power(cap, size, alpha) < power:
        return None
    lo, hi = 2, cap  # power(lo) < target <= power(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _power(mid, size, alpha) >= power else (mid, hi)
    return hi


@dataclass(frozen=True)
class Power:
    """How far a t-test over ``n`` seeds (or pairs) is from deciding, at 80% power."""

    mde: float | None
    """The smallest |effect| detectable now, in the claim's units; ``None`` without spread."""
    seeds_needed: int | None
    """Seeds (pairs) needed to decide the observed effect; ``None``: see ``note``."""
    note: str | None


def power_analysis(effect: float | None, sd: float | None, n: int, alpha: float = ALPHA
                   ) -> Power:
    """``mde`` at ``n`` and ``seeds_needed`` for the observed ``effect`` (the mean difference
    from the tested value), from the seeds' spread ``sd``, for the test at ``alpha`` (a
    corrected level where several claims are tested); a note says what is missing."""
    if n < 2 or sd is None or math.isnan(sd):
        return Power(None, None, "needs at least 2 seeds to measure the spread")
    if sd == 0:
        return Power(None, None, "zero spread between seeds: no power estimate")
    detectable = mde(sd, n, alpha=alpha)
    if effect is None or effect == 0:
        return Power(detectable, None, "observed effect is 0: no number of seeds decides it")
    needed = seeds_needed(effect, sd, alpha=alpha)
    if needed is None:
        return Power(detectable, None,
                     f"more than {SEEDS_NEEDED_CAP} seeds to decide the observed effect")
    return Power(detectable, needed, None)
