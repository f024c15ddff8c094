"""Benchmark (not a test): N tiny runs through a Ray sweep against the same runs one after
another in this process without Ray, and Ray's fixed start-up cost, measured in one run.
Writes ``docs/benchmarks/ray_parallel.json``.

    .venv/bin/python benchmarks/ray_parallel.py [--runs 4] [--steps 100]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "ray_parallel.json"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gatelab-raybench-"))
    seeds = list(range(args.runs))
    sweeps = work / "sweeps.yaml"
    sweeps.write_text(
        f"bench:\n  description: benchmark\n  variants: [baseline]\n  recipe: tiny\n"
        f"  overrides: {{steps: {args.steps}, eval_every: 50, checkpoint_every: 50}}\n"
        f"  seeds: {seeds}\n  resources: {{cpus: 1}}\n")

    from gatelab.registry.loader import load_variant
    from gatelab.runners.data.tokens import DataConfig, prepare_data
    from gatelab.runners.run.recipe import load_recipe
    from gatelab.runners.run.resources import Resources
    from gatelab.runners.run.train import train
    from gatelab.runners.sweep.context import SweepContext, connect_ray
    from gatelab.runners.sweep.driver import plan_sweep, run_plan
    from gatelab.runners.sweep.spec import get_sweep

    cores = os.cpu_count() or 1
    serial_s: dict[int, float] = {}
    for threads in sorted({1, cores}):
        place = work / f"serial{threads}"
        prepare_data(DataConfig(cache_dir=str(place / "cache")))
        start = time.perf_counter()
        for seed in seeds:
            recipe = load_recipe("tiny", {"steps": args.steps, "eval_every": 50,
                                          "checkpoint_every": 50, "seed": seed})
            train(load_variant("baseline"), recipe,
                  Resources(threads=threads, tracking_uri=f"sqlite:///{place}.db",
                            work_dir=place))
        serial_s[threads] = time.perf_counter() - start
    prepare_data(DataConfig(cache_dir=str(work / "ray" / "cache")))

    start = time.perf_counter()
    connect_ray(None)
    startup_s = time.perf_counter() - start
    ctx = SweepContext(tracking_uri=f"sqlite:///{work}/ray.db", work_dir=work / "ray",
                       sweeps_file=sweeps)
    plan, numerics = plan_sweep("bench", ctx)
    run_plan("bench", get_sweep("bench", sweeps), ctx, plan, numerics)
    ray_s = time.perf_counter() - start
    report = {"runs": args.runs, "steps": args.steps, "cores": cores,
              "serial_1_thread_s": serial_s[1], f"serial_{cores}_threads_s": serial_s[cores],
              "ray_s": ray_s, "ray_startup_s": startup_s,
              "speedup_vs_serial_1_thread": serial_s[1] / ray_s,
              "speedup_vs_serial_all_threads": serial_s[cores] / ray_s,
              "parallel_efficiency": serial_s[1] / ray_s / min(cores, args.runs)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
