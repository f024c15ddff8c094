"""``gatelab sweep NAME``: plan a sweep, run what is left as Ray tasks, show it live, summarise.

Locally ``ray.init()`` starts Ray in this process; with ``--address``/``RAY_ADDRESS`` (which
``ray job submit`` sets) it joins that cluster. Workers log to the tracking URI this driver
resolved. The driver can be killed at any moment: the same command skips what is done and
resumes what was interrupted, into the same MLflow runs (one run per hash, always).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from runners.plan import PlannedRun, estimate, expand, make_plan, recorded_runs
from runners.run_config import Resources
from runners.sweep_spec import SWEEPS_FILE, Sweep, get_sweep
from runners.tracking import HASH_TAG, STATUS_TAG, RunTracker

SUMMARY_KEYS = ("val_loss", "val_bpb", "f_attn", "m_act", "gate_score.mean", "loss_spikes",
                "max_grad_norm")


@dataclass
class SweepContext:
    """Where a sweep records and how it reaches Ray: resources, never identity."""

    tracking_uri: str
    experiment: str = "gatelab"
    work_dir: Path = Path(".gatelab").resolve()
    address: str | None = None
    retry_failed: bool = False
    progress: bool = True
    sweeps_file: Path = SWEEPS_FILE
    client: MlflowClient = field(init=False)

    def __post_init__(self) -> None:
        self.client, self.tracking_uri = RunTracker.client_for(self.tracking_uri)

    def sweep_tag(self, name: str) -> dict[str, str]:
        return {f"gatelab.sweep.{name}": "1"}


def plan_sweep(name: str, ctx: SweepContext, sweep: Sweep | None = None) -> list[PlannedRun]:
    sweep = sweep or get_sweep(name, ctx.sweeps_file)
    return make_plan(expand(sweep), recorded_runs(ctx.client, ctx.experiment), ctx.retry_failed)


def dry_run(name: str, ctx: SweepContext, as_json: bool) -> dict[str, Any]:
    """The plan (every run with its hash and state), its counts, and the compute estimate."""
    sweep = get_sweep(name, ctx.sweeps_file)
    recorded = recorded_runs(ctx.client, ctx.experiment)
    if sweep.search is not None:
        from runners.lr_search import search_plan

        report = search_plan(name, sweep, ctx, recorded)
    else:
        plan = make_plan(expand(sweep), recorded, ctx.retry_failed)
        counts: dict[str, int] = {}
        for p in plan:
            counts[p.state] = counts.get(p.state, 0) + 1
        report = {"sweep": name, "runs": [p.as_dict() for p in plan], "counts": counts,
                  "estimate": estimate(plan, recorded, _slots(sweep))}
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(format_plan(report))
    return report


def _slots(sweep: Sweep) -> int:
    return max(1, int((os.cpu_count() or 1) // max(sweep.resources.cpus, 1e-9)))


def format_plan(report: dict[str, Any]) -> str:
    from gatelab.format import table

    lines = [f"sweep {report['sweep']}: plan"]
    if report.get("runs"):
        lines.append(table(("variant", "lr", "seed", "hash", "state"),
                           [(r["variant"], f"{r['lr']:g}", r["seed"], r["hash"], r["state"])
                            for r in report["runs"]]))
    for extra in report.get("notes", []):
        lines.append(extra)
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report.get("counts", {}).items()))
    lines.append(f"{len(report.get('runs', []))} runs: {counts or 'none'}")
    est = report.get("estimate")
    if est:
        lines.append(
            f"left to run: {est['runs_left']} runs, {est['tokens']:,} tokens, "
            f"{est['flops']:.2e} FLOPs, about {est['seconds_estimate'] / 60:.1f} min on "
            f"{est['parallel_slots']} parallel slots ({est['throughput_source']} throughput)")
    return "\n".join(lines)


def connect_ray(address: str | None) -> None:
    """Join ``address`` (or ``$RAY_ADDRESS``); else start Ray here, listening on loopback."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address is None:
        # Single-node mode binds every Ray service to 127.0.0.1; a local session needs no
        # token (set RAY_AUTH_MODE yourself to use one).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             configure_logging=False)


def run_sweep(name: str, ctx: SweepContext) -> list[dict[str, Any]]:
    """Run every run of the sweep that is not done; return the summary rows."""
    sweep = get_sweep(name, ctx.sweeps_file)
    if sweep.search is not None:
        from runners.lr_search import run_search

        return run_search(name, sweep, ctx)
    plan = plan_sweep(name, ctx, sweep)
    todo = [p for p in plan if p.state in ("to run", "resume")]
    _say(f"sweep {name}: {len(plan)} runs, {len(plan) - len(todo)} already recorded, "
         f"{len(todo)} to run")
    for p in plan:
        if p.run_id is not None:
            RunTracker(ctx.client, p.run_id, ctx.tracking_uri).set_tags(ctx.sweep_tag(name))
    outcomes: dict[str, dict[str, Any]] = {}
    if todo:
        outcomes = execute(todo, sweep, ctx, name)
    else:
        _say("nothing to run: every run of this sweep is already recorded")
    rows = summary_rows(plan, outcomes, ctx)
    print(format_summary(name, rows))
    return rows


def execute(todo: list[PlannedRun], sweep: Sweep, ctx: SweepContext, name: str,
            board: Any = None) -> dict[str, dict[str, Any]]:
    """Submit each run as a Ray task and follow them live; failures are recorded, not raised."""
    import ray

    from runners.live_view import LiveView
    from runners.ray_tasks import ProgressBoard, task_options, train_task

    connect_ray(ctx.address)
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    options = task_options(sweep.resources, has_gpus)
    threads = sweep.resources.threads or max(1, int(sweep.resources.cpus))
    board = board or ProgressBoard.remote()  # type: ignore[attr-defined]
    refs: dict[Any, PlannedRun] = {}
    for p in todo:
        resources = Resources(device="auto" if has_gpus else "cpu", threads=threads,
                              tracking_uri=ctx.tracking_uri, experiment=ctx.experiment,
                              work_dir=ctx.work_dir, progress=False)
        ref = train_task.options(**options).remote(  # type: ignore[attr-defined]
            p.spec, p.recipe, resources, board, p.run_hash, ctx.sweep_tag(name))
        refs[ref] = p
    view = LiveView(list(refs.values()), board, enabled=ctx.progress)
    outcomes: dict[str, dict[str, Any]] = {}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        for ref in ready:
            p = refs[ref]
            outcomes[p.run_hash] = _collect(ref, p, ctx, name)
            view.finished(p, outcomes[p.run_hash])
        view.refresh()
    view.close()
    return outcomes


def _collect(ref: Any, p: PlannedRun, ctx: SweepContext, name: str) -> dict[str, Any]:
    import ray
    from ray.exceptions import RayError, RayTaskError

    try:
        result = ray.get(ref)
    except RayTaskError as err:  # the run raised: train() has already marked it failed
        return {"status": "failed", "cause": f"{type(err.cause).__name__}: {err.cause}"}
    except RayError as err:  # the worker died (killed, out of memory, node lost)
        cause = f"{type(err).__name__}: {str(err).splitlines()[0]}"
        mark_failed(ctx, p, cause, name)
        return {"status": "failed", "cause": cause}
    return {"status": result.status, "run_id": result.run_id, **result.summary}


def mark_failed(ctx: SweepContext, p: PlannedRun, cause: str, name: str) -> None:
    """Record a run whose worker died: its MLflow run (created if it never started) ends
    ``failed`` with the cause."""
    found = RunTracker.find(ctx.client, ctx.experiment, p.run_hash)
    if found is not None and found.data.tags.get(STATUS_TAG) in ("finished", "diverged"):
        return
    tracker = RunTracker.open(ctx.client, ctx.tracking_uri, ctx.experiment,
                              f"{p.spec.id}-{p.run_hash[:8]}",
                              found.info.run_id if found else None)
    tracker.set_tags({HASH_TAG: p.run_hash, "gatelab.variant": p.spec.id,
                      "gatelab.failure": cause[:5000], **ctx.sweep_tag(name)})
    tracker.close("failed", "FAILED")


def summary_rows(plan: list[PlannedRun], outcomes: dict[str, dict[str, Any]],
                 ctx: SweepContext) -> list[dict[str, Any]]:
    recorded = recorded_runs(ctx.client, ctx.experiment)
    rows = []
    for p in plan:
        run = recorded.get(p.run_hash)
        metrics = dict(run.data.metrics) if run is not None else {}
        status = run.data.tags.get(STATUS_TAG, "missing") if run is not None else "missing"
        outcome = outcomes.get(p.run_hash, {})
        row = {"variant": p.spec.id, "lr": p.recipe.lr, "seed": p.recipe.seed,
               "hash": p.run_hash, "status": status,
               "ran_now": p.run_hash in outcomes, "cause": outcome.get("cause")}
        row.update({k: metrics.get(k) for k in SUMMARY_KEYS})
        rows.append(row)
    return rows


def format_summary(name: str, rows: list[dict[str, Any]]) -> str:
    from gatelab.format import table

    def fmt(v: object) -> str:
        return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    body = table(("variant", "lr", "seed", "status", *SUMMARY_KEYS),
                 [(r["variant"], f"{r['lr']:g}", r["seed"], r["status"],
                   *(fmt(r[k]) for k in SUMMARY_KEYS)) for r in rows])
    failures = [f"  {r['variant']} lr={r['lr']:g} seed={r['seed']}: {r['cause']}"
                for r in rows if r["status"] == "failed" and r["cause"]]
    ran = sum(r["ran_now"] for r in rows)
    text = f"\nsweep {name}: {ran} ran now, {len(rows) - ran} already recorded\n{body}"
    if failures:
        text += "\nfailures:\n" + "\n".join(failures)
    return text


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
