"""``gatelab sweep NAME --until-decided``: add seeds in rounds until each claim the sweep tests
is decided or the seed cap is reached.

The rounds follow a ``Design`` (``dashboards/stats/sequential.py``): the sweep's own seeds first,
then two new seeds per round up to the cap. The design is fixed at the first round and
recorded as an experiment tag (``gatelab.contract.design_tag``), so that a second invocation,
and every report, replays the same looks; a different cap later is refused rather than
silently changing the procedure's alpha. After each round the sweep's runs are loaded from the
tracking store and the claims judged with the design; the next round trains only the variants
of the claims still open (and their controls). Runs already recorded count: each round is
planned like any sweep, by hash.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from gatelab.contract import TO_TRAIN, design_tag
from gatelab.dashboards.decide import (
    PROCEDURE,
    Claim,
    Design,
    design_for,
    load_claims,
    load_frame,
    open_claims,
    testable,
)
from gatelab.experiment import ensure_experiment
from gatelab.runners.sweep.context import SweepContext
from gatelab.runners.sweep.driver import SummaryRow, plan_sweep, run_plan, slots
from gatelab.runners.sweep.execute import SweepObserver
from gatelab.runners.sweep.plan import Estimate, PlannedRun, estimate, recorded_runs
from gatelab.runners.sweep.spec import Sweep, selected_variants


@dataclass(frozen=True)
class Round:
    """One look of the design: the seeds it covers, what it trained, what was left open."""

    look: int
    seeds: tuple[int, ...]
    variants: tuple[str, ...]
    estimate: Estimate
    summary: list[SummaryRow]
    open_claims: tuple[str, ...]


def sweep_claims(sweep: Sweep, name: str, claims: Sequence[Claim] | None = None
                 ) -> list[Claim]:
    """The claims ``sweep`` tests: its ``claims`` ids, else every claim decided by seeds whose
    variants it has; an unknown id is an error naming the sweep's field."""
    every = {c.id: c for c in (load_claims() if claims is None else claims)}
    if sweep.claims:
        unknown = [c for c in sweep.claims if c not in every]
        if unknown:
            raise ValueError(f"sweep {name!r}: claims {unknown} are not in the claims file "
                             f"(known: {', '.join(every)}); fix sweeps.yaml {name}.claims")
        return [every[c] for c in sweep.claims]
    have = {s.id for s in selected_variants(sweep)}
    return [c for c in every.values() if c.sequential and set(c.variants()) <= have
            and c.variants()]


def recorded_design(ctx: SweepContext, name: str) -> Design | None:
    exp = ctx.client.get_experiment_by_name(ctx.experiment)
    raw = None if exp is None else exp.tags.get(design_tag(name))
    return None if raw is None else Design.from_dict(json.loads(raw))


def fix_design(ctx: SweepContext, name: str, sweep: Sweep, max_seeds: int | None,
               claims: Sequence[Claim]) -> Design:
    """The recorded design of this sweep, or a new one recorded now. A cap other than the
    recorded one is refused: changing it after a look would change the alpha spent."""
    recorded = recorded_design(ctx, name)
    cap = max_seeds or sweep.max_seeds or 2 * len(sweep.seeds)
    if recorded is not None:
        if max_seeds is not None and max_seeds != recorded.max_seeds:
            raise ValueError(
                f"sweep {name!r} already runs until decided with at most "
                f"{recorded.max_seeds} seeds (looks at {list(recorded.looks)}), fixed at its "
                f"first round: --max-seeds {max_seeds} would change the alpha it has spent. "
                f"Drop --max-seeds, or start a new study under another --experiment")
        return recorded
    design = design_for(sweep.seeds, cap, claims=[c.id for c in claims])
    exp_id = ensure_experiment(ctx.client, ctx.uri, ctx.experiment)
    ctx.client.set_experiment_tag(exp_id, design_tag(name), json.dumps(design.as_dict()))
    return design


def round_variants(sweep: Sweep, claims: Sequence[Claim], open_ids: Sequence[str]
                   ) -> tuple[str, ...]:
    """The sweep's variants that the open claims compare (with their controls)."""
    have = [s.id for s in selected_variants(sweep)]
    wanted: set[str] = set()
    for claim in claims:
        if claim.id in open_ids:
            wanted |= {*claim.variants(), *claim.controls}
    return tuple(v for v in have if v in wanted)


def plan_round(name: str, sweep: Sweep, ctx: SweepContext, design: Design, look: int,
               variants: Sequence[str]) -> tuple[Sweep, list[PlannedRun], Estimate]:
    """The sweep narrowed to one look's seeds and variants, planned, with its cost."""
    narrowed = replace(sweep, variants=tuple(variants), select=None,
                       seeds=design.seeds_at(look))
    recorded = recorded_runs(ctx.uri, ctx.experiment)
    plan, _ = plan_sweep(name, ctx, narrowed, recorded)
    cost = estimate(plan, recorded, slots(sweep))
    return narrowed, plan, cost


def run_until_decided(name: str, sweep: Sweep, ctx: SweepContext, max_seeds: int | None,
                      say: Callable[[str], None],
                      observer: Callable[[list[PlannedRun]], SweepObserver] | None = None,
                      claims: Sequence[Claim] | None = None) -> list[Round]:
    """Run the design's looks until no claim of the sweep is open; ``say`` gets each round's
    plan and cost before it starts and what it decided after."""
    chosen = sweep_claims(sweep, name, claims)
    if not chosen:
        raise ValueError(f"sweep {name!r} tests no claim decided by seeds: name some in "
                         f"sweeps.yaml {name}.claims")
    design = fix_design(ctx, name, sweep, max_seeds, chosen)
    say(f"sweep {name}: until decided, {len(chosen)} claims ({', '.join(c.id for c in chosen)})"
        f"; looks at {', '.join(map(str, design.looks))} seeds; {PROCEDURE}, alpha "
        f"{design.alpha:g} over all rounds")
    rounds: list[Round] = []
    open_ids = [c.id for c in chosen]
    variants = tuple(s.id for s in selected_variants(sweep))
    for look in range(len(design.looks)):
        narrowed, plan, cost = plan_round(name, sweep, ctx, design, look, variants)
        todo = [p for p in plan if p.state in TO_TRAIN]
        say(f"round {look + 1}/{len(design.looks)}: seeds {list(design.seeds_at(look))}, "
            f"{len(variants)} variants, {len(plan)} runs ({len(plan) - len(todo)} recorded), "
            f"{len(todo)} to train, about {cost.seconds_estimate / 60:.1f} min on "
            f"{cost.parallel_slots} slots ({cost.throughput_source} throughput)")
        summary = run_plan(name, narrowed, ctx, plan, ctx.numerics(sweep.resources),
                           observer(todo) if observer is not None else None)
        frame = load_frame(ctx.uri, ctx.experiment, name)
        open_ids = open_claims(frame, chosen, design) if testable(frame, chosen) else open_ids
        rounds.append(Round(look, design.seeds_at(look), variants, cost, summary,
                            tuple(open_ids)))
        decided = [c.id for c in chosen if c.id not in open_ids]
        say(f"after round {look + 1}: decided {len(decided)}/{len(chosen)}"
            + (f"; open: {', '.join(open_ids)}" if open_ids else ""))
        if not open_ids:
            break
        variants = round_variants(sweep, chosen, open_ids)
    return rounds


def dry_rounds(name: str, sweep: Sweep, ctx: SweepContext, max_seeds: int | None
               ) -> tuple[Design, list[tuple[int, tuple[int, ...], Estimate]]]:
    """Each round's cost if every claim stayed open (the most the study can take)."""
    recorded = recorded_design(ctx, name)
    design = recorded or design_for(sweep.seeds, max_seeds or sweep.max_seeds
                                    or 2 * len(sweep.seeds))
    variants = tuple(s.id for s in selected_variants(sweep))
    out = []
    for look in range(len(design.looks)):
        _, _, cost = plan_round(name, sweep, ctx, design, look, variants)
        out.append((look, design.seeds_at(look), cost))
    return design, out
