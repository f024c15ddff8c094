"""Learning-rate search with Optuna: per variant, a resumable study over log(lr).

The study lives in an Optuna RDB storage (``study_storage``): a SQLite file beside a SQLite
tracking store, else in the sweep's storage (``--storage``, a path every node mounts), or any
SQLAlchemy URL given with ``--study-storage`` (e.g. the PostgreSQL database behind the tracking
server). A SQLite file is enough even on a cluster because only the driver touches the study:
it asks for every trial and tells every result; the workers only train. A second ``ray job
submit`` of the same search opens the same study and continues its trial count.

Each trial is a normal gatelab run (cached by hash, visible in MLflow). A diverged trial is
told a penalty loss (the loss of a uniform predictor, ln(vocab)) and tagged ``diverged`` so TPE
steers away from it; a failed one is told FAIL. Trials left RUNNING by a killed driver are
failed and re-enqueued with the same learning rate, so the resumed trial maps to the same hash
and resumes its checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatelab.contract import RunStatus, sqlite_path
from gatelab.registry.schema import VariantSpec
from gatelab.runners.run.recipe import load_recipe
from gatelab.runners.run.result import RunResult
from gatelab.runners.sweep.context import (
    SweepContext,
    check_cluster_places,
    check_schedulable,
    connect_ray,
)
from gatelab.runners.sweep.execute import SweepObserver, execute
from gatelab.runners.sweep.parent import SweepParent
from gatelab.runners.sweep.plan import PlannedRun, PlanReport, make_plan, recorded_runs
from gatelab.runners.sweep.spec import OptunaSearch, Sweep, selected_variants


@dataclass(frozen=True)
class SearchRow:
    """One study's result: a variant at one seed."""

    variant: str
    seed: int
    trials: int
    diverged: int
    best_lr: float | None
    best_val_loss: float | None
    largest_stable_lr: float | None
    smallest_diverged_lr: float | None


def storage_url(ctx: SweepContext) -> str:
    """Where the studies live (see the module docstring): ``--study-storage``, else
    ``sqlite:///<dir of mlflow.db>/optuna.db`` for a SQLite store, else ``optuna.db`` in the
    sweep's storage path."""
    if ctx.study_storage:
        return ctx.study_storage
    db = sqlite_path(ctx.uri)
    if db is not None:
        folder = db.resolve().parent
    elif ctx.place.is_path:
        folder = Path(ctx.place.root)
    else:
        raise ValueError(
            f"the LR search's Optuna study needs a database; the storage {ctx.place.root} is "
            "an object store, which holds none. Pass --study-storage with an SQLAlchemy URL "
            "(e.g. postgresql://HOST/optuna) or a --storage path every node mounts")
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def study_name(sweep_name: str, spec: VariantSpec) -> str:
    return f"{sweep_name}:{spec.id}"


def _open_study(name: str, storage: str, search: OptunaSearch) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=search.sampler_seed, n_startup_trials=3)
    return optuna.create_study(study_name=name, storage=storage, direction="minimize",
                               sampler=sampler, load_if_exists=True)


def _recover_stale(study: Any) -> None:
    """Trials a killed driver left RUNNING: fail them and enqueue their LR again."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        if "lr" in trial.params:  # killed before its LR was drawn: nothing to enqueue again
            study.enqueue_trial({"lr": trial.params["lr"]},
                                user_attrs={"resumed_from": trial.number})


def _counted(study: Any) -> int:
    """Trials that count towards the budget: complete ones (diverged included)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def search_plan(name: str, sweep: Sweep, ctx: SweepContext) -> PlanReport:
    """What ``--dry-run`` reports for a search sweep: trials done and left, per variant."""
    import optuna

    assert sweep.search is not None
    storage = storage_url(ctx)
    numerics = ctx.numerics(sweep.resources)
    recorded = recorded_runs(ctx.uri, ctx.experiment)
    runs: list[PlannedRun] = []
    notes: list[str] = []
    left = 0
    for spec in selected_variants(sweep):
        for seed in sweep.seeds:
            sname = f"{study_name(name, spec)}:s{seed}"
            try:
                study = optuna.load_study(study_name=sname, storage=storage)
                trials = study.get_trials(deepcopy=False)
            except KeyError:
                trials = []
            done = [t for t in trials if t.state.name == "COMPLETE"]
            for t in done:
                recipe = load_recipe(sweep.recipe, {**sweep.overrides, "seed": seed,
                                                    "lr": t.params["lr"]})
                runs.extend(make_plan([(spec, recipe)], recorded, numerics))
            notes.append(f"{sname}: {len(done)}/{sweep.search.trials} trials done")
            left += max(0, sweep.search.trials - len(done))
    return PlanReport(name, runs, numerics, None, notes, trials_left=left, storage=storage)


def run_search(name: str, sweep: Sweep, ctx: SweepContext,
               observer: SweepObserver | None = None) -> list[SearchRow]:
    """Run each variant's study to ``trials`` complete trials, its trials nested under the
    sweep's parent run; return a row per study."""
    connect_ray(ctx.address)  # first: a local Ray is configured before ray is imported
    check_schedulable(sweep.resources, name)
    check_cluster_places(ctx, name)
    storage = storage_url(ctx)  # an object store without --study-storage fails here, early
    parent = SweepParent.open(ctx, name, sweep, [])
    statuses: list[RunStatus] = []
    with parent.ending_on_error():
        rows = _search(name, sweep, ctx, storage, observer, parent.run_id, statuses)
    parent.close(statuses)
    return rows


def _search(name: str, sweep: Sweep, ctx: SweepContext, storage: str,
            observer: SweepObserver | None, parent_run_id: str,
            statuses: list[RunStatus]) -> list[SearchRow]:
    from gatelab.runners.sweep.board import start_board

    search = sweep.search
    assert search is not None
    numerics = ctx.numerics(sweep.resources)
    board = start_board()
    rows = []
    for spec in selected_variants(sweep):
        for seed in sweep.seeds:
            sname = f"{study_name(name, spec)}:s{seed}"
            study = _open_study(sname, storage, search)
            _recover_stale(study)
            while _counted(study) < search.trials:
                want = min(search.parallel, search.trials - _counted(study))
                trials = [study.ask({"lr": _lr_distribution(search)}) for _ in range(want)]
                planned = []
                for trial in trials:
                    recipe = load_recipe(sweep.recipe, {**sweep.overrides, "seed": seed,
                                                        "lr": trial.params["lr"]})
                    (p,) = make_plan([(spec, recipe)], {}, numerics)
                    planned.append(p)
                results = execute(planned, sweep, ctx, name, numerics, observer, board,
                                  parent_run_id=parent_run_id)
                for trial, p in zip(trials, planned, strict=True):
                    _tell(study, trial, p, results[p.run_hash])
                    statuses.append(results[p.run_hash].status)
            rows.append(_result_row(spec, seed, study))
    return rows


def _lr_distribution(search: OptunaSearch) -> Any:
    import optuna

    return optuna.distributions.FloatDistribution(search.lr_min, search.lr_max, log=True)


def _tell(study: Any, trial: Any, p: PlannedRun, result: RunResult) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("run_hash", p.run_hash)
    trial.set_user_attr("status", result.status.value)
    val_loss = result.summary.val_loss if result.summary else None
    if result.status is RunStatus.FINISHED and val_loss is not None:
        study.tell(trial, val_loss)
    elif result.status is RunStatus.DIVERGED:
        study.tell(trial, _penalty(result))
    else:
        trial.set_user_attr("cause", str(result.cause))
        study.tell(trial, state=TrialState.FAIL)


def _penalty(result: RunResult) -> float:
    """A diverged trial's value: a uniform predictor's loss (worse than any trained model)."""
    vocab = result.summary.vocab_size if result.summary else 4096
    return math.log(vocab) + 1.0


def _result_row(spec: VariantSpec, seed: int, study: Any) -> SearchRow:
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    stable = [t for t in complete if t.user_attrs.get("status") == RunStatus.FINISHED]
    diverged = [t for t in complete if t.user_attrs.get("status") == RunStatus.DIVERGED]
    best = min(stable, key=lambda t: t.value) if stable else None
    return SearchRow(spec.id, seed, len(complete), len(diverged),
                     best.params["lr"] if best else None, best.value if best else None,
                     max((t.params["lr"] for t in stable), default=None),
                     min((t.params["lr"] for t in diverged), default=None))
