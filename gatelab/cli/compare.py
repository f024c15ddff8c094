"""``gatelab compare A B``: every metric of variant A against variant B on the same seeds."""

from __future__ import annotations

import argparse
import html
from pathlib import Path

from gatelab.cli.format import table
from gatelab.registry.errors import closest

PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>{title}</title><style>
body {{ font: 14px/1.45 system-ui, sans-serif; max-width: 1200px; margin: 1.5em auto; }}
table {{ border-collapse: collapse; width: 100%; table-layout: fixed; font-size: 12.5px; }}
th, td {{ border: 1px solid #d0d0d0; padding: 3px 6px; text-align: left;
          overflow-wrap: anywhere; }} th {{ background: #f3f3f3; }}
</style></head><body><h1>{title}</h1><p>{description}</p>{table}</body></html>
"""


def _num(x: object, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def cmd_compare(args: argparse.Namespace) -> int:
    from gatelab.dashboards.columns import FINAL_METRICS
    from gatelab.dashboards.compare import compare_variants
    from gatelab.dashboards.render import html_table
    from gatelab.dashboards.runs import load

    runs = load(args.sweep, tracking_uri=args.tracking_uri, experiment=args.experiment)
    present = sorted(set(runs.frame["variant"].drop_nulls().to_list()))
    for name in (args.a, args.b):
        if name not in present:
            where = f"sweep {args.sweep!r}" if args.sweep else "the experiment"
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
            f"[{r['diff'] - ci:.4g}, {r['diff'] + ci:.4g}]")
        rows.append((r["setting"], r["metric"], _num(r["mean_a"]), _num(r["mean_b"]),
                     _num(r["diff"]), interval, _num(r["p_value"], 2), r["n_pairs"]))
    print(table(("setting", "metric", args.a, args.b, "A - B", "95% CI", "p", "pairs"), rows))
    out = Path(args.out or Path("out") / "compare" / f"{args.a}-vs-{args.b}.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f"{args.a} against {args.b}"
    description = ("Per setting and metric: each variant's mean over its finished runs and the "
                   "paired difference A - B over runs of the same seed, with its 95% t-interval "
                   "and the paired t-test's two-sided p (not corrected for the number of "
                   "metrics: a screen, not a verdict; verdicts are in gatelab report).")
    frame = result.rename({"mean_a": f"mean {args.a}", "mean_b": f"mean {args.b}"})
    out.write_text(PAGE.format(title=html.escape(title), description=html.escape(description),
                               table=html_table(frame)))
    print(f"\n{result.height} comparisons; page: {out.resolve()}")
    return 0


def add_parser(sub: argparse._SubParsersAction, tracking_help: str) -> None:
    p = sub.add_parser("compare", help="every metric of variant A against variant B, paired "
                       "on seeds")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--sweep", help="only runs of this sweep (default: every training run)")
    p.add_argument("--tracking-uri", help=tracking_help)
    p.add_argument("--experiment", default="gatelab")
    p.add_argument("--out", help="the HTML page (default: out/compare/A-vs-B.html)")
    p.set_defaults(func=cmd_compare)
