"""``gatelab sweep NAME``: a named sweep of sweeps.yaml on Ray (a grid of runs, or an LR search
with Optuna): the plan first, live progress, then the summary and where the results are.
``--dry-run`` prints the plan and its cost only; ``--until-decided`` is
``gatelab.cli.sweep_until_decided``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gatelab.cli.options import Subparsers, add_run_places


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("sweep", help="run a named sweep of sweeps.yaml on Ray")
    p.add_argument("name")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its cost only")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.add_argument("--retry-failed", action="store_true", help="rerun runs that failed")
    p.add_argument("--sweeps", help="the sweeps file (default: $GATELAB_SWEEPS, else "
                   "./sweeps.yaml, else the one shipped with gatelab)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a "
                   "local Ray started here)")
    p.add_argument("--study-storage", metavar="URL",
                   help="the LR search's Optuna storage, an SQLAlchemy URL (default: beside a "
                   "SQLite tracking store, else optuna.db in --storage)")
    p.add_argument("--task-retries", type=int, default=2, metavar="N",
                   help="reruns of a run whose worker or node died (default 2; never for a run "
                   "that raised or diverged)")
    p.add_argument("--until-decided", action="store_true",
                   help="add seeds in rounds until every claim the sweep tests is decided "
                   "(group-sequential alpha spending; see README) or --max-seeds is reached")
    p.add_argument("--max-seeds", type=int, metavar="N",
                   help="with --until-decided: the cap on seeds (default: the sweep's "
                   "max_seeds, else twice its seeds); fixed at the first round")
    p.add_argument("--claims", metavar="FILE",
                   help="with --until-decided: the claims file (default: $GATELAB_CLAIMS, "
                   "else ./claims.yaml, else the shipped one)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a field of the sweep, dotted (seeds=[0,1], "
                   "overrides.steps=500); repeatable")
    add_run_places(p)
    return p


def run(args: argparse.Namespace) -> int:
    from gatelab.cli import sweep_until_decided
    from gatelab.cli.format import say
    from gatelab.cli.live_view import LiveView
    from gatelab.cli.sweep_text import (
        format_plan,
        format_search,
        format_summary,
        results_text,
        ui_link,
        uri_flag,
    )
    from gatelab.contract import DONE_STATUSES, TO_TRAIN
    from gatelab.runners.sweep.context import SweepContext
    from gatelab.runners.sweep.driver import dry_run, plan_sweep, run_plan
    from gatelab.runners.sweep.lr_search import run_search
    from gatelab.runners.sweep.plan import plan_notes
    from gatelab.runners.sweep.spec import get_sweep
    from gatelab.shipped import sweeps_file

    path = sweeps_file(args.sweeps)
    sets = args.set or []
    sweep = get_sweep(args.name, path, sets)  # a bad sweeps file fails before anything starts
    if sets:
        say(f"sweep {args.name}: overrides from the command line: {', '.join(sets)}")
    ctx = SweepContext(tracking_uri=args.tracking_uri, experiment=args.experiment,
                       work_dir=Path(args.work_dir).resolve(), address=args.address,
                       retry_failed=args.retry_failed, sweeps_file=path,
                       storage=args.storage, study_storage=args.study_storage,
                       task_retries=args.task_retries)
    if args.max_seeds is not None and not args.until_decided:
        raise ValueError("--max-seeds only applies with --until-decided")
    if args.until_decided:
        return sweep_until_decided.run(args, sweep, ctx)
    if args.dry_run:
        report = dry_run(args.name, ctx, sweep)
        print(json.dumps(report.as_dict(), indent=2) if args.json else format_plan(report))
        return 0
    failed = False
    if sweep.search is not None:
        rows = run_search(args.name, sweep, ctx)
        print(format_search(args.name, rows))
    else:
        plan, numerics = plan_sweep(args.name, ctx, sweep)
        todo = [p for p in plan if p.state in TO_TRAIN]
        say(f"sweep {args.name}: {len(plan)} runs, {len(plan) - len(todo)} already "
            f"recorded, {len(todo)} to run")
        for note in plan_notes(plan):
            say(note)
        if not todo:
            say("nothing to run: every run of this sweep is already recorded")
        view = LiveView(todo, enabled=not args.no_progress)
        try:
            summary = run_plan(args.name, sweep, ctx, plan, numerics, view)
        finally:
            view.close()
        print(format_summary(args.name, summary))
        failed = any(r.status not in DONE_STATUSES for r in summary)
    where = ctx.uri
    given = args.tracking_uri is not None
    print(results_text(args.name, where, args.experiment, given))
    if where.startswith(("http://", "https://")):  # a tracking server serves its own UI
        print(f"Open the MLflow UI: {ui_link(ctx.client, args.experiment, base=where)}")
    else:
        print(f"Open the MLflow UI: .venv/bin/gatelab ui{uri_flag(where, given)}  (then "
              f"{ui_link(ctx.client, args.experiment)})")
    return 1 if failed else 0
