"""The plan against a real recorded store: the planner reads it once, through the dashboards'
loader (``plan.recorded_runs``), keeps the newest run of each hash, never a deleted run, a
summary run or another experiment's, and gives each planned run its state and cause."""

from __future__ import annotations

import logging
from pathlib import Path

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from gatelab.contract import PlanState, RunStatus, Tag, sweep_tag
from gatelab.runners.run.numerics import resolve_numerics
from gatelab.runners.sweep.plan import (
    PlannedRun,
    estimate,
    expand,
    make_plan,
    recorded_runs,
)
from gatelab.runners.sweep.spec import get_sweep

SWEEPS = """
t:
  description: three seeds of two variants
  variants: [baseline, g1-elementwise]
  recipe: tiny
  seeds: [0, 1, 2]
"""


def record(client: MlflowClient, experiment: str, planned: PlannedRun, status: RunStatus,
           run_hash: str | None = None, extra: dict[str, str] | None = None,
           tokens_per_s: float | None = None) -> str:
    """A finished MLflow run tagged as the runner tags ``planned`` (under ``run_hash``, if
    given), started a second after the one recorded before it; its run id."""
    started = 1_700_000_000_000 + 1000 * len(client.search_runs([experiment]))
    run_id: str = client.create_run(experiment, start_time=started).info.run_id
    tags = {Tag.RUN_HASH: run_hash or planned.run_hash, Tag.STATUS: status.value,
            Tag.VARIANT: planned.spec.id, Tag.SEED: str(planned.recipe.seed),
            Tag.LR: str(planned.recipe.lr), Tag.SIZE: planned.recipe.size, Tag.DEVICE: "cpu",
            **sweep_tag("t"), **(extra or {})}
    metrics = [] if tokens_per_s is None else [Metric("tokens_per_s", tokens_per_s, 0, 0)]
    client.log_batch(run_id, metrics=metrics,
                     tags=[RunTag(str(k), v) for k, v in tags.items()])
    client.set_terminated(run_id, "FINISHED")
    return run_id


def test_the_plan_reads_the_newest_run_of_each_hash_and_gives_its_state(tmp_path: Path) -> None:
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    path = tmp_path / "sweeps.yaml"
    path.write_text(SWEEPS)
    sweep = get_sweep("t", path)
    numerics = resolve_numerics("cpu")
    fresh = make_plan(expand(sweep), {}, numerics, sweep_name="t")
    by = {(p.spec.id, p.recipe.seed): p for p in fresh}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("gatelab")
    other = client.create_experiment("elsewhere")

    done = record(client, exp, by["baseline", 0], RunStatus.FINISHED, tokens_per_s=5000.0)
    record(client, exp, by["baseline", 1], RunStatus.FAILED)
    resumed = record(client, exp, by["baseline", 1], RunStatus.INTERRUPTED)  # the newer one
    failed = record(client, exp, by["baseline", 2], RunStatus.FAILED,
                    extra={Tag.FAILURE: "ValueError: boom"})
    stale = record(client, exp, by["g1-elementwise", 0], RunStatus.FINISHED,
                   run_hash="an-older-identity")
    client.delete_run(record(client, exp, by["g1-elementwise", 1], RunStatus.FINISHED))
    record(client, exp, by["g1-elementwise", 2], RunStatus.FINISHED, extra={Tag.SUMMARY: "1"})
    record(client, other, by["g1-elementwise", 2], RunStatus.FINISHED)

    recorded = recorded_runs(uri, "gatelab")
    assert set(recorded) == {by["baseline", s].run_hash for s in (0, 1, 2)} | {
        "an-older-identity"}
    first = recorded[by["baseline", 0].run_hash]
    assert (first.run_id, first.status, first.seed, first.sweeps) == (
        done, RunStatus.FINISHED, 0, ("t",))
    assert first.metrics == {"tokens_per_s": 5000.0}

    plan = {(p.spec.id, p.recipe.seed): p
            for p in make_plan(expand(sweep), recorded, numerics, sweep_name="t")}
    assert (plan["baseline", 0].state, plan["baseline", 0].run_id) == (PlanState.DONE, done)
    assert (plan["baseline", 1].state, plan["baseline", 1].run_id) == (PlanState.RESUME,
                                                                       resumed)
    assert (plan["baseline", 2].state, plan["baseline", 2].failure) == (PlanState.FAILED,
                                                                        "ValueError: boom")
    assert plan["baseline", 2].run_id == failed
    assert (plan["g1-elementwise", 0].state, plan["g1-elementwise", 0].stale_run_id) == (
        PlanState.STALE, stale)
    assert plan["g1-elementwise", 1].state is PlanState.TO_RUN  # its only run was deleted
    assert plan["g1-elementwise", 2].state is PlanState.TO_RUN  # a summary, another experiment
    cost = estimate(list(plan.values()), recorded, parallel=1)
    assert cost.throughput_source == "measured" and cost.runs_left == 4
