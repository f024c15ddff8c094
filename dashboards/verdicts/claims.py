"""The paper's claims as data: one entry of ``claims.yaml`` per claim, so a user adds a claim
without code.

A claim names what to compare and the paper's direction. Most are ``paired``: ``metric`` of
``variant`` against ``reference`` on runs of the same setting and seed (the reference need not
be the baseline: "sigmoid beats SiLU" pairs ``g1-elementwise`` with ``g1-silu``). Other kinds
test one variant's level against a threshold (``level``: gate scores are sparse), the sink
(``sink``: a paired comparison that first checks, per head, that the reference forms a sink),
the headwise share of the gain (``share``), learning-rate tolerance (``lr-tolerance``) and the
paper's ranking (``ranking``). The file is found like the sweeps file
(``gatelab.shipped.claims_file``): ``--claims FILE``, else ``$GATELAB_CLAIMS``, else
``./claims.yaml``, else the one shipped beside this module.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from pathlib import Path

from gatelab.metrics import Metric
from gatelab.registry.errors import Problem, SpecError
from gatelab.registry.from_dict import Bound, bounded, from_dict
from gatelab.registry.loader import plain_data
from gatelab.shipped import CLAIMS_ENV, claims_file


class ClaimKind(enum.StrEnum):
    PAIRED = "paired"  # metric(variant) - metric(reference), paired on setting and seed
    LEVEL = "level"  # metric(variant) against ``threshold``, one-sample over runs
    SINK = "sink"  # paired, once the reference forms a sink (some head >= 0.3 on token 0)
    SHARE = "share"  # variant keeps >= half of reference's gain over the baseline
    LR_TOLERANCE = "lr-tolerance"  # larger stable / non-degraded LR than the reference
    RANKING = "ranking"  # variants ordered as in the paper (Spearman)


class Direction(enum.StrEnum):
    """The paper's direction of ``variant`` relative to ``reference`` (or ``threshold``)."""

    LOWER = "lower"
    HIGHER = "higher"

    @property
    def sign(self) -> int:
        return -1 if self is Direction.LOWER else 1


class Scale(enum.StrEnum):
    DIFFERENCE = "difference"  # mean of paired differences, in the metric's unit
    LOG_RATIO = "log-ratio"  # mean of paired log-ratios, reported as a ratio (m_act, f_attn)


SEQUENTIAL_KINDS = frozenset({ClaimKind.PAIRED, ClaimKind.LEVEL, ClaimKind.SINK})
"""The kinds decided by a t-test over seeds: the ones ``--until-decided`` adds seeds for."""


@dataclass(frozen=True)
class Claim:
    """One claim: what to compare, the paper's direction and value, how to read it."""

    id: str
    statement: str
    """The claim in one sentence, as the report prints it."""
    paper: str
    """What the paper reports for it (values and table rows)."""
    kind: ClaimKind = ClaimKind.PAIRED
    variant: str = "g1-elementwise"
    reference: str = "baseline"
    """The variant compared against (``paired``, ``sink``, ``share``: whose gain is shared;
    ``lr-tolerance``)."""
    metric: str = Metric.VAL_LOSS
    """A run-frame column (``val_loss``, ``m_act``, ``gate_score.mean``...)."""
    direction: Direction = Direction.LOWER
    scale: Scale = Scale.DIFFERENCE
    unit: str = ""
    """Written after a difference (``nats``); empty for ratios and unitless metrics."""
    threshold: float | None = bounded(None, Bound(ge=-1e12, le=1e12))
    """``level``: the value the metric is tested against (``gate_score.mean`` 0.2: the
    paper's sparse gates average 0.116, most scores near 0). Allowed: >= -1e12 and <= 1e12."""
    controls: tuple[str, ...] = ()
    """``paired``: variants lacking the paper's mechanism that the variant must also beat for
    the gain to count as the mechanism's (the scale control, the non-gate non-linearities,
    the parameter-matched capacity); the verdict says which it survives."""
    include_diverged: bool = False
    """Count diverged runs' final values too (spike scores); otherwise finished runs only."""

    @property
    def sequential(self) -> bool:
        return self.kind in SEQUENTIAL_KINDS

    def variants(self) -> tuple[str, ...]:
        """The variants the claim needs recorded to be tested (controls are optional)."""
        if self.kind is ClaimKind.RANKING:
            return ()
        if self.kind is ClaimKind.LEVEL:
            return (self.variant,)
        if self.kind is ClaimKind.SHARE:
            return (self.variant, self.reference, "baseline")
        return (self.variant, self.reference)


def load_claims(path: str | Path | None = None) -> tuple[Claim, ...]:
    """Every claim of the file, in its order; ``SpecError`` names each bad entry's field.
    A file is parsed again only when it changed (its modification time or size)."""
    where = claims_file(path)
    if not where.is_file():
        raise FileNotFoundError(f"claims file {where} not found: pass --claims FILE or set "
                                f"${CLAIMS_ENV}")
    stat = where.stat()
    return _parse_claims(str(where), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _parse_claims(path: str, mtime_ns: int, size: int) -> tuple[Claim, ...]:
    where = Path(path)
    raw = plain_data(where)
    entries = raw.get("claims") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise SpecError(str(where), [Problem("claims", "expected a list of claims under a "
                                                       "top-level 'claims:' key")])
    problems: list[Problem] = []
    claims: list[Claim] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        label = (f"claims[{i}]" if not isinstance(entry, dict) or "id" not in entry
                 else f"claims[{i}] ({entry['id']})")
        claim = from_dict(Claim, entry, problems, label)
        if claim is None:
            continue
        if claim.id in seen:
            problems.append(Problem(f"{label}.id", f"{claim.id!r} is used twice; ids must be "
                                                   "unique"))
        seen.add(claim.id)
        if claim.kind is ClaimKind.LEVEL and claim.threshold is None:
            problems.append(Problem(f"{label}.threshold", "a 'level' claim needs a threshold "
                                                          "(the value the metric is tested "
                                                          "against)"))
        if claim.kind is ClaimKind.PAIRED and claim.variant == claim.reference:
            problems.append(Problem(f"{label}.reference", "must differ from 'variant'"))
        claims.append(claim)
    if problems:
        raise SpecError(str(where), problems)
    return tuple(claims)
