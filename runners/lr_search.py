"""Learning-rate search with Optuna: per variant, a resumable study over log(lr).

The study lives in an RDB (SQLite) file next to the tracking store. Each trial is a normal
gatelab run (cached by hash, visible in MLflow). A diverged trial is told a penalty loss (the
loss of a uniform predictor, ln(vocab)) and tagged ``diverged`` so TPE steers away from it; a
failed one is told FAIL. Trials left RUNNING by a killed driver are failed and re-enqueued with
the same learning rate, so the resumed trial maps to the same hash and resumes its checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from registry.schema import VariantSpec
from runners.plan import PlannedRun, make_plan
from runners.recipe import load_recipe
from runners.sweep_spec import OptunaSearch, Sweep, selected_variants


def storage_url(tracking_uri: str, work_dir: Path) -> str:
    """``sqlite:///<dir of mlflow.db>/optuna.db`` for a SQLite store, else under ``work_dir``."""
    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).parent
    else:
        folder = work_dir
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
        study.enqueue_trial({"lr": trial.params["lr"]}, user_attrs={"resumed_from": trial.number})


def _counted(study: Any) -> int:
    """Trials that count towards the budget: complete ones (diverged included)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def search_plan(name: str, sweep: Sweep, ctx: Any, recorded: dict[str, Any]) -> dict[str, Any]:
    """What ``--dry-run`` reports for a search sweep: trials done and left, per variant."""
    import optuna

    assert sweep.search is not None
    storage = storage_url(ctx.tracking_uri, ctx.work_dir)
    runs: list[dict[str, Any]] = []
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
                plan = make_plan([(spec, recipe)], recorded)
                runs.extend(p.as_dict() for p in plan)
            notes.append(f"{sname}: {len(done)}/{sweep.search.trials} trials done")
            left += max(0, sweep.search.trials - len(done))
    counts = {"done": len(runs), "trials left": left}
    return {"sweep": name, "runs": runs, "counts": counts, "notes": notes,
            "estimate": None, "storage": storage}


def run_search(name: str, sweep: Sweep, ctx: Any) -> list[dict[str, Any]]:
    """Run each variant's study to ``trials`` complete trials; return a row per variant."""
    from runners.ray_tasks import ProgressBoard
    from runners.sweep import _say, connect_ray, execute

    search = sweep.search
    assert search is not None
    storage = storage_url(ctx.tracking_uri, ctx.work_dir)
    connect_ray(ctx.address)
    board = ProgressBoard.remote()  # type: ignore[attr-defined]
    rows = []
    for spec in selected_variants(sweep):
        for seed in sweep.seeds:
            sname = f"{study_name(name, spec)}:s{seed}"
            study = _open_study(sname, storage, search)
            _recover_stale(study)
            _say(f"{sname}: {_counted(study)}/{search.trials} trials done ({storage})")
            while _counted(study) < search.trials:
                want = min(search.parallel, search.trials - _counted(study))
                trials = [study.ask({"lr": _lr_distribution(search)}) for _ in range(want)]
                planned = []
                for trial in trials:
                    recipe = load_recipe(sweep.recipe, {**sweep.overrides, "seed": seed,
                                                        "lr": trial.params["lr"]})
                    (p,) = make_plan([(spec, recipe)], {})
                    planned.append(p)
                outcomes = execute(planned, sweep, ctx, name, board)
                for trial, p in zip(trials, planned, strict=True):
                    _tell(study, trial, p, outcomes[p.run_hash])
            rows.append(_result_row(spec, seed, study))
    _print_results(name, rows)
    return rows


def _lr_distribution(search: OptunaSearch) -> Any:
    import optuna

    return optuna.distributions.FloatDistribution(search.lr_min, search.lr_max, log=True)


def _tell(study: Any, trial: Any, p: PlannedRun, outcome: dict[str, Any]) -> None:
    from optuna.trial import TrialState

    status = outcome.get("status")
    trial.set_user_attr("run_hash", p.run_hash)
    trial.set_user_attr("status", status)
    if status == "finished":
        study.tell(trial, outcome["val_loss"])
    elif status == "diverged":
        study.tell(trial, _penalty(outcome))
    else:
        trial.set_user_attr("cause", str(outcome.get("cause")))
        study.tell(trial, state=TrialState.FAIL)


def _penalty(outcome: dict[str, Any]) -> float:
    """A diverged trial's value: a uniform predictor's loss (worse than any trained model)."""
    vocab = outcome.get("vocab_size") or 4096
    return math.log(float(vocab)) + 1.0


def _result_row(spec: VariantSpec, seed: int, study: Any) -> dict[str, Any]:
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    stable = [t for t in complete if t.user_attrs.get("status") == "finished"]
    best = min(stable, key=lambda t: t.value) if stable else None
    return {"variant": spec.id, "seed": seed, "trials": len(complete),
            "diverged": sum(t.user_attrs.get("status") == "diverged" for t in complete),
            "best_lr": best.params["lr"] if best else None,
            "best_val_loss": best.value if best else None,
            "largest_stable_lr": max((t.params["lr"] for t in stable), default=None),
            "smallest_diverged_lr": min((t.params["lr"] for t in complete
                                         if t.user_attrs.get("status") == "diverged"),
                                        default=None)}


def _print_results(name: str, rows: list[dict[str, Any]]) -> None:
    from gatelab.format import table

    def g(v: object) -> str:
        return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    print(f"\nlr search {name}: per variant")
    print(table(("variant", "seed", "trials", "diverged", "best lr", "best val_loss",
                 "largest stable lr", "smallest diverged lr"),
                [(r["variant"], r["seed"], r["trials"], r["diverged"], g(r["best_lr"]),
                  g(r["best_val_loss"]), g(r["largest_stable_lr"]),
                  g(r["smallest_diverged_lr"])) for r in rows]))

