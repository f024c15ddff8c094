"""Text of ``gatelab sweep``: the plan, the summary table, the LR-search table, where the
results are, the link to the sweep's runs in the MLflow UI."""

from __future__ import annotations

from typing import Any

from gatelab.cli.format import number, table
from gatelab.contract import (
    DONE_STATUSES,
    IN_SWEEP,
    SWEEP_TAG_PREFIX,
    PlanState,
    design_tag,
)
from gatelab.runners.sweep.driver import SUMMARY_KEYS, SummaryRow
from gatelab.runners.sweep.lr_search import SearchRow
from gatelab.runners.sweep.plan import PlanReport

RETRY_HINT = "rerun with --retry-failed once the cause is fixed"
STALE_HINT = ("stale: recorded by this sweep under an identity that no longer matches (a size "
              "preset, the corpus, the recipe, the numerics or gatelab's identity rules "
              "changed); the sweep trains it anew and the old run leaves the sweep")


def format_plan(report: PlanReport) -> str:
    n = report.numerics
    lines = [f"sweep {report.sweep}: plan ({n.device_type}, {n.precision}, {n.kernel} "
             "attention)"]
    if any(p.stage is not None for p in report.runs):  # a sweep with stages
        lines.append(table(("variant", "stage", "lr", "seed", "hash", "continues", "state"),
                           [(p.spec.id, p.stage or "-", f"{p.recipe.lr:g}", p.recipe.seed,
                             p.run_hash, p.recipe.continue_from or "-", p.state.value)
                            for p in report.runs]))
    elif report.runs:
        lines.append(table(("variant", "lr", "seed", "hash", "state"),
                           [(p.spec.id, f"{p.recipe.lr:g}", p.recipe.seed, p.run_hash,
                             p.state.value) for p in report.runs]))
    lines.extend(report.notes)
    failed = [p for p in report.runs if p.state is PlanState.FAILED]
    if failed:
        lines.append(f"failed before ({RETRY_HINT}):")
        lines.extend(f"  {p.spec.id} lr={p.recipe.lr:g} seed={p.recipe.seed}: "
                     f"{p.failure or 'no cause recorded'}" for p in failed)
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report.counts.items()))
    lines.append(f"{len(report.runs)} runs: {counts or 'none'}")
    if any(p.state is PlanState.STALE for p in report.runs):
        lines.append(STALE_HINT)
    est = report.estimate
    if est is not None:
        lines.append(
            f"left to run: {est.runs_left} runs, {est.tokens:,} tokens, {est.flops:.2e} "
            f"FLOPs, about {est.seconds_estimate / 60:.1f} min on {est.parallel_slots} "
            f"parallel slots ({est.throughput_source} throughput)")
    return "\n".join(lines)


def format_summary(name: str, rows: list[SummaryRow]) -> str:
    staged = any(r.stage is not None for r in rows)
    body = table(("variant", *(("stage",) if staged else ()), "lr", "seed", "status",
                  *SUMMARY_KEYS),
                 [(r.variant, *((r.stage or "-",) if staged else ()), f"{r.lr:g}", r.seed,
                   r.status.value, *(number(r.metrics[k]) for k in SUMMARY_KEYS)) for r in rows])
    failures = [f"  {r.variant}{f' ({r.stage})' if r.stage else ''} lr={r.lr:g} "
                f"seed={r.seed}: {r.status.value}"
                f"{'' if r.ran_now else ' (recorded earlier)'}: {r.cause or 'no cause recorded'}"
                for r in rows if r.status not in DONE_STATUSES]
    ran = sum(r.ran_now for r in rows)
    text = f"\nsweep {name}: {ran} ran now, {len(rows) - ran} already recorded\n{body}"
    if failures:
        text += f"\nnot finished ({RETRY_HINT}):\n" + "\n".join(failures)
    return text


def format_search(name: str, rows: list[SearchRow]) -> str:
    return f"\nlr search {name}: per variant\n" + table(
        ("variant", "seed", "trials", "diverged", "best lr", "best val_loss",
         "largest stable lr", "smallest diverged lr"),
        [(r.variant, r.seed, r.trials, r.diverged, number(r.best_lr), number(r.best_val_loss),
          number(r.largest_stable_lr), number(r.smallest_diverged_lr)) for r in rows])


def results_text(name: str, uri: str, experiment: str, uri_given: bool,
                 design: bool = False) -> str:
    """Where sweep ``name``'s runs are recorded (the store ``uri``, ``experiment``, the sweep's
    tag; with ``design``, the until-decided design's experiment tag) and the command that
    reports them (naming ``--tracking-uri`` where the user gave one)."""
    tail = f"; the design is the experiment tag {design_tag(name)}." if design else "."
    return (f"\nResults: MLflow store {uri}, experiment {experiment!r}, runs tagged "
            f"{SWEEP_TAG_PREFIX}{name}={IN_SWEEP}{tail}\n"
            f"Tables, plots and an HTML report: .venv/bin/gatelab report "
            f"{name}{uri_flag(uri, uri_given)}")


def uri_flag(uri: str, given: bool) -> str:
    """`` --tracking-uri URI`` (with its leading space) for a suggested command where the
    user gave one; else empty (the default store is found again)."""
    return f" --tracking-uri {uri}" if given else ""


UI_BASE = "http://127.0.0.1:5000"
"""Where ``gatelab ui`` serves by default."""
TRAINING_VIEW = "workflowType=machine_learning"
"""The MLflow UI's "Model training" view. MLflow 3.17's UI opens every experiment on its GenAI
overview of traces (empty for gatelab) unless the link asks for this view or the browser chose
it once (the switch at the top left, kept in the browser's local storage): it ignores the
experiment's ``mlflow.experimentKind`` tag, which gatelab sets all the same."""


def ui_link(client: Any, experiment: str, base: str = UI_BASE) -> str:
    """The UI's page of ``experiment``'s training runs (the UI's home where it does not
    exist)."""
    exp = client.get_experiment_by_name(experiment)
    where = f"experiments/{exp.experiment_id}" if exp is not None else ""
    return f"{base}/#/{where}?{TRAINING_VIEW}"
