"""``gatelab sweep NAME``: plan a sweep against the tracking store, run what is left, and
return typed results (the CLI prints them).

The driver can be killed at any moment: the same command skips what is done and resumes what
was interrupted, into the same MLflow runs (one run per hash, always). A run that the sweep
recorded under an identity that no longer matches is ``stale``: it is trained anew under its
new hash and the old run leaves the sweep (its sweep tag becomes ``stale``), kept in MLflow.

Every invocation nests the sweep's runs, trained now or recorded earlier, under the sweep's one
parent run (``parent.py``, which says why one per sweep), and ends it with the invocation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gatelab.contract import (
    LEFT_SWEEP,
    TO_TRAIN,
    PlanState,
    RunStatus,
    sweep_tag,
)
from gatelab.metrics import Metric
from gatelab.runners.run.capacity import free_memory
from gatelab.runners.run.numerics import Numerics
from gatelab.runners.run.result import RunResult
from gatelab.runners.run.tracking import RunTracker, nested_under
from gatelab.runners.sweep.context import (
    SweepContext,
    check_cluster_places,
    check_schedulable,
    connect_ray,
)
from gatelab.runners.sweep.execute import SweepObserver, execute
from gatelab.runners.sweep.lr_search import search_plan
from gatelab.runners.sweep.parent import SweepParent
from gatelab.runners.sweep.plan import (
    PlannedRun,
    PlanReport,
    RecordedRun,
    check_runs_fit,
    estimate,
    expand,
    make_plan,
    memory_notes,
    plan_notes,
    recorded_runs,
    waves,
)
from gatelab.runners.sweep.spec import Sweep, get_sweep

SUMMARY_KEYS = (Metric.VAL_LOSS, Metric.VAL_BPB, Metric.F_ATTN, Metric.M_ACT,
                Metric.GATE_SCORE_MEAN, Metric.LOSS_SPIKES, Metric.MAX_GRAD_NORM)
"""The metrics of a sweep's summary rows."""


@dataclass(frozen=True)
class SummaryRow:
    """One run of a finished sweep, as recorded."""

    variant: str
    lr: float
    seed: int
    run_hash: str
    status: RunStatus
    ran_now: bool
    cause: str | None
    metrics: dict[str, float | None]
    stage: str | None = None
    """The sweep's stage the run is (``PlannedRun.stage``); ``None``: a run of the sweep."""


def slots(sweep: Sweep) -> int:
    """Runs this machine's Ray places at once (``RunResources.slots``)."""
    return sweep.resources.slots(os.cpu_count() or 1)


def plan_sweep(name: str, ctx: SweepContext, sweep: Sweep | None = None,
               recorded: dict[str, RecordedRun] | None = None
               ) -> tuple[list[PlannedRun], Numerics]:
    """The sweep's plan against ``recorded`` (``None``: the store, read now)."""
    sweep = sweep or get_sweep(name, ctx.sweeps_file)
    numerics = ctx.numerics(sweep.resources)
    if recorded is None:
        recorded = recorded_runs(ctx.uri, ctx.experiment)
    plan = make_plan(expand(sweep), recorded, numerics, ctx.retry_failed, sweep_name=name,
                     stages=sweep.stages)
    return plan, numerics


def dry_run(name: str, ctx: SweepContext, sweep: Sweep | None = None) -> PlanReport:
    """The plan (every run with its hash and state), its counts, and the compute estimate;
    ``sweep``: the sweep as given (with ``--set`` overrides), else read from the file."""
    sweep = sweep or get_sweep(name, ctx.sweeps_file)
    if sweep.search is not None:
        return search_plan(name, sweep, ctx)
    recorded = recorded_runs(ctx.uri, ctx.experiment)
    plan, numerics = plan_sweep(name, ctx, sweep, recorded)
    notes = plan_notes(plan)
    cores = os.cpu_count() or 1
    if not ctx.joins_cluster and sweep.resources.cpus > cores:
        notes.append(f"each run asks for {sweep.resources.cpus:g} CPUs but this machine has "
                     f"{cores}: the sweep will refuse to start (lower resources.cpus)")
    if not ctx.joins_cluster:
        notes += memory_notes(plan, slots(sweep), *free_memory(numerics.device_type.value))
    return PlanReport(name, plan, numerics, estimate(plan, recorded, slots(sweep)), notes)


def leave_stale(ctx: SweepContext, plan: list[PlannedRun], name: str,
                parent: SweepParent | None = None) -> None:
    """Take the stale runs out of the sweep (their sweep tag becomes ``stale``) and from under
    its ``parent``."""
    for p in plan:
        if p.state is PlanState.STALE and p.stale_run_id is not None:
            RunTracker(ctx.client, p.stale_run_id, ctx.uri).set_tags(sweep_tag(name, LEFT_SWEEP))
            if parent is not None:
                parent.release(p.stale_run_id)


def run_plan(name: str, sweep: Sweep, ctx: SweepContext, plan: list[PlannedRun],
             numerics: Numerics, observer: SweepObserver | None = None) -> list[SummaryRow]:
    """Train what the plan has left, under the sweep's parent run, and return a summary row
    per planned run."""
    todo = [p for p in plan if p.state in TO_TRAIN]
    if todo:  # a sweep that cannot start leaves no trace in the store
        if not ctx.joins_cluster:  # on a cluster each run checks its own node (train)
            check_runs_fit(todo, *free_memory(numerics.device_type.value))
        connect_ray(ctx.address)
        check_schedulable(sweep.resources, name)
        check_cluster_places(ctx, name)
    parent = SweepParent.open(ctx, name, sweep, plan)
    with parent.ending_on_error():
        for p in plan:
            if p.run_id is not None:
                RunTracker(ctx.client, p.run_id, ctx.uri).set_tags(
                    {**sweep_tag(name), **nested_under(parent.run_id)})
        leave_stale(ctx, plan, name, parent)
        results: dict[str, RunResult] = {}
        for wave in waves(todo):  # a stage after the run it continues from (plan.py)
            results.update(execute(wave, sweep, ctx, name, numerics, observer,
                                   parent_run_id=parent.run_id))
        rows = summary_rows(plan, results, ctx)
    parent.close([r.status for r in rows])
    return rows


def summary_rows(plan: list[PlannedRun], results: dict[str, RunResult], ctx: SweepContext
                 ) -> list[SummaryRow]:
    recorded = recorded_runs(ctx.uri, ctx.experiment, SUMMARY_KEYS)
    rows = []
    for p in plan:
        run = recorded.get(p.run_hash)
        metrics = run.metrics if run is not None else {}
        result = results.get(p.run_hash)
        status = (run.status if run is not None else None
                  ) or (result.status if result else RunStatus.MISSING)
        cause = result.cause if result and result.cause else (
            run.failure if run is not None else None)
        rows.append(SummaryRow(p.spec.id, p.recipe.lr, p.recipe.seed, p.run_hash, status,
                               p.run_hash in results, cause,
                               {k: metrics.get(k) for k in SUMMARY_KEYS}, p.stage))
    return rows
