"""``gatelab train VARIANT``: train one variant under a recipe (flags and ``--set`` override its
fields), log it to MLflow with a progress bar, and print its summary; a run already recorded for
the same hash is shown, not trained again."""

from __future__ import annotations

import argparse
from pathlib import Path

from gatelab.cli.options import Renamed, Subparsers, add_run_places

OVERRIDE_FLAGS = ("steps", "lr", "seed", "batch_size", "seq_len", "size", "tokens")
"""The recipe fields that have a flag of their own (``--batch-size`` for ``batch_size``)."""


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    from gatelab.model.attention_ops import KernelChoice
    from gatelab.runners.run.numerics import PrecisionChoice

    p = sub.add_parser("train", help="train one variant and log it to MLflow")
    p.add_argument("variant")
    p.add_argument("--recipe", default="tiny", help="training recipe (recipes/; default tiny)")
    p.add_argument("--preset", action=Renamed, new="--recipe NAME (a size: --size SIZE)")
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
    add_run_places(p)
    return p


def overrides_of(args: argparse.Namespace) -> tuple[dict[str, object], dict[str, str]]:
    """The recipe fields the flags and ``--set`` change, and the flag each came from (for
    error messages)."""
    from gatelab.set_values import parse_set

    overrides: dict[str, object] = {}
    origins: dict[str, str] = {}
    for key in OVERRIDE_FLAGS:
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
            origins[key] = "--" + key.replace("_", "-")
    for item in args.set or []:
        key, value = parse_set(item, "data.source=my.txt")
        overrides[key] = value
        origins[key] = f"--set {item}"
    return overrides, origins


def run(args: argparse.Namespace) -> int:
    from gatelab.cli.format import say
    from gatelab.cli.live_view import TrainBar
    from gatelab.cli.train_summary import format_summary
    from gatelab.contract import DONE_STATUSES
    from gatelab.registry.loader import load_variant
    from gatelab.runners.run.lease import LeaseOwner
    from gatelab.runners.run.recipe import load_recipe
    from gatelab.runners.run.resources import Resources
    from gatelab.runners.run.train import train

    overrides, origins = overrides_of(args)
    spec = load_variant(args.variant)
    recipe = load_recipe(args.recipe, overrides, origins)
    resources = Resources(device=args.device, precision=args.precision, backend=args.backend,
                          threads=args.threads, tracking_uri=args.tracking_uri,
                          experiment=args.experiment, work_dir=Path(args.work_dir),
                          storage=args.storage)
    resources.numerics()  # an impossible device or kernel fails before anything starts

    def waiting(owner: LeaseOwner) -> None:
        say(f"gatelab train: this run is being trained by {owner.describe()}; waiting for it "
            "(its result is shown when it ends; Ctrl-C leaves it alone)")

    with TrainBar(spec.id, enabled=not args.no_progress) as bar:
        result = train(spec, recipe, resources, on_progress=bar.update, on_wait=waiting)
    print(format_summary(spec.id, result))
    return 0 if result.status in DONE_STATUSES else 1
