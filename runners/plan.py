"""Expand a sweep into runs, give each its identity (hash) and its state in the tracking store,
and estimate the compute of what is left.

A run is ``done`` when its hash finished or diverged, ``failed`` when its last attempt failed
(rerun only with ``--retry-failed``), ``resume`` when it was interrupted or left running by a
killed driver (it continues from its checkpoint), and ``to run`` otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mlflow.tracking import MlflowClient

from registry.params import count_params
from registry.presets import get_preset
from registry.schema import VariantSpec
from runners.recipe import Recipe, load_recipe
from runners.sweep_spec import Sweep, selected_variants
from runners.tracking import HASH_TAG, STATUS_TAG
from runners.train import run_hash

TINY_CPU_TOKENS_PER_S = 6_000.0
"""Tokens/s of one tiny run on one CPU thread, used when the store has no measured runs."""


@dataclass(frozen=True)
class PlannedRun:
    spec: VariantSpec
    recipe: Recipe
    run_hash: str
    state: str
    """``done``, ``to run``, ``resume`` or ``failed``."""
    run_id: str | None = None
    status: str | None = None
    """The gatelab status tag recorded for the hash, if any."""

    @property
    def tokens(self) -> int:
        r = self.recipe
        return r.total_steps() * r.batch_size * r.seq_len

    def as_dict(self) -> dict[str, Any]:
        return {"variant": self.spec.id, "lr": self.recipe.lr, "seed": self.recipe.seed,
                "hash": self.run_hash, "state": self.state, "status": self.status,
                "run_id": self.run_id, "tokens": self.tokens}


def expand(sweep: Sweep, lr: float | None = None) -> list[tuple[VariantSpec, Recipe]]:
    """Every (variant, recipe) of a grid sweep, in a stable order; ``lr`` fixes one LR."""
    lrs: list[float | None] = [lr] if lr is not None else (list(sweep.lrs) or [None])
    out = []
    for spec in selected_variants(sweep):
        for one_lr in lrs:
            for seed in sweep.seeds:
                overrides = {**sweep.overrides, "seed": seed}
                if one_lr is not None:
                    overrides["lr"] = one_lr
                out.append((spec, load_recipe(sweep.recipe, overrides)))
    return out


def recorded_runs(client: MlflowClient, experiment: str) -> dict[str, Any]:
    """The newest MLflow run of every hash in ``experiment``, by hash (one query per 1000)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs: dict[str, Any] = {}
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        for run in page:
            if HASH_TAG in run.data.tags:
                runs[run.data.tags[HASH_TAG]] = run
        token = page.token
        if not token:
            return runs


def state_of(run: Any | None, retry_failed: bool) -> str:
    status = run.data.tags.get(STATUS_TAG) if run is not None else None
    if status in ("finished", "diverged"):
        return "done"
    if status == "failed":
        return "to run" if retry_failed else "failed"
    if status in ("running", "interrupted"):
        return "resume"
    return "to run"


def make_plan(pairs: list[tuple[VariantSpec, Recipe]], recorded: dict[str, Any],
              retry_failed: bool = False) -> list[PlannedRun]:
    """One ``PlannedRun`` per distinct hash, in order."""
    plan: list[PlannedRun] = []
    seen: set[str] = set()
    for spec, recipe in pairs:
        h = run_hash(spec, recipe)
        if h in seen:
            continue
        seen.add(h)
        run = recorded.get(h)
        plan.append(PlannedRun(spec, recipe, h, state_of(run, retry_failed),
                               run.info.run_id if run else None,
                               run.data.tags.get(STATUS_TAG) if run else None))
    return plan


def measured_tokens_per_s(recorded: dict[str, Any]) -> dict[str, float]:
    """Median training throughput of finished runs, by size preset."""
    by_size: dict[str, list[float]] = {}
    for run in recorded.values():
        tps = run.data.metrics.get("tokens_per_s")
        size = run.data.tags.get("gatelab.size")
        if tps and size:
            by_size.setdefault(size, []).append(tps)
    return {size: sorted(v)[len(v) // 2] for size, v in by_size.items()}


def estimate(plan: list[PlannedRun], recorded: dict[str, Any], parallel: int | None = None
             ) -> dict[str, Any]:
    """Tokens, FLOPs (6 x params x tokens, plus attention) and time of the runs left to do."""
    left = [p for p in plan if p.state in ("to run", "resume")]
    throughput = measured_tokens_per_s(recorded)
    tokens = sum(p.tokens for p in left)
    flops = 0.0
    seconds = 0.0
    for p in left:
        n = count_params(p.spec, p.recipe.size)
        bb = get_preset(p.recipe.size)
        attention = 6 * bb.n_layers * p.recipe.seq_len * bb.n_heads * bb.head_dim
        flops += (6 * n + attention) * p.tokens
        tps = throughput.get(p.recipe.size, TINY_CPU_TOKENS_PER_S)
        seconds += p.tokens / tps
    slots = parallel or max(1, os.cpu_count() or 1)
    return {"runs_left": len(left), "tokens": tokens, "flops": flops,
            "seconds_serial": seconds, "seconds_estimate": seconds / min(slots, max(len(left), 1)),
            "throughput_source": "measured" if throughput else "default",
            "parallel_slots": slots}
