"""``gatelab sweep NAME --until-decided [--max-seeds N]``: rounds of seeds until every claim the
sweep tests is decided (``gatelab.runners.sweep.until_decided``); ``--dry-run`` prints the
design and each round's cost. ``gatelab.cli.sweep`` parses the flags and calls ``run``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatelab.runners.sweep.context import SweepContext
    from gatelab.runners.sweep.plan import PlannedRun
    from gatelab.runners.sweep.spec import Sweep


def run(args: argparse.Namespace, sweep: Sweep, ctx: SweepContext) -> int:
    """The until-decided path of ``gatelab sweep`` for ``sweep`` in ``ctx``; the exit code."""
    import polars as pl

    from gatelab.cli.format import say, table, verdict_table
    from gatelab.cli.live_view import LiveView
    from gatelab.cli.sweep_text import format_summary, results_text
    from gatelab.contract import DONE_STATUSES
    from gatelab.dashboards.runs import load
    from gatelab.dashboards.verdicts.claims import load_claims
    from gatelab.runners.sweep.until_decided import (
        dry_rounds,
        run_until_decided,
        sweep_claims,
    )

    if sweep.search is not None:
        raise ValueError(f"sweep {args.name!r} searches the LR with Optuna: --until-decided "
                         "needs a grid sweep (seeds and optionally lrs)")
    claims = load_claims(args.claims)
    if args.dry_run:
        chosen = sweep_claims(sweep, args.name, claims)
        design, planned = dry_rounds(args.name, sweep, ctx, args.max_seeds)
        print(f"sweep {args.name}: until decided, {len(chosen)} claims: "
              f"{', '.join(c.id for c in chosen)}")
        print(f"design: looks at {', '.join(map(str, design.looks))} seeds (seeds "
              f"{list(design.seeds)}), alpha {design.alpha:g} spent over the looks")
        print(table(("look", "seeds", "alpha at look", "runs left through it", "about"), [
            (k + 1, len(seeds), f"{design.spent(k):.3g}", cost.runs_left,
             f"{cost.seconds_estimate / 60:.1f} min") for k, seeds, cost in planned]))
        print("Each later round trains only the variants of the claims still open, so it "
              "costs at most this.")
        return 0
    views: list[LiveView] = []

    def observer(todo: list[PlannedRun]) -> LiveView:
        view = LiveView(todo, enabled=not args.no_progress)
        views.append(view)
        return view

    try:
        rounds = run_until_decided(args.name, sweep, ctx, args.max_seeds, say, observer,
                                   claims)
    finally:
        for view in views:
            view.close()
    print(format_summary(args.name, rounds[-1].summary))
    runs = load(args.name, ctx.uri, ctx.experiment)
    tested = [c.id for c in sweep_claims(sweep, args.name, claims)]
    print(verdict_table(runs.verdicts(claims).filter(pl.col("claim").is_in(tested))
                        .iter_rows(named=True)))
    failed = any(r.status not in DONE_STATUSES for rnd in rounds for r in rnd.summary)
    print(results_text(args.name, ctx.uri, args.experiment, args.tracking_uri is not None,
                       design=True))
    return 1 if failed else 0
