"""Run planned runs as Ray tasks, report their progress to an observer, collect typed results.

Locally ``ray.init()`` starts Ray in this process (every service on 127.0.0.1); with
``--address``/``RAY_ADDRESS`` (which ``ray job submit`` sets) it joins that cluster. Workers log
to the tracking URI this driver resolved. A run that raises, or whose worker dies, is recorded
``failed`` with its cause, never raised here.

SIGTERM or SIGINT to the driver (a preempted job, Ctrl-C) is passed on to its runs: each is
cancelled, which Ray delivers to the run as SIGINT, so it checkpoints at its next step boundary
and ends its MLflow run ``KILLED`` (``runners/run/stop_signals.py``). The driver waits up to
``DRIVER_GRACE_S`` for them, then raises ``Interrupted``; the same sweep resumes them.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol

from gatelab.contract import DONE_STATUSES, RunStatus, Tag, sweep_tag
from gatelab.runners.run.numerics import Numerics
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.result import RunResult
from gatelab.runners.run.stop_signals import STOP_GRACE_S, StopSignals
from gatelab.runners.run.tracking import RunTracker, nested_under, recorded_run
from gatelab.runners.sweep.context import SweepContext, connect_ray
from gatelab.runners.sweep.data import prepare_sweep_data
from gatelab.runners.sweep.parent import SweepParent
from gatelab.runners.sweep.plan import PlannedRun
from gatelab.runners.sweep.spec import Sweep

DRIVER_GRACE_S = STOP_GRACE_S + 10.0
"""Seconds the driver waits, after a stop signal, for its runs to checkpoint and end: a run's
own grace period, and time to write its checkpoint and end its MLflow run."""


class SweepObserver(Protocol):
    """Follows a sweep as it runs (the CLI's live view is one)."""

    def refresh(self, latest: dict[str, tuple[int, int, float]]) -> None:
        """``latest``: (step, total, loss) of every run that reported, by planned hash."""

    def finished(self, run: PlannedRun, result: RunResult) -> None: ...


def execute(todo: list[PlannedRun], sweep: Sweep, ctx: SweepContext, name: str,
            numerics: Numerics, observer: SweepObserver | None = None,
            board: Any = None, parent_run_id: str | None = None) -> dict[str, RunResult]:
    """Submit each run as a Ray task and follow them; results by planned hash. Each run is
    tagged into sweep ``name`` and nested under ``parent_run_id`` (the sweep's parent run)."""
    connect_ray(ctx.address)  # first: a local Ray is configured before ray is imported
    import ray

    from gatelab.runners.sweep.board import start_board
    from gatelab.runners.sweep.ray_tasks import task_options, train_task

    # Before any run starts (the callers checked the cluster's places and opened the sweep's
    # parent run, which made the experiment): the data, built once for the cluster and sealed.
    prepare_sweep_data(todo, ctx.place)
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    options = task_options(sweep.resources, has_gpus, ctx.task_retries)
    threads = sweep.resources.threads or max(1, int(sweep.resources.cpus))
    board = board or start_board()
    refs: dict[Any, PlannedRun] = {}
    tags = {**sweep_tag(name), **nested_under(parent_run_id)}
    for p in todo:
        resources = Resources(device=numerics.device_type.value,
                              precision=numerics.precision.value,  # type: ignore[arg-type]
                              backend=numerics.kernel.value,  # type: ignore[arg-type]
                              threads=threads, tracking_uri=ctx.uri, experiment=ctx.experiment,
                              work_dir=ctx.work_dir, storage=ctx.place.root)
        ref = train_task.options(**options).remote(  # type: ignore[attr-defined]
            p.spec, p.recipe, resources, board, p.run_hash, {**tags, **p.tags})
        refs[ref] = p
    results: dict[str, RunResult] = {}
    pending = list(refs)
    deadline: float | None = None
    with StopSignals(grace_s=None) as stop:
        while pending and (deadline is None or time.monotonic() < deadline):
            if stop.requested is not None and deadline is None:
                for ref in pending:  # each run checkpoints at its next step boundary
                    ray.cancel(ref, force=False)
                deadline = time.monotonic() + DRIVER_GRACE_S
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in ready:
                p = refs[ref]
                results[p.run_hash] = _collect(ref, p, ctx, name)
                if observer is not None:
                    observer.finished(p, results[p.run_hash])
            if observer is not None:
                observer.refresh(_snapshot(board))
        stop.check()
    return results


def _snapshot(board: Any) -> dict[str, tuple[int, int, float]]:
    """The board's latest progress; nothing if it is gone (its node died): progress is a view,
    never a reason to stop following the runs."""
    import ray
    from ray.exceptions import RayError

    try:
        latest: dict[str, tuple[int, int, float]] = ray.get(board.snapshot.remote(), timeout=10)
    except (RayError, TimeoutError):
        return {}
    return latest


def _collect(ref: Any, p: PlannedRun, ctx: SweepContext, name: str) -> RunResult:
    import ray
    from ray.exceptions import RayError, RayTaskError, TaskCancelledError

    try:
        result: RunResult = ray.get(ref)
    except TaskCancelledError:  # stopped by the driver: the run recorded it was interrupted
        return RunResult(None, p.run_hash, RunStatus.INTERRUPTED)
    except RayTaskError as err:  # the run raised; train() records it, unless it never got there
        cause = f"{type(err.cause).__name__}: {err.cause}"
        if ctx.joins_cluster:  # the driver's output is what `ray job logs` shows
            print(f"gatelab sweep {name}: run {p.spec.id} lr={p.recipe.lr:g} "
                  f"seed={p.recipe.seed} ({p.run_hash[:12]}) failed on a worker:\n{err}",
                  file=sys.stderr, flush=True)
        if recorded_run(err.cause) is None:
            mark_failed(ctx, p, cause, name, str(err))
        return RunResult(None, p.run_hash, RunStatus.FAILED, cause=cause)
    except RayError as err:  # the worker died (killed, out of memory, node lost)
        cause = f"{type(err).__name__}: {str(err).splitlines()[0]}"
        if ctx.joins_cluster:
            print(f"gatelab sweep {name}: run {p.spec.id} ({p.run_hash[:12]}) lost its worker "
                  f"after {ctx.task_retries} retries: {cause}", file=sys.stderr, flush=True)
        mark_failed(ctx, p, cause, name, str(err))
        return RunResult(None, p.run_hash, RunStatus.FAILED, cause=cause)
    return result


def mark_failed(ctx: SweepContext, p: PlannedRun, cause: str, name: str,
                detail: str | None = None) -> None:
    """Record a run that failed where ``train`` could not record it (its worker died, or it
    failed before ``train`` began): its MLflow run ends ``failed`` with the cause, which
    ``RunTracker.fail`` puts first in its history (a run that had failed before too keeps both).
    A run that is not recorded yet is created under a placeholder name, which ``train``
    replaces when it reopens the run. A run recorded as done is left as it is."""
    found = RunTracker.find(ctx.client, ctx.experiment, p.run_hash)
    if found is not None and found.data.tags.get(Tag.STATUS) in DONE_STATUSES:
        return
    tracker = (RunTracker(ctx.client, found.info.run_id, ctx.uri) if found is not None else
               RunTracker.open(ctx.client, ctx.uri, ctx.experiment,
                               f"{p.spec.id}-{p.run_hash[:8]}", None))
    parent = SweepParent.find(ctx.client, ctx.experiment, name)
    tracker.fail(cause, detail,  # detail: the worker's traceback, as Ray reported it
                 {Tag.RUN_HASH: p.run_hash, Tag.VARIANT: p.spec.id, **sweep_tag(name),
                  **nested_under(parent.info.run_id if parent is not None else None)})
