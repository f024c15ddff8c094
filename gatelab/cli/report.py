"""``gatelab report [NAME]``: tables, plots and an HTML report of a sweep's runs (or of every
training run), the verdict of each claim printed, and the report attached to MLflow as the
sweep's summary run."""

from __future__ import annotations

import argparse
from pathlib import Path

from gatelab.cli.options import Subparsers, add_store
from gatelab.contract import SWEEP_TAG_PREFIX


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="tables, plots and an HTML report of a sweep's runs")
    p.add_argument("name", nargs="?", help=f"the sweep (runs tagged {SWEEP_TAG_PREFIX}NAME); "
                   "omitted: every training run of the experiment (not attached to MLflow)")
    p.add_argument("--out", help="output folder (default: out/reports/NAME, or "
                   "out/reports/all-runs)")
    add_store(p)
    p.add_argument("--no-attach", action="store_true",
                   help="do not log the report to MLflow as the sweep's summary run")
    p.add_argument("--claims", metavar="FILE",
                   help="the claims to judge (default: $GATELAB_CLAIMS, else ./claims.yaml, "
                   "else the shipped claims.yaml)")
    return p


def run(args: argparse.Namespace) -> int:
    from gatelab.cli.format import verdict_table
    from gatelab.dashboards.report.summary_run import attach
    from gatelab.dashboards.report.write import write_report
    from gatelab.dashboards.runs import load
    from gatelab.dashboards.verdicts.claims import load_claims

    runs = load(args.name, tracking_uri=args.tracking_uri, experiment=args.experiment)
    if not len(runs):
        what = f"tagged {SWEEP_TAG_PREFIX}{args.name}" if args.name else "at all"
        raise ValueError(f"no training runs {what} in experiment {args.experiment!r} of "
                         f"{runs.store.uri}; check the name (sweeps.yaml), --experiment and "
                         "--tracking-uri")
    label = args.name or "all-runs"
    claims = load_claims(args.claims)
    report = write_report(runs, Path(args.out or Path("out") / "reports" / label),
                          claims=claims)
    print(verdict_table(report.table("verdicts").iter_rows(named=True)))
    print(f"\n{len(runs)} runs of {f'sweep {args.name}' if args.name else 'every sweep'}: "
          f"{len(report.tables)} tables (Markdown + CSV), {len(report.plots)} plots in "
          f"{report.out}")
    if args.name and not args.no_attach:
        run_id = attach(report, runs.store.uri, args.experiment, args.name)
        print(f"Attached to MLflow: summary run {run_id} (experiment {args.experiment!r})")
    print(f"Report: {report.html_path.resolve()}")
    return 0
