"""``gatelab validate FILE...``: check spec files, name each invalid one with its field, and
note a spec that builds the same model as another (a sweep naming both trains it once)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gatelab.cli.options import Subparsers


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("validate", help="check spec files; non-zero exit if any is invalid")
    p.add_argument("files", nargs="+")
    return p


def run(args: argparse.Namespace) -> int:
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
