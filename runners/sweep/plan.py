"""Expand a sweep into runs, give each its identity and its state in the tracking store, and
estimate the compute of what is left.

A run is ``done`` when its hash finished or diverged, ``failed`` when its last attempt failed
(rerun only with ``--retry-failed``), ``resume`` when it was interrupted or left running by a
killed driver (it continues from its checkpoint), ``stale`` when the sweep recorded the same
variant, seed and LR under another identity (it is trained anew), and ``to run`` otherwise.

The store is read once per plan, through the dashboards' loader (``recorded_runs``: one SQL
query per table for a SQLite store), into one typed ``RecordedRun`` per hash.

A sweep with stages plans after each run its chain of stages, each continuing from the run
before it: a stage's hash holds its parent's planned hash, so the whole chain is known before
anything runs; ``waves`` orders the runs left so that a stage starts after its parent ends.

The cost of what is left follows the runs' own model: training FLOPs a token (counted from the
built model) times tokens, at the throughput measured for the size, else an assumed rate
(``ASSUMED_MFU`` of an H200 on CUDA, ``CPU_FLOPS`` on a CPU), and each run's memory as
``runners/run/capacity.py`` estimates it, against the machine's (``memory_notes``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gatelab.contract import (
    DONE_STATUSES,
    TO_TRAIN,
    PlanState,
    RunStatus,
    Tag,
    parse_status,
)
from gatelab.dashboards.decide import load_frame
from gatelab.identity import Lineage
from gatelab.metrics import Metric
from gatelab.registry.schema import VariantSpec
from gatelab.runners.run.capacity import (
    CapacityError,
    MemoryEstimate,
    check_memory,
    estimate_memory,
    gib,
    run_label,
)
from gatelab.runners.run.flops import architecture_flops_per_token
from gatelab.runners.run.numerics import Numerics
from gatelab.runners.run.recipe import Recipe, load_recipe
from gatelab.runners.run.setting import RunSetting, resolve_setting
from gatelab.runners.sweep.spec import Stage, Sweep, selected_variants, stage_recipe

CPU_FLOPS = 5.0e10
"""Training FLOP/s of one CPU run, assumed until runs of its size are measured: what a tiny run
reaches on one thread (about 6,000 tokens/s at 8.7 MFLOPs a token). A size's time follows its
FLOPs a token: a 15B-parameter MoE on a CPU is years, not minutes."""
ASSUMED_MFU = 0.35
"""The model FLOPs utilisation a CUDA plan assumes until runs of its size are measured."""
ASSUMED_PEAK = 989e12
"""An H200's dense bf16 FLOP/s (``runners/run/flops.py``'s table)."""


@dataclass(frozen=True)
class PlannedRun:
    setting: RunSetting
    state: PlanState
    run_id: str | None = None
    """The MLflow run recorded for this hash, if any."""
    status: RunStatus | None = None
    """The gatelab status recorded for the hash, if any."""
    stale_run_id: str | None = None
    """For ``stale``: the run the sweep recorded for this variant, seed and LR under an
    identity that no longer matches."""
    same_as: tuple[str, ...] = ()
    """Other variants of the sweep that build the same model with the same recipe: this one
    run serves them all (reported, never silently merged)."""
    failure: str | None = None
    """For ``failed``: the recorded cause."""
    stage: str | None = None
    """The sweep's stage this run is (``Stage.name``); ``None``: a run of the sweep itself."""

    @property
    def tags(self) -> dict[str, str]:
        """What the run is tagged with besides the sweep: its stage, if it is one."""
        return {Tag.STAGE: self.stage} if self.stage is not None else {}

    @property
    def spec(self) -> VariantSpec:
        return self.setting.spec

    @property
    def recipe(self) -> Recipe:
        return self.setting.recipe

    @property
    def run_hash(self) -> str:
        return self.setting.run_hash

    @property
    def tokens(self) -> int:
        r = self.recipe
        return r.total_steps() * r.batch_size * r.seq_len

    def as_dict(self) -> dict[str, Any]:
        return {"variant": self.spec.id, "lr": self.recipe.lr, "seed": self.recipe.seed,
                "hash": self.run_hash, "state": self.state.value,
                "status": self.status.value if self.status else None, "run_id": self.run_id,
                "stale_run_id": self.stale_run_id, "same_as": list(self.same_as),
                "failure": self.failure, "tokens": self.tokens, "stage": self.stage,
                "continue_from": self.recipe.continue_from,
                "numerics": self.setting.numerics.as_dict()}


@dataclass(frozen=True)
class Estimate:
    runs_left: int
    tokens: int
    flops: float
    seconds_serial: float
    seconds_estimate: float
    throughput_source: str
    """``measured`` (median tokens/s of recorded runs of the same size and device), ``assumed
    35% MFU of an H200`` (a CUDA plan before any run is measured) or ``assumed 5e+10 FLOP/s of
    a CPU run`` (``CPU_FLOPS``); several, comma-separated, when the runs left differ."""
    parallel_slots: int
    memory_bytes: int = 0
    """The most memory one run left needs at its training step's peak, at least
    (``runners/run/capacity.py``); 0 when none is left."""


@dataclass(frozen=True)
class PlanReport:
    """What ``--dry-run`` shows."""

    sweep: str
    runs: list[PlannedRun]
    numerics: Numerics
    estimate: Estimate | None
    notes: list[str] = field(default_factory=list)
    trials_left: int | None = None
    """For a search sweep: Optuna trials still to run."""
    storage: str | None = None
    """For a search sweep: the Optuna storage URL."""

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict(Counter(p.state.value for p in self.runs))
        if self.trials_left is not None:
            counts["trials left"] = self.trials_left
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "runs": [p.as_dict() for p in self.runs],
                "counts": self.counts, "numerics": self.numerics.as_dict(),
                "estimate": vars(self.estimate) if self.estimate else None,
                "notes": self.notes, "storage": self.storage}


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


@dataclass(frozen=True)
class RecordedRun:
    """What the tracking store holds for one hash: its newest training run, as planning and a
    sweep's summary read it."""

    run_id: str
    run_hash: str
    status: RunStatus | None
    """The ``gatelab.status`` tag; ``None`` where it is missing or unknown."""
    failure: str | None
    """The recorded cause of a failure (``gatelab.failure``)."""
    variant: str | None
    seed: int | None
    lr: float | None
    """The peak learning rate the run was tagged with."""
    stage: str | None
    """The sweep's stage the run is; ``None``: a run of the sweep itself."""
    sweeps: tuple[str, ...]
    """The sweeps the run belongs to (tagged ``gatelab.sweep.NAME=1``)."""
    size: str | None
    device: str | None
    """``cpu`` or ``cuda``; ``None`` for a run recorded before the tag existed."""
    metrics: dict[str, float | None]
    """The latest value of each metric asked for (``None``: not recorded)."""


PLAN_METRICS = (Metric.TOKENS_PER_S,)
"""The metrics a plan's estimate reads (``measured_tokens_per_s``)."""


def recorded_runs(tracking_uri: str, experiment: str,
                  metrics: Sequence[str] = PLAN_METRICS) -> dict[str, RecordedRun]:
    """The newest training run of every hash in ``experiment``, by hash, with ``metrics``: the
    store read once, through the dashboards' loader."""
    frame = load_frame(tracking_uri, experiment)
    wanted = [m for m in dict.fromkeys(metrics) if m in frame.columns]
    columns = ["run_id", "run_hash", "status", "failure", "variant_id", "seed", "lr", "stage",
               "sweeps", "size", "device", *wanted]
    runs: dict[str, RecordedRun] = {}
    for row in frame.select(columns).iter_rows(named=True):
        runs[row["run_hash"]] = RecordedRun(
            row["run_id"], row["run_hash"], parse_status(row["status"]), row["failure"],
            row["variant_id"], row["seed"], row["lr"], row["stage"], tuple(row["sweeps"]),
            row["size"], row["device"], {m: row.get(m) for m in metrics})
    return runs


def status_of(run: RecordedRun | None) -> RunStatus | None:
    return run.status if run is not None else None


def state_of(run: RecordedRun | None, retry_failed: bool) -> PlanState:
    status = status_of(run)
    if status in DONE_STATUSES:
        return PlanState.DONE
    if status is RunStatus.FAILED:
        return PlanState.TO_RUN if retry_failed else PlanState.FAILED
    if status in (RunStatus.RUNNING, RunStatus.INTERRUPTED):
        return PlanState.RESUME
    return PlanState.TO_RUN


def _sweep_members(recorded: dict[str, RecordedRun], sweep_name: str
                   ) -> dict[tuple[str | None, int | None, float | None, str | None],
                             RecordedRun]:
    """The sweep's recorded runs by (variant, seed, lr, stage): what a name-based plan would
    have called the same run."""
    return {(run.variant, run.seed, run.lr, run.stage): run for run in recorded.values()
            if sweep_name in run.sweeps}


def make_plan(pairs: list[tuple[VariantSpec, Recipe]], recorded: dict[str, RecordedRun],
              numerics: Numerics, retry_failed: bool = False, sweep_name: str | None = None,
              stages: Sequence[Stage] = ()) -> list[PlannedRun]:
    """One ``PlannedRun`` per distinct hash, in order: each pair's run, then its ``stages``,
    each continuing from the run before it (which therefore saves its weights). With
    ``sweep_name``, a run that the sweep recorded under another identity makes its new hash
    ``stale``."""
    members = _sweep_members(recorded, sweep_name) if sweep_name else {}
    plan: dict[str, PlannedRun] = {}

    def add(spec: VariantSpec, recipe: Recipe, parent: RunSetting | None,
            stage: str | None) -> RunSetting:
        lineage = None if parent is None else Lineage(
            parent.run_hash, parent.identity.setting_hash, parent.identity.lr_setting_hash)
        setting = resolve_setting(spec, recipe, numerics, parent=lineage)
        h = setting.run_hash
        if h in plan:
            first = plan[h]
            if spec.id != first.spec.id and spec.id not in first.same_as:
                plan[h] = dataclasses.replace(first, same_as=(*first.same_as, spec.id))
            return first.setting
        run = recorded.get(h)
        state = state_of(run, retry_failed)
        stale = members.get((spec.id, recipe.seed, recipe.lr, stage))
        stale_id = None
        if run is None and stale is not None and stale.run_hash != h:
            state, stale_id = PlanState.STALE, stale.run_id
        failure = run.failure if run is not None else None
        plan[h] = PlannedRun(setting, state, run.run_id if run else None,
                             status_of(run), stale_id, failure=failure, stage=stage)
        return setting

    for spec, recipe in pairs:
        # save_weights is no part of the identity: turning it on keeps every hash.
        parent = add(spec, dataclasses.replace(recipe, save_weights=True) if stages else recipe,
                     None, None)
        for i, stage in enumerate(stages):
            last = i == len(stages) - 1
            staged = stage_recipe(parent.recipe, stage, parent.run_hash)
            staged = dataclasses.replace(staged, save_weights=not last or bool(
                stage.overrides.get("save_weights", False)))
            parent = add(spec, staged, parent, stage.name)
    return list(plan.values())


def waves(todo: list[PlannedRun]) -> list[list[PlannedRun]]:
    """``todo`` in rounds: each round's runs may train at once, and a stage comes a round after
    the run it continues from where that is in ``todo`` too (else in the first round, as its
    parent is recorded already, or fails with the parent's cause)."""
    by_hash = {p.run_hash: p for p in todo}
    depth: dict[str, int] = {}

    def depth_of(p: PlannedRun) -> int:
        if p.run_hash not in depth:
            parent = by_hash.get(p.recipe.continue_from or "")
            depth[p.run_hash] = 0 if parent is None else depth_of(parent) + 1
        return depth[p.run_hash]

    rounds: list[list[PlannedRun]] = []
    for p in todo:
        d = depth_of(p)
        rounds.extend([] for _ in range(d + 1 - len(rounds)))
        rounds[d].append(p)
    return rounds


def plan_notes(plan: list[PlannedRun]) -> list[str]:
    """What a user should know about a plan beyond its table."""
    notes = []
    same = {(p.spec.id, *p.same_as) for p in plan if p.same_as}
    for ids in sorted(same):
        notes.append(f"{', '.join(ids)} build the same model: one run per seed and LR serves "
                     "them all (their specs differ only in description)")
    return notes


def measured_tokens_per_s(recorded: dict[str, RecordedRun]) -> dict[tuple[str, str], float]:
    """Median training throughput of recorded runs, by (size preset, device type)."""
    by_size: dict[tuple[str, str], list[float]] = {}
    for run in recorded.values():
        tps = run.metrics.get(Metric.TOKENS_PER_S)
        if tps and not math.isnan(tps) and run.size:
            by_size.setdefault((run.size, run.device or "cpu"), []).append(tps)
    return {key: sorted(v)[len(v) // 2] for key, v in by_size.items()}


def flops_per_token(spec: VariantSpec, size: str, seq_len: int) -> float:
    """Training FLOPs a token of ``spec`` at ``size`` costs (``runners/run/flops.py``: the
    experts a token is routed to, not all of them), from a model built on the meta device once
    per architecture and resolved backbone."""
    return architecture_flops_per_token(spec.architecture, size, seq_len)


def estimate(plan: list[PlannedRun], recorded: dict[str, RecordedRun],
             parallel: int | None = None) -> Estimate:
    """Tokens, training FLOPs, time and memory of the runs left to do. Time: the measured
    throughput of recorded runs of the same size and device, else on CUDA an assumed
    ``ASSUMED_MFU`` of an H200's bf16 peak, else ``CPU_FLOPS``; both assumed rates divide the
    run's FLOPs, so a larger model takes longer."""
    left = [p for p in plan if p.state in TO_TRAIN]
    throughput = measured_tokens_per_s(recorded)
    tokens = sum(p.tokens for p in left)
    flops = 0.0
    seconds = 0.0
    sources: set[str] = set()
    for p in left:
        per_token = flops_per_token(p.spec, p.recipe.size, p.recipe.seq_len)
        flops += per_token * p.tokens
        device = p.setting.numerics.device_type.value
        tps = throughput.get((p.recipe.size, device))
        if tps is not None:
            sources.add("measured")
        elif device == "cuda":
            tps = ASSUMED_MFU * ASSUMED_PEAK / per_token
            sources.add(f"assumed {ASSUMED_MFU:.0%} MFU of an H200")
        else:
            tps = CPU_FLOPS / per_token
            sources.add(f"assumed {CPU_FLOPS:.0e} FLOP/s of a CPU run")
        seconds += p.tokens / tps
    slots = parallel or max(1, os.cpu_count() or 1)
    memory = max((m.total_bytes for m in memory_needs(left).values()), default=0)
    return Estimate(len(left), tokens, flops, seconds, seconds / min(slots, max(len(left), 1)),
                    ", ".join(sorted(sources)) or "none left", slots, memory)


def memory_needs(runs: list[PlannedRun]) -> dict[str, MemoryEstimate]:
    """Each run's memory at its training step's peak, at least, by hash."""
    return {p.run_hash: estimate_memory(p.setting) for p in runs}


def check_runs_fit(runs: list[PlannedRun], free: int, where: str) -> None:
    """``CapacityError`` for the first run that needs more than ``free`` bytes (``where``:
    what was measured): a sweep of it would fail every such run."""
    for p in runs:
        check_memory(f"sweep run {run_label(p.setting)}", estimate_memory(p.setting), free,
                     where)


def memory_notes(plan: list[PlannedRun], slots: int, free: int, where: str) -> list[str]:
    """What a plan's memory means on a machine with ``free`` bytes (``where``): a run that
    does not fit (the sweep refuses to start), or more parallel runs than fit at once."""
    left = [p for p in plan if p.state in TO_TRAIN]
    try:
        check_runs_fit(left, free, where)
    except CapacityError as err:
        return [f"{err}; the sweep will refuse to start"]
    need = max((m.total_bytes for m in memory_needs(left).values()), default=0)
    at_once = min(slots, len(left))
    if need == 0 or at_once * need <= free:
        return []
    return [f"{at_once} runs at once need at least {gib(at_once * need)} ({gib(need)} each), "
            f"but this machine has {gib(free)} ({where}): at most {free // need} fit at once; "
            "raise resources.cpus so that Ray starts fewer at once"]
