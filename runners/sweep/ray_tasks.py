"""What runs inside Ray: one gatelab run as a task, and the options it is submitted with (the
progress board the runs report to is in ``board.py``).

Each task asks for CPUs (and a GPU fraction only where the cluster has GPUs: a GPU request on a
GPU-less node would wait forever). Ray reruns a task whose worker or node died (a system
failure, ``task_retries`` times): the rerun resumes the run from its last checkpoint in the
shared storage, into the same MLflow run; a worker sent SIGTERM (its node going away) first
checkpoints its run at the next step boundary (``runners/run/stop_signals.py``), so the rerun
loses no step. A run that raised (a bad spec, a missing corpus) is never retried
(``retry_exceptions=False``), nor is a diverged one (it returns a result): it is recorded by the
driver and rerun only on request (``--retry-failed``).
"""

from __future__ import annotations

import os
from typing import Any

import ray

from gatelab.registry.schema import VariantSpec
from gatelab.runners.run.recipe import Recipe
from gatelab.runners.run.resources import Resources
from gatelab.runners.run.result import RunResult
from gatelab.runners.run.train import train
from gatelab.runners.sweep.board import Reporter
from gatelab.runners.sweep.spec import RunResources


@ray.remote(max_retries=0)
def train_task(spec: VariantSpec, recipe: Recipe, resources: Resources, board: Any,
               run_hash: str, tags: dict[str, str]) -> RunResult:
    """One run; a result whose hash differs from the planned one means the worker resolved
    other numerics or data than the driver (the driver reports it)."""
    # gatelab's driver prints a line per run; MLflow's "View run ... at URL" would repeat it.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    return train(spec, recipe, resources, on_progress=Reporter(board, run_hash), tags=tags)


def task_options(res: RunResources, cluster_has_gpus: bool, retries: int = 0) -> dict[str, Any]:
    """Ray options for one run: resources (no GPU request where the cluster has none) and
    ``retries`` reruns after a system failure, never after an exception."""
    options: dict[str, Any] = {"num_cpus": res.cpus, "max_retries": retries,
                               "retry_exceptions": False}
    if cluster_has_gpus and res.gpus > 0:
        options["num_gpus"] = res.gpus
    return options
