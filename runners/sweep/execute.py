"""Run planned runs as Ray tasks, report their progress to an observer, collect typed results.

Locally ``ray.init()`` starts Ray in this process (every service on 127.0.0.1); with
``--address``/``RAY_ADDRESS`` (which ``ray job submit`` sets) it joins that cluster. Workers log
to the tracking URI this driver resolved. A run that raises, or whose worker dies, is recorded
``failed`` with its cause, never raised here.
"""

from __future__ import annotations

from typing import Any, Protocol

from gatelab.contract import DONE_STATUSES, RunStatus, Tag, sweep_tag
from gatelab.runners.run.numerics import Numerics
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.tracking import RunTracker
from gatelab.runners.run.train import RunResult
from gatelab.runners.sweep.context import SweepContext, connect_ray
from gatelab.runners.sweep.plan import PlannedRun
from gatelab.runners.sweep.spec import Sweep


class SweepObserver(Protocol):
    """Follows a sweep as it runs (the CLI's live view is one)."""

    def refresh(self, latest: dict[str, tuple[int, int, float]]) -> None:
        """``latest``: (step, total, loss) of every run that reported, by planned hash."""

    def finished(self, run: PlannedRun, result: RunResult) -> None: ...


def execute(todo: list[PlannedRun], sweep: Sweep, ctx: SweepContext, name: str,
            numerics: Numerics, observer: SweepObserver | None = None,
            board: Any = None) -> dict[str, RunResult]:
    """Submit each run as a Ray task and follow them; results by planned hash."""
    connect_ray(ctx.address)  # first: a local Ray is configured before ray is imported
    import ray

    from gatelab.runners.sweep.ray_tasks import ProgressBoard, task_options, train_task

    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    options = task_options(sweep.resources, has_gpus)
    threads = sweep.resources.threads or max(1, int(sweep.resources.cpus))
    board = board or ProgressBoard.remote()  # type: ignore[attr-defined]
    refs: dict[Any, PlannedRun] = {}
    for p in todo:
        resources = Resources(device=numerics.device_type.value,
                              precision=numerics.precision.value,  # type: ignore[arg-type]
                              backend=numerics.kernel.value,  # type: ignore[arg-type]
                              threads=threads, tracking_uri=ctx.uri, experiment=ctx.experiment,
                              work_dir=ctx.work_dir)
        ref = train_task.options(**options).remote(  # type: ignore[attr-defined]
            p.spec, p.recipe, resources, board, p.run_hash, sweep_tag(name))
        refs[ref] = p
    results: dict[str, RunResult] = {}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        for ref in ready:
            p = refs[ref]
            results[p.run_hash] = _collect(ref, p, ctx, name)
            if observer is not None:
                observer.finished(p, results[p.run_hash])
        if observer is not None:
            observer.refresh(ray.get(board.snapshot.remote()))
    return results


def _collect(ref: Any, p: PlannedRun, ctx: SweepContext, name: str) -> RunResult:
    import ray
    from ray.exceptions import RayError, RayTaskError

    try:
        result: RunResult = ray.get(ref)
    except RayTaskError as err:  # the run raised; train() records it, unless it never got there
        cause = f"{type(err.cause).__name__}: {err.cause}"
        mark_failed(ctx, p, cause, name)
        return RunResult(None, p.run_hash, RunStatus.FAILED, cause=cause)
    except RayError as err:  # the worker died (killed, out of memory, node lost)
        cause = f"{type(err).__name__}: {str(err).splitlines()[0]}"
        mark_failed(ctx, p, cause, name)
        return RunResult(None, p.run_hash, RunStatus.FAILED, cause=cause)
    return result


def mark_failed(ctx: SweepContext, p: PlannedRun, cause: str, name: str) -> None:
    """Record a run that failed where ``train`` could not record it (its worker died, or it
    failed before ``train`` began): its MLflow run (created if need be) ends ``failed`` with the
    cause. A run already recorded as done or failed is left as it is."""
    found = RunTracker.find(ctx.client, ctx.experiment, p.run_hash)
    status = found.data.tags.get(Tag.STATUS) if found is not None else None
    if status in DONE_STATUSES or status == RunStatus.FAILED:
        return
    tracker = RunTracker.open(ctx.client, ctx.uri, ctx.experiment,
                              f"{p.spec.id}-{p.run_hash[:8]}",
                              found.info.run_id if found else None)
    tracker.set_tags({Tag.RUN_HASH: p.run_hash, Tag.VARIANT: p.spec.id,
                      Tag.FAILURE: cause[:5000], **sweep_tag(name)})
    tracker.close(RunStatus.FAILED, "FAILED")
