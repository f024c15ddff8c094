"""Benchmark (not a test): N tiny runs through a Ray sweep against the same runs one after
another in this process without Ray, and Ray's fixed start-up cost, measured in one run, with
where the time goes (``breakdown``): per side, the runs' wall time, their training steps, their
final measurements and the rest; for Ray, the slots' idle time after start-up (a slot waiting
for a worker process, its imports, the scheduler). Steps slower under Ray than serially mean two
runs sharing the cores' cache and memory bandwidth (``train_steps_ray_over_serial``). The Ray
side follows ``gatelab sweep``: the plan (``plan_s``, before Ray starts), Ray's start-up
(``ray_startup_s``), then the runs; efficiency after start-up counts from Ray being up to the
sweep's end. Writes ``docs/benchmarks/ray_parallel.json``.

    .venv/bin/python benchmarks/ray_parallel.py [--runs 4] [--steps 100]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "ray_parallel.json"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=OUT, help=f"the JSON written (default {OUT})")
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

    # In `gatelab sweep`'s order: plan (the driver's store lookups, no Ray), start Ray, run.
    start = time.perf_counter()
    ctx = SweepContext(tracking_uri=f"sqlite:///{work}/ray.db", work_dir=work / "ray",
                       sweeps_file=sweeps)
    plan, numerics = plan_sweep("bench", ctx)
    plan_s = time.perf_counter() - start
    start = time.perf_counter()
    connect_ray(None)
    startup_s = time.perf_counter() - start
    ray_up_at = time.time()
    run_plan("bench", get_sweep("bench", sweeps), ctx, plan, numerics)
    ray_s = time.perf_counter() - start
    sweep_end_at = time.time()
    breakdown: dict[str, Any] = {
        "serial_1_thread": where_time_goes(f"sqlite:///{work / 'serial1'}.db"),
        "ray": where_time_goes(f"sqlite:///{work}/ray.db")}
    slots = min(cores, args.runs)
    ray_busy = breakdown["ray"]["run_wall_s"]
    breakdown["ray"]["slot_idle_s"] = slots * (ray_s - startup_s) - ray_busy
    breakdown["ray"]["plan_s"] = plan_s
    breakdown["ray"]["slots"] = slot_timeline(f"sqlite:///{work}/ray.db", slots, ray_up_at,
                                              sweep_end_at)
    breakdown["train_steps_ray_over_serial"] = (breakdown["ray"]["train_steps_s"]
                                                / breakdown["serial_1_thread"]["train_steps_s"])
    report = {"runs": args.runs, "steps": args.steps, "cores": cores,
              "breakdown": breakdown,
              "parallel_efficiency_after_startup": serial_s[1] / (ray_s - startup_s) / slots,
              "serial_1_thread_s": serial_s[1], f"serial_{cores}_threads_s": serial_s[cores],
              "ray_s": ray_s, "ray_startup_s": startup_s,
              "speedup_vs_serial_1_thread": serial_s[1] / ray_s,
              "speedup_vs_serial_all_threads": serial_s[cores] / ray_s,
              "parallel_efficiency": serial_s[1] / ray_s / min(cores, args.runs)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def recorded_runs(uri: str) -> list[tuple[float, float, float, float]]:
    """(start, end, training steps' seconds, final measurements' seconds) of each training run
    in the store, from gatelab's own loader; start and end in seconds since the epoch."""
    import polars as pl

    from gatelab.dashboards.runs import load

    frame = load(None, tracking_uri=uri).frame

    def seconds(col: str) -> pl.Expr:
        return pl.col(col).fill_null(0.0) if col in frame.columns else pl.lit(0.0)

    return frame.select(pl.col("start_time").dt.epoch("ms") / 1000,
                        pl.col("end_time").dt.epoch("ms") / 1000,
                        seconds("train_time_s"), seconds("measure_time_s")).rows()


def slot_timeline(uri: str, slots: int, ray_up_at: float, sweep_end_at: float
                  ) -> dict[str, list[float] | float]:
    """Where the slots' idle time lies: each slot's wait from Ray being up to its first run's
    MLflow start (the worker's start, imports, store and data before the run is recorded),
    the waits between a run's end and the next run's start on the slot it freed, and the
    sweep's end after its last run."""
    import heapq

    runs = sorted((start, end) for start, end, _, _ in recorded_runs(uri))
    first = [start - ray_up_at for start, _ in runs[:slots]]
    free = [end for _, end in runs[:slots]]
    heapq.heapify(free)
    between = []
    for start, end in runs[slots:]:
        between.append(start - heapq.heappop(free))
        heapq.heappush(free, end)
    return {"first_run_start_after_ray_up_s": first, "between_runs_s": between,
            "sweep_end_after_last_run_s": sweep_end_at - max(end for _, end in runs)}


def where_time_goes(uri: str) -> dict[str, float]:
    """Summed over the store's training runs: wall time from the MLflow run's start to its end,
    the training steps' own time (``train_time_s``), the final measurements'
    (``measure_time_s``), and the rest of each run (set-up, evaluations, MLflow calls)."""
    runs = recorded_runs(uri)
    wall = sum(end - start for start, end, _, _ in runs)
    train = sum(steps for _, _, steps, _ in runs)
    measure = sum(m for _, _, _, m in runs)
    return {"runs": len(runs), "run_wall_s": wall, "train_steps_s": train,
            "final_measurements_s": measure, "rest_of_runs_s": wall - train - measure}

if __name__ == "__main__":
    main()
