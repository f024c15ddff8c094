"""What the sweep's driver records for a run that failed where ``train`` could not record it:
every failure, a second one of a failed run too, the latest first; a done run is left alone.
On a real MLflow store, without Ray (``mark_failed`` is what the driver calls)."""

from __future__ import annotations

from pathlib import Path

from gatelab.contract import Artifact, PlanState, RunStatus, Tag
from gatelab.registry.loader import load_variant
from gatelab.runners.run.numerics import resolve_numerics
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.setting import resolve_setting
from gatelab.runners.run.tracking import RunTracker
from gatelab.runners.sweep.context import SweepContext
from gatelab.runners.sweep.execute import mark_failed
from gatelab.runners.sweep.plan import PlannedRun


def planned() -> PlannedRun:
    setting = resolve_setting(load_variant("baseline"), load_recipe("tiny"),
                              resolve_numerics("cpu"))
    return PlannedRun(setting, PlanState.TO_RUN)


def test_every_failure_is_recorded_the_latest_first_and_a_done_run_is_left_alone(
        tmp_path: Path) -> None:
    ctx = SweepContext(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                       work_dir=tmp_path / "work")
    p = planned()
    mark_failed(ctx, p, "WorkerCrashedError: the worker died", "s", "first traceback")
    found = RunTracker.find(ctx.client, ctx.experiment, p.run_hash)
    assert found is not None
    assert found.info.run_name == f"baseline-{p.run_hash[:8]}"  # a placeholder until train
    assert found.data.tags[Tag.STATUS] == RunStatus.FAILED
    assert found.data.tags["gatelab.sweep.s"] == "1"

    mark_failed(ctx, p, "RayTaskError: no space left", "s", "second traceback")
    again = RunTracker.find(ctx.client, ctx.experiment, p.run_hash)
    assert again is not None and again.info.run_id == found.info.run_id
    assert again.data.tags[Tag.FAILURE] == "RayTaskError: no space left"
    tracker = RunTracker(ctx.client, found.info.run_id, ctx.uri)
    assert [f["cause"] for f in tracker.failures()] == ["RayTaskError: no space left",
                                                        "WorkerCrashedError: the worker died"]
    error = ctx.client.download_artifacts(found.info.run_id, Artifact.ERROR, str(tmp_path))
    assert Path(error).read_text() == "second traceback"

    tracker.set_tags({Tag.STATUS: RunStatus.FINISHED})
    mark_failed(ctx, p, "RayError: late news", "s")
    done = RunTracker.find(ctx.client, ctx.experiment, p.run_hash)
    assert done is not None and done.data.tags[Tag.STATUS] == RunStatus.FINISHED
    assert len(tracker.failures()) == 2
