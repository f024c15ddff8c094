"""Seeds until decided: a group-sequential test whose chance of any false claim stays at the
stated alpha across rounds of seeds.

The procedure is alpha spending (Lan & DeMets 1983, "Discrete sequential boundaries for
clinical trials", Biometrika 70(3):659-663) with the O'Brien-Fleming-type spending function
``alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t))`` (O'Brien & Fleming 1979, Biometrics
35:549-556), ``t = n_k / n_max`` the information fraction at look ``k``: the seeds so far over
the cap. At look ``k`` the claims still open are tested with their two-sided t-tests over the
seeds so far, Holm-adjusted among themselves (``inference.holm``), against the alpha spent at
that look, ``alpha(t_k) - alpha(t_{k-1})``; a claim that crosses it is decided (reproduced or not,
by its sign) and stays decided. Summing the spent alphas (a union bound over looks) caps the
chance of any false decision at ``alpha(1) = alpha`` without the joint distribution of the
statistics across looks that the exact Lan-DeMets boundaries use: conservative, valid for t-tests
at any number of seeds, and replayable from recorded runs. Early looks spend little (an effect
must be large to be decided at 3 of 9 seeds), so the last look keeps most of alpha.

A ``Design`` is fixed before the first look (the seeds of each round and the cap) and recorded
with the sweep, so a report replays the same looks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as sps

from gatelab.dashboards.stats.inference import ALPHA, holm

PROCEDURE = ("group-sequential: O'Brien-Fleming-type alpha spending (Lan & DeMets 1983), "
             "Holm over the open claims at each look")


def obf_spending(t: float, alpha: float = ALPHA) -> float:
    """The alpha spent up to information fraction ``t`` in [0, 1]: 0 at 0, ``alpha`` at 1."""
    if t <= 0:
        return 0.0
    z = sps.norm.ppf(1 - alpha / 2)
    return float(2 - 2 * sps.norm.cdf(z / math.sqrt(min(t, 1.0))))


@dataclass(frozen=True)
class Design:
    """The seeds of each round, fixed before the first look; ``seeds[:looks[k]]`` are the
    seeds at look ``k`` and ``looks[-1]`` is the cap."""

    seeds: tuple[int, ...]
    looks: tuple[int, ...]
    alpha: float = ALPHA
    claims: tuple[str, ...] = ()
    """The ids of the claims the design decides (one family); empty: every t-test claim."""

    def __post_init__(self) -> None:
        if not self.looks or list(self.looks) != sorted(set(self.looks)) or self.looks[0] < 2:
            raise ValueError(f"looks must increase from at least 2 seeds, got {self.looks}")
        if self.looks[-1] != len(self.seeds):
            raise ValueError(f"the last look ({self.looks[-1]}) must use every seed "
                             f"({len(self.seeds)})")

    @property
    def max_seeds(self) -> int:
        return self.looks[-1]

    def spent(self, k: int) -> float:
        """The alpha available at look ``k`` (0-based)."""
        cap = self.max_seeds
        before = obf_spending(self.looks[k - 1] / cap, self.alpha) if k else 0.0
        return obf_spending(self.looks[k] / cap, self.alpha) - before

    def seeds_at(self, k: int) -> tuple[int, ...]:
        return self.seeds[:self.looks[k]]

    def look_of(self, n_seeds: int) -> int | None:
        """The last look whose seeds ``n_seeds`` seeds cover; ``None`` before the first."""
        done = [k for k, n in enumerate(self.looks) if n <= n_seeds]
        return done[-1] if done else None

    def as_dict(self) -> dict[str, object]:
        return {"seeds": list(self.seeds), "looks": list(self.looks), "alpha": self.alpha,
                "claims": list(self.claims)}

    @staticmethod
    def from_dict(data: Mapping[str, object]) -> Design:
        seeds, looks = data["seeds"], data["looks"]
        alpha, claims = data.get("alpha", ALPHA), data.get("claims", [])
        assert isinstance(seeds, list) and isinstance(looks, list)
        assert isinstance(alpha, int | float) and isinstance(claims, list)
        return Design(tuple(int(s) for s in seeds), tuple(int(n) for n in looks), float(alpha),
                      tuple(str(c) for c in claims))


def design_for(first: Sequence[int], max_seeds: int, step: int | None = None,
               alpha: float = ALPHA, claims: Sequence[str] = ()) -> Design:
    """Rounds that start with the seeds ``first`` and add ``step`` new seeds (default 2) up to
    ``max_seeds``; the new seeds are the smallest non-negative integers not used yet."""
    first = tuple(dict.fromkeys(first))
    if max_seeds < len(first):
        raise ValueError(f"--max-seeds {max_seeds} is below the sweep's own {len(first)} seeds")
    step = 2 if step is None else step
    if step < 1:
        raise ValueError(f"a round must add at least one seed, got {step}")
    seeds = list(first)
    candidate = 0
    while len(seeds) < max_seeds:
        if candidate not in seeds:
            seeds.append(candidate)
        candidate += 1
    looks = list(range(len(first), max_seeds, step)) + [max_seeds]
    return Design(tuple(seeds), tuple(n for n in looks if n >= 2) or (max_seeds,), alpha,
                  tuple(claims))


@dataclass(frozen=True)
class Decision:
    look: int
    """0-based look at which the claim was decided."""
    p_adjusted: float
    level: float
    """The alpha spent at that look."""


def decide(p_values: Sequence[Mapping[str, float | None]], design: Design
           ) -> dict[str, Decision]:
    """``p_values[k]``: each open test's two-sided p-value at look ``k`` (``None``: not
    testable yet). Returns the tests decided and where: at each look, the tests not yet
    decided are Holm-adjusted among themselves and decided where the adjusted p falls below
    the alpha spent at that look."""
    decided: dict[str, Decision] = {}
    for k, at_look in enumerate(p_values):
        open_keys = [key for key in at_look if key not in decided]
        adjusted = holm([at_look[key] for key in open_keys])
        level = design.spent(k)
        for key, p in zip(open_keys, adjusted, strict=True):
            if p is not None and p < level:
                decided[key] = Decision(k, p, level)
    return decided
