"""``gatelab show VARIANT [--size SIZE]``: a variant's resolved spec, its hash, the backbone it
resolves to at a size, and its parameter count there."""

from __future__ import annotations

import argparse

from gatelab.cli.options import Renamed, Subparsers


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("show", help="the resolved spec of one variant")
    p.add_argument("variant")
    p.add_argument("--size", default="tiny", help="size preset to resolve at (default tiny)")
    p.add_argument("--preset", action=Renamed, new="--size SIZE")
    return p


def run(args: argparse.Namespace) -> int:
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
