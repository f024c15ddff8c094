"""A sweep's parent run: one MLflow run per sweep and experiment, with the sweep's training runs
nested under it (MLflow's ``mlflow.parentRunId`` tag), so that the UI shows a sweep as one row
that expands to its runs.

One parent per sweep, not per invocation of ``gatelab sweep``: a training run is recorded once
per hash and every later invocation reuses it (skipped when done, resumed when interrupted),
and MLflow gives a run a single parent. With a parent per invocation, each new parent would
take the done runs away from the previous one and leave it empty or partial; with one per
sweep, the row stays whole across invocations, resumed runs and ``--until-decided`` rounds.

The parent is found again by its ``gatelab.sweep_parent`` tag. It carries the sweep's
description (the UI's Description column), the source commit of its latest invocation, and that
invocation's plan as ``plan.json`` (the sweep as run, ``--set`` overrides included, and every
planned run with its hash and state). It is RUNNING while an invocation runs, then FINISHED when
every planned run finished or diverged, FAILED otherwise, KILLED when interrupted.

A parent has no ``gatelab.run_hash`` and no sweep tag: whatever reads training runs (the
dashboards, ``recorded_runs``, ``compare``) never sees it. A run shared by two sweeps is nested
under the parent of the sweep that tagged it last.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from gatelab.contract import DONE_STATUSES, Artifact, RunStatus, Tag
from gatelab.registry.schema import to_plain
from gatelab.runners.run.provenance import git_state
from gatelab.runners.run.tracking import RunTracker
from gatelab.runners.sweep.context import SweepContext
from gatelab.runners.sweep.plan import PlannedRun
from gatelab.runners.sweep.spec import Sweep


def parent_name(sweep_name: str) -> str:
    """The parent's run name, as the UI lists it."""
    return f"sweep {sweep_name}"


class SweepParent:
    """The parent run of one sweep; open with ``SweepParent.open``, end with ``close``."""

    def __init__(self, tracker: RunTracker):
        self.tracker = tracker

    @property
    def run_id(self) -> str:
        return self.tracker.run_id

    @staticmethod
    def find(client: Any, experiment: str, sweep_name: str) -> Any | None:
        """The parent run of ``sweep_name`` in ``experiment`` (the first made), or ``None``."""
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        runs = client.search_runs([exp.experiment_id],
                                  f"tags.`{Tag.SWEEP_PARENT}` = '{sweep_name}'",
                                  order_by=["attributes.start_time ASC"], max_results=1)
        return runs[0] if runs else None

    @classmethod
    def open(cls, ctx: SweepContext, name: str, sweep: Sweep,
             plan: list[PlannedRun]) -> SweepParent:
        """Reopen the sweep's parent (RUNNING again), or start it; record ``plan``."""
        found = cls.find(ctx.client, ctx.experiment, name)
        tracker = RunTracker.open(ctx.client, ctx.uri, ctx.experiment, parent_name(name),
                                  found.info.run_id if found is not None else None)
        commit, _ = git_state()
        tags = {Tag.SWEEP_PARENT: name, "mlflow.note.content": sweep.description,
                "mlflow.source.name": "gatelab sweep", "mlflow.source.type": "LOCAL"}
        if commit != "unknown":
            tags["mlflow.source.git.commit"] = commit
        tracker.set_tags(tags)
        tracker.log_json(Artifact.PLAN, {"sweep": name, "definition": to_plain(sweep),
                                         "runs": [p.as_dict() for p in plan]})
        return cls(tracker)

    def release(self, run_id: str) -> None:
        """Take ``run_id`` out from under this parent (a stale run leaving the sweep); a run
        nested under another sweep's parent stays there."""
        client = self.tracker.client
        if client.get_run(run_id).data.tags.get(MLFLOW_PARENT_RUN_ID) == self.run_id:
            client.delete_tag(run_id, MLFLOW_PARENT_RUN_ID)

    def close(self, statuses: list[RunStatus]) -> None:
        """End the parent FINISHED when every planned run is done, else FAILED."""
        done = all(status in DONE_STATUSES for status in statuses)
        self.end("FINISHED" if done else "FAILED")

    @contextlib.contextmanager
    def ending_on_error(self) -> Iterator[None]:
        """Around an invocation's work: an interruption ends the parent KILLED, any other
        error FAILED, and goes on up."""
        try:
            yield
        except KeyboardInterrupt:
            self.end("KILLED")
            raise
        except BaseException:
            self.end("FAILED")
            raise

    def end(self, mlflow_status: str) -> None:
        self.tracker.client.set_terminated(self.run_id, status=mlflow_status)
