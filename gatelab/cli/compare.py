"""``gatelab compare A B``: every metric of variant A against variant B on the same seeds.

A and B are variants as the loaded runs name them: an id recorded with several architectures
(a shipped id replaced with ``gatelab new --force``, a spec edited between runs) is one variant
per architecture, ``ID@HASH8`` (``dashboards/store/identity.py``), so a pair is always one run
of A and one of B. Naming such an id alone is refused with its labels, to pick one."""

from __future__ import annotations

import argparse
from pathlib import Path

from gatelab.cli.format import number, table
from gatelab.cli.options import Subparsers, add_store
from gatelab.registry.errors import closest


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="every metric of variant A against variant B, paired "
                       "on seeds")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--sweep", help="only runs of this sweep (default: every training run)")
    add_store(p)
    p.add_argument("--out", help="the HTML page (default: out/compare/A-vs-B.html)")
    return p


def run(args: argparse.Namespace) -> int:
    from gatelab.dashboards.report.page import render_compare
    from gatelab.dashboards.runs import load
    from gatelab.dashboards.store.columns import FINAL_METRICS
    from gatelab.dashboards.store.identity import split_variants
    from gatelab.dashboards.tables.compare import compare_variants

    if args.a == args.b:
        raise ValueError(f"A and B are both {args.a!r}: name two variants")
    runs = load(args.sweep, tracking_uri=args.tracking_uri, experiment=args.experiment)
    present = sorted(set(runs.frame["variant"].drop_nulls().to_list()))
    split = split_variants(runs.frame)
    where = f"sweep {args.sweep!r}" if args.sweep else "the experiment"
    for name, other in ((args.a, args.b), (args.b, args.a)):
        if name in split:
            labels = split[name]
            raise ValueError(f"variant {name!r} was recorded with {len(labels)} architectures "
                             f"in {where} of {runs.store.uri}: {', '.join(labels)} (ID@ spec "
                             f"hash; gatelab show {name} prints the current spec's); compare "
                             f"one of them, e.g. gatelab compare "
                             f"{labels[0] if name == args.a else other} "
                             f"{other if name == args.a else labels[0]}")
        if name not in present:
            raise ValueError(f"no runs of variant {name!r}{closest(name, present)} in {where} "
                             f"of {runs.store.uri}; variants with runs: "
                             f"{', '.join(present) or 'none'}")
    result = compare_variants(runs.frame, args.a, args.b, FINAL_METRICS)
    if result.is_empty():
        raise ValueError(f"{args.a} and {args.b} have no finished runs in a common setting: "
                         "run both with the same recipe (e.g. in one sweep)")
    rows = []
    for r in result.iter_rows(named=True):
        ci = r["diff_ci95"]
        interval = "-" if ci is None or r["diff"] is None else (
            f"[{number(r['diff'] - ci)}, {number(r['diff'] + ci)}]")
        rows.append((r["setting"], r["metric"], number(r["mean_a"]), number(r["mean_b"]),
                     number(r["diff"]), interval, number(r["p_value"], 2), r["n_pairs"]))
    print(table(("setting", "metric", args.a, args.b, "A - B", "95% CI", "p", "pairs"), rows))
    out = Path(args.out or Path("out") / "compare" / f"{args.a}-vs-{args.b}.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f"{args.a} against {args.b}"
    description = ("Per setting and metric: each variant's mean over its finished runs and the "
                   "paired difference A - B over runs of the same seed, with its 95% t-interval "
                   "and the paired t-test's two-sided p (not corrected for the number of "
                   "metrics: a screen, not a verdict; verdicts are in gatelab report).")
    frame = result.rename({"mean_a": f"mean {args.a}", "mean_b": f"mean {args.b}"})
    out.write_text(render_compare(title, description, frame))
    print(f"\n{result.height} comparisons; page: {out.resolve()}")
    return 0
