"""``gatelab list [--json]``: every variant, grouped by family, with the parameters it adds
(the rows and the table are ``gatelab.cli.variants``)."""

from __future__ import annotations

import argparse
import json
import sys

from gatelab.cli.options import Subparsers


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("list", help="every variant, with the parameters it adds")
    p.add_argument("--json", action="store_true", help="print a JSON array of objects")
    return p


def run(args: argparse.Namespace) -> int:
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
