"""The ``gatelab`` command: one subcommand per user task, each a thin call into a package;
every table and message it prints is formatted here, in ``gatelab.cli``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatelab.cli.format import table
from gatelab.contract import DONE_STATUSES, SWEEP_TAG_PREFIX, TO_TRAIN


def cmd_list(args: argparse.Namespace) -> int:
    from gatelab.cli.variants import variant_row, variants_table
    from gatelab.registry.loader import load_all_valid

    specs, errors = load_all_valid()
    for err in errors:  # a bad file is named; the others are still listed
        print(err, file=sys.stderr)
    rows = [variant_row(spec) for spec in specs]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 1 if errors else 0
    print(variants_table(rows))
    print(f"\n{len(rows)} variants. +params paper: at the paper's 15A2B shape "
          "(24 layers, d_model 2048, 32 q / 4 kv heads, d_k 128); counted from built modules.")
    if errors:
        print(f"{len(errors)} spec file(s) are invalid and left out (above)", file=sys.stderr)
    return 1 if errors else 0


def cmd_show(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from gatelab.model.build import added_params, count_params, resolve_backbone
    from gatelab.registry.hashing import spec_hash
    from gatelab.registry.loader import load_variant
    from gatelab.registry.schema import to_plain

    spec = load_variant(args.variant)
    print(OmegaConf.to_yaml(to_plain(spec)).rstrip())
    backbone = resolve_backbone(spec, args.size)
    print(f"# spec hash: {spec_hash(spec)}")
    print(f"# backbone at {args.size}:")
    print("\n".join(f"#   {line}" for line in
                    OmegaConf.to_yaml(to_plain(backbone)).splitlines()))
    print(f"# parameters at {args.size}: {count_params(spec, args.size):,} "
          f"({added_params(spec, args.size):+,} against the baseline)")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from gatelab.registry.errors import SpecError
    from gatelab.registry.hashing import spec_hash
    from gatelab.registry.loader import load_all_valid, load_spec

    bad = 0
    known = {spec_hash(s): s.id for s in load_all_valid()[0]}
    seen: dict[str, str] = {}
    for path in args.files:
        try:
            spec = load_spec(Path(path))
        except SpecError as err:
            bad += 1
            print(err, file=sys.stderr)
            continue
        h = spec_hash(spec)
        print(f"ok       {path}  (id {spec.id}, hash {h})")
        twin = seen.get(h) or (known[h] if known.get(h, spec.id) != spec.id else None)
        if twin is not None:
            print(f"note     {path}: builds the same model as {twin!r} (architecture hash {h}); "
                  "a sweep naming both trains it once")
        seen.setdefault(h, spec.id)
    if bad:
        print(f"{bad} of {len(args.files)} spec files are invalid", file=sys.stderr)
    return 1 if bad else 0


def cmd_train(args: argparse.Namespace) -> int:
    from gatelab.cli.live_view import TrainBar
    from gatelab.cli.train_summary import format_summary
    from gatelab.registry.loader import load_variant
    from gatelab.runners.run.lease import LeaseOwner
    from gatelab.runners.run.recipe import load_recipe
    from gatelab.runners.run.resources import Resources
    from gatelab.runners.run.train import train

    overrides: dict[str, object] = {}
    origins: dict[str, str] = {}  # where each override came from, for error messages
    for key in ("steps", "lr", "seed", "batch_size", "seq_len", "size", "tokens"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
            origins[key] = "--" + key.replace("_", "-")
    for item in args.set or []:
        key, _, value = item.partition("=")
        overrides[key] = _parse_value(value)
        origins[key] = f"--set {item}"
    spec = load_variant(args.variant)
    recipe = load_recipe(args.recipe, overrides, origins)
    resources = Resources(device=args.device, precision=args.precision, backend=args.backend,
                          threads=args.threads, tracking_uri=args.tracking_uri,
                          experiment=args.experiment, work_dir=Path(args.work_dir),
                          storage=args.storage)
    resources.numerics()  # an impossible device or kernel fails before anything starts
    def waiting(owner: LeaseOwner) -> None:
        _say(f"gatelab train: this run is being trained by {owner.describe()}; waiting for it "
             "(its result is shown when it ends; Ctrl-C leaves it alone)")

    with TrainBar(spec.id, enabled=not args.no_progress) as bar:
        result = train(spec, recipe, resources, on_progress=bar.update, on_wait=waiting)
    print(format_summary(spec.id, result))
    return 0 if result.status in DONE_STATUSES else 1


def cmd_sweep(args: argparse.Namespace) -> int:
    from gatelab.cli.live_view import LiveView
    from gatelab.cli.sweep_text import format_plan, format_search, format_summary, ui_link
    from gatelab.runners.sweep.context import SweepContext
    from gatelab.runners.sweep.driver import dry_run, plan_sweep, run_plan
    from gatelab.runners.sweep.lr_search import run_search
    from gatelab.runners.sweep.plan import plan_notes
    from gatelab.runners.sweep.spec import get_sweep
    from gatelab.shipped import sweeps_file

    path = sweeps_file(args.sweeps)
    sets = args.set or []
    sweep = get_sweep(args.name, path, sets)  # a bad sweeps file fails before anything starts
    if sets:
        _say(f"sweep {args.name}: overrides from the command line: {', '.join(sets)}")
    ctx = SweepContext(tracking_uri=args.tracking_uri, experiment=args.experiment,
                       work_dir=Path(args.work_dir).resolve(), address=args.address,
                       retry_failed=args.retry_failed, sweeps_file=path,
                       storage=args.storage, study_storage=args.study_storage,
                       task_retries=args.task_retries)
    if args.max_seeds is not None and not args.until_decided:
        raise ValueError("--max-seeds only applies with --until-decided")
    if args.until_decided:
        return _until_decided(args, sweep, ctx)
    if args.dry_run:
        report = dry_run(args.name, ctx, sweep)
        print(json.dumps(report.as_dict(), indent=2) if args.json else format_plan(report))
        return 0
    failed = False
    if sweep.search is not None:
        rows = run_search(args.name, sweep, ctx)
        print(format_search(args.name, rows))
    else:
        plan, numerics = plan_sweep(args.name, ctx, sweep)
        todo = [p for p in plan if p.state in TO_TRAIN]
        _say(f"sweep {args.name}: {len(plan)} runs, {len(plan) - len(todo)} already "
             f"recorded, {len(todo)} to run")
        for note in plan_notes(plan):
            _say(note)
        if not todo:
            _say("nothing to run: every run of this sweep is already recorded")
        view = LiveView(todo, enabled=not args.no_progress)
        try:
            summary = run_plan(args.name, sweep, ctx, plan, numerics, view)
        finally:
            view.close()
        print(format_summary(args.name, summary))
        failed = any(r.status not in DONE_STATUSES for r in summary)
    where = ctx.uri
    print(f"\nResults: MLflow store {where}, experiment {args.experiment!r}, runs tagged "
          f"{SWEEP_TAG_PREFIX}{args.name}=1.")
    uri_flag = "" if args.tracking_uri is None else f" --tracking-uri {where}"
    print(f"Tables, plots and an HTML report: .venv/bin/gatelab report {args.name}{uri_flag}")
    if where.startswith(("http://", "https://")):  # a tracking server serves its own UI
        print(f"Open the MLflow UI: {ui_link(ctx.client, args.experiment, base=where)}")
    else:
        print(f"Open the MLflow UI: .venv/bin/gatelab ui{uri_flag}  (then "
              f"{ui_link(ctx.client, args.experiment)})")
    return 1 if failed else 0


def _until_decided(args: argparse.Namespace, sweep: Any, ctx: Any) -> int:
    import polars as pl

    from gatelab.cli.live_view import LiveView
    from gatelab.cli.sweep_text import format_summary
    from gatelab.dashboards.claims import load_claims
    from gatelab.dashboards.runs import load
    from gatelab.runners.sweep.until_decided import (
        dry_rounds,
        run_until_decided,
        sweep_claims,
    )

    if sweep.search is not None:
        raise ValueError(f"sweep {args.name!r} searches the LR with Optuna: --until-decided "
                         "needs a grid sweep (seeds and optionally lrs)")
    claims = load_claims(args.claims)
    if args.dry_run:
        chosen = sweep_claims(sweep, args.name, claims)
        design, planned = dry_rounds(args.name, sweep, ctx, args.max_seeds)
        print(f"sweep {args.name}: until decided, {len(chosen)} claims: "
              f"{', '.join(c.id for c in chosen)}")
        print(f"design: looks at {', '.join(map(str, design.looks))} seeds (seeds "
              f"{list(design.seeds)}), alpha {design.alpha:g} spent over the looks")
        print(table(("look", "seeds", "alpha at look", "runs left through it", "about"), [
            (k + 1, len(seeds), f"{design.spent(k):.3g}", cost.runs_left,
             f"{cost.seconds_estimate / 60:.1f} min") for k, seeds, cost in planned]))
        print("Each later round trains only the variants of the claims still open, so it "
              "costs at most this.")
        return 0
    views: list[Any] = []

    def observer(todo: list[Any]) -> Any:
        view = LiveView(todo, enabled=not args.no_progress)
        views.append(view)
        return view

    try:
        rounds = run_until_decided(args.name, sweep, ctx, args.max_seeds, _say, observer,
                                   claims)
    finally:
        for view in views:
            view.close()
    print(format_summary(args.name, rounds[-1].summary))
    runs = load(args.name, ctx.uri, ctx.experiment)
    tested = [c.id for c in sweep_claims(sweep, args.name, claims)]
    table_ = runs.verdicts(claims).filter(pl.col("claim").is_in(tested))
    print(table(("claim", "at", "verdict", "statistic"), [
        (r["claim"], r["at"], r["verdict"], r["statistic"])
        for r in table_.iter_rows(named=True)]))
    failed = any(r.status not in DONE_STATUSES for rnd in rounds for r in rnd.summary)
    print(f"\nResults: MLflow store {ctx.uri}, experiment {args.experiment!r}, runs tagged "
          f"{SWEEP_TAG_PREFIX}{args.name}=1; the design is the experiment tag "
          f"gatelab.design.{args.name}.")
    print(f"Tables, plots and an HTML report: .venv/bin/gatelab report {args.name}"
          + ("" if args.tracking_uri is None else f" --tracking-uri {ctx.uri}"))
    return 1 if failed else 0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_report(args: argparse.Namespace) -> int:
    from gatelab.dashboards.claims import load_claims
    from gatelab.dashboards.report import write_report
    from gatelab.dashboards.runs import load
    from gatelab.dashboards.summary_run import attach

    runs = load(args.name, tracking_uri=args.tracking_uri, experiment=args.experiment)
    if not len(runs):
        what = f"tagged {SWEEP_TAG_PREFIX}{args.name}" if args.name else "at all"
        raise ValueError(f"no training runs {what} in experiment {args.experiment!r} of "
                         f"{runs.store.uri}; check the name (sweeps.yaml), --experiment and "
                         "--tracking-uri")
    label = args.name or "all-runs"
    claims = load_claims(args.claims)
    report = write_report(runs, Path(args.out or Path("out") / "reports" / label),
                          claims=claims)
    verdicts = report.table("verdicts")
    print(table(("claim", "at", "verdict", "statistic"), [
        (r["claim"], r["at"], r["verdict"], r["statistic"])
        for r in verdicts.iter_rows(named=True)]))
    print(f"\n{len(runs)} runs of {f'sweep {args.name}' if args.name else 'every sweep'}: "
          f"{len(report.tables)} tables (Markdown + CSV), {len(report.plots)} plots in "
          f"{report.out}")
    if args.name and not args.no_attach:
        run_id = attach(report, runs.store.uri, args.experiment, args.name)
        print(f"Attached to MLflow: summary run {run_id} (experiment {args.experiment!r})")
    print(f"Report: {report.html_path.resolve()}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from gatelab.cli.sweep_text import ui_link
    from gatelab.contract import resolve_tracking_uri, sqlite_path
    from gatelab.dashboards.ui import serve

    uri = resolve_tracking_uri(args.tracking_uri)
    db = sqlite_path(uri)
    landing = ""
    if db is None or db.is_file():  # the training-runs view of the experiment (see ui_link)
        landing = ui_link(MlflowClient(uri), args.experiment, base="")
    return serve(args.tracking_uri, args.port, landing=landing)


def _parse_value(text: str) -> object:
    import yaml

    return yaml.safe_load(text)


class _Renamed(argparse.Action):
    """A flag that was renamed: fails with a message naming the new spelling."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: object):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        parser.error(f"{option_string} was renamed: use {self.new}")


TRACKING_HELP = ("MLflow URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the "
                 "current directory)")


def _add_run_places(p: argparse.ArgumentParser) -> None:
    """The flags of commands that train: where runs are recorded and kept, and progress."""
    p.add_argument("--tracking-uri", help=TRACKING_HELP)
    p.add_argument("--experiment", default="gatelab")
    p.add_argument("--work-dir", default=".gatelab", help="this machine's folder for "
                   "checkpoints and caches (default .gatelab)")
    p.add_argument("--storage", metavar="PATH_OR_URI",
                   help="where checkpoints, leases and the token cache live for every node: a "
                   "path all nodes mount, or an fsspec URI (default: $GATELAB_STORAGE, else "
                   "--work-dir)")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    from gatelab.model.attention_ops import KernelChoice
    from gatelab.runners.run.numerics import PrecisionChoice

    parser = argparse.ArgumentParser(
        prog="gatelab", description="Gated-attention ablations at small scale."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="every variant, with the parameters it adds")
    p.add_argument("--json", action="store_true", help="print a JSON array of objects")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="the resolved spec of one variant")
    p.add_argument("variant")
    p.add_argument("--size", default="tiny", help="size preset to resolve at (default tiny)")
    p.add_argument("--preset", action=_Renamed, new="--size SIZE")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("validate", help="check spec files; non-zero exit if any is invalid")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("train", help="train one variant and log it to MLflow")
    p.add_argument("variant")
    p.add_argument("--recipe", default="tiny", help="training recipe (recipes/; default tiny)")
    p.add_argument("--preset", action=_Renamed, new="--recipe NAME (a size: --size SIZE)")
    p.add_argument("--size", help="size preset, overriding the recipe's")
    p.add_argument("--steps", type=int)
    p.add_argument("--tokens", type=int, help="training tokens (overrides --steps)")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any recipe field, e.g. --set data.source=my.txt")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=[c.value for c in PrecisionChoice],
                   help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--backend", default="auto", choices=[c.value for c in KernelChoice],
                   help="attention kernel (auto: flash-attn on CUDA where installed, else SDPA)")
    p.add_argument("--threads", type=int)
    _add_run_places(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="run a named sweep of sweeps.yaml on Ray")
    p.add_argument("name")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its cost only")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.add_argument("--retry-failed", action="store_true", help="rerun runs that failed")
    p.add_argument("--sweeps", help="the sweeps file (default: $GATELAB_SWEEPS, else "
                   "./sweeps.yaml, else the one shipped with gatelab)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a "
                   "local Ray started here)")
    p.add_argument("--study-storage", metavar="URL",
                   help="the LR search's Optuna storage, an SQLAlchemy URL (default: beside a "
                   "SQLite tracking store, else optuna.db in --storage)")
    p.add_argument("--task-retries", type=int, default=2, metavar="N",
                   help="reruns of a run whose worker or node died (default 2; never for a run "
                   "that raised or diverged)")
    p.add_argument("--until-decided", action="store_true",
                   help="add seeds in rounds until every claim the sweep tests is decided "
                   "(group-sequential alpha spending; see README) or --max-seeds is reached")
    p.add_argument("--max-seeds", type=int, metavar="N",
                   help="with --until-decided: the cap on seeds (default: the sweep's "
                   "max_seeds, else twice its seeds); fixed at the first round")
    p.add_argument("--claims", metavar="FILE",
                   help="with --until-decided: the claims file (default: $GATELAB_CLAIMS, "
                   "else ./claims.yaml, else the shipped one)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a field of the sweep, dotted (seeds=[0,1], "
                   "overrides.steps=500); repeatable")
    _add_run_places(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="tables, plots and an HTML report of a sweep's runs")
    p.add_argument("name", nargs="?", help=f"the sweep (runs tagged {SWEEP_TAG_PREFIX}NAME); "
                   "omitted: every training run of the experiment (not attached to MLflow)")
    p.add_argument("--out", help="output folder (default: out/reports/NAME, or "
                   "out/reports/all-runs)")
    p.add_argument("--tracking-uri", help=TRACKING_HELP)
    p.add_argument("--experiment", default="gatelab")
    p.add_argument("--no-attach", action="store_true",
                   help="do not log the report to MLflow as the sweep's summary run")
    p.add_argument("--claims", metavar="FILE",
                   help="the claims to judge (default: $GATELAB_CLAIMS, else ./claims.yaml, "
                   "else the shipped claims.yaml)")
    p.set_defaults(func=cmd_report)

    from gatelab.cli import compare, new, server

    compare.add_parser(sub, TRACKING_HELP)
    server.add_parser(sub)
    new.add_parser(sub)

    p = sub.add_parser("ui", help="the MLflow UI for the tracking store, on 127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--experiment", default="gatelab", help="the experiment its link opens")
    p.add_argument("--tracking-uri", help=TRACKING_HELP)
    p.set_defaults(func=cmd_ui)

    from gatelab.cli.doctor import cmd_doctor

    p = sub.add_parser("doctor", help="device, torch/CUDA/flash-attn versions, bf16 and compile, "
                       "and the attention kernel of every variant")
    p.set_defaults(func=cmd_doctor)
    for each in sub.choices.values():
        each.add_argument("--ablations", metavar="DIR", action="append",
                          help="a folder of your own variant specs, searched before ./ablations "
                          "and the shipped ones (repeatable)")
    return parser


DEBUG_ENV = "GATELAB_DEBUG"
"""Set (to anything) to print the traceback above an error's one-line message."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.ablations:
        from gatelab.shipped import ABLATIONS_ENV

        os.environ[ABLATIONS_ENV] = os.pathsep.join(str(Path(d).resolve())
                                                    for d in args.ablations)
    # MLflow prints a "View run ... at URL" line for every run ended through a server; gatelab
    # prints its own line per run. Workers started here inherit it (cluster workers: train_task).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow announces every SQLite schema set-up at INFO; users need only its warnings. Its
    # loggers read this at import (which comes later), as do the Ray workers started here.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # "Context impl SQLiteImpl." ...
    # What gatelab's packages report on the way (a checkpoint moved aside, ...): one line each.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"gatelab {args.command}: %(message)s"))
    logging.getLogger("gatelab").addHandler(handler)
    logging.getLogger("gatelab").setLevel(logging.INFO)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(f"gatelab {args.command}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gatelab {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
