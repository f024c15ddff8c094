"""Benchmark (not a test): ``gatelab sweep smoke --dry-run`` against a store of 10,000 recorded
runs, the planner's store reading before and after it went through the dashboards' loader, as
a ratio measured in one run. Writes ``docs/benchmarks/plan_dry_run.json``.

The store is ``load_runs.py``'s (synthetic runs shaped like real ones, experiment ``gatelab``);
the sweep planned is the shipped ``smoke`` (8 runs), so nearly all the time is the reading.

- after: ``driver.dry_run`` as it is, which reads the store once (``plan.recorded_runs``: the
  dashboards' SQL loader for a SQLite store) and plans and estimates from that;
- before: what the dry run did until then, rebuilt from its parts: the scan the planner had
  (``MlflowClient.search_runs``, pages of 1000, oldest first, the newest run of each hash
  kept), twice (once for the plan and once for the estimate), plus the same planning and
  estimate as after (``make_plan`` and ``estimate``, timed on their own).

Each path runs once untimed first (imports, MLflow's engine, the FLOPs of each variant), then
``--rounds`` interleaved rounds; medians.

    .venv/bin/python benchmarks/plan_dry_run.py [--runs 10000] [--rounds 3] [--store PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

from load_runs import fill, timed

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "plan_dry_run.json"
SWEEP = "smoke"


def client_scan(client: Any, experiment: str) -> dict[str, Any]:
    """The planner's read of the store before this change, as it was: every run of the
    experiment through ``MlflowClient``, the newest of each hash kept."""
    from gatelab.contract import Tag

    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs: dict[str, Any] = {}
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        for run in page:
            if Tag.RUN_HASH in run.data.tags:
                runs[run.data.tags[Tag.RUN_HASH]] = run
        token = page.token
        if not token:
            return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", type=Path, default=None,
                        help="the SQLite file to fill, or to reuse where it already holds "
                             "--runs runs (load_runs.py --store makes the same one)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the JSON written (default {OUT})")
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    import mlflow

    from gatelab.runners.sweep.context import SweepContext
    from gatelab.runners.sweep.driver import dry_run, slots
    from gatelab.runners.sweep.plan import estimate, expand, make_plan, recorded_runs
    from gatelab.runners.sweep.spec import get_sweep
    from gatelab.shipped import shipped_sweeps

    work = Path(tempfile.mkdtemp(prefix="gatelab-planbench-"))
    db = args.store or work / "mlflow.db"
    uri = f"sqlite:///{db.resolve()}"
    fill_s = None
    if db.exists() and len(recorded_runs(uri, "gatelab")) == args.runs:
        print(f"reusing {db}: it holds {args.runs} runs")
    else:
        if db.exists():
            raise SystemExit(f"{db} exists but does not hold {args.runs} runs: remove it")
        fill_s = fill(uri, args.runs)
        print(f"wrote {args.runs} runs in {fill_s:.1f} s")
    sweep = get_sweep(SWEEP, shipped_sweeps())
    ctx = SweepContext(tracking_uri=uri, experiment="gatelab", work_dir=work / "work")
    numerics = ctx.numerics(sweep.resources)

    def after() -> float:
        seconds, report = timed(lambda: dry_run(SWEEP, ctx, sweep))
        assert len(report.runs) == len(expand(sweep))
        return seconds

    def before() -> tuple[float, float]:
        scans = []
        for _ in range(2):  # plan_sweep's read, then dry_run's own for the estimate
            seconds, scanned = timed(lambda: client_scan(ctx.client, ctx.experiment))
            assert len(scanned) == args.runs
            scans.append(seconds)
        recorded = recorded_runs(uri, ctx.experiment)
        planning, _ = timed(lambda: estimate(
            make_plan(expand(sweep), recorded, numerics, sweep_name=SWEEP, stages=sweep.stages),
            recorded, slots(sweep)))
        return sum(scans), planning

    after(), before()  # warm-up: imports, MLflow's engine, the FLOPs of each variant
    after_s, scan_s, plan_s = [], [], []
    for _ in range(args.rounds):
        after_s.append(after())
        scans, planning = before()
        scan_s.append(scans)
        plan_s.append(planning)
    med = statistics.median
    before_s = [s + p for s, p in zip(scan_s, plan_s, strict=True)]
    report = {
        "runs": args.runs, "rounds": args.rounds, "fill_s": fill_s, "sweep": SWEEP,
        "planned_runs": len(expand(sweep)),
        "before_dry_run_s": med(before_s), "before_two_client_scans_s": med(scan_s),
        "planning_and_estimate_s": med(plan_s), "after_dry_run_s": med(after_s),
        "ratio_before_over_after": med(before_s) / med(after_s),
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                    "python": platform.python_version(), "mlflow": mlflow.__version__},
        "note": "medians of interleaved rounds after one warm-up of each path; before = two "
                "MlflowClient scans of the experiment + planning and estimate; after = "
                "driver.dry_run (one read through the dashboards' loader, then the same "
                "planning and estimate)",
    }
    print(f"before: two MlflowClient scans   {med(scan_s):7.2f} s")
    print(f"        planning + estimate      {med(plan_s):7.2f} s")
    print(f"        dry run                  {med(before_s):7.2f} s")
    print(f"after:  dry run (one SQL load)   {med(after_s):7.2f} s")
    print(f"ratio before / after = {report['ratio_before_over_after']:.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
