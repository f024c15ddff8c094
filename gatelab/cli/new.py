"""``gatelab new NAME --from VARIANT [--set FIELD=VALUE ...]``: write a variant spec that is a
diff from a named one, validate it, and say how to run it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

from gatelab.cli.options import Subparsers
from gatelab.registry.errors import Problem, SpecError

ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def spec_text(name: str, base: str, sets: list[str], description: str | None,
              hypothesis: str | None) -> tuple[dict[str, object], str]:
    """The new spec's data (``base`` plus the ``--set`` fields, nested by their dots) and its
    YAML text."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE, e.g. "
                             "--set gate.granularity=headwise")
    try:
        changes = OmegaConf.to_container(OmegaConf.from_dotlist(sets))
    except OmegaConfBaseException as err:
        raise ValueError(f"--set {' '.join(sets)}: {str(err).splitlines()[0]}") from None
    assert isinstance(changes, dict)
    changed = ", ".join(sets) or "no change"
    data: dict[str, object] = {
        "base": base,
        "description": description or f"{base} with {changed}",
        "hypothesis": hypothesis or f"What {changed} does to {base}'s loss and internals",
        **{str(k): v for k, v in changes.items()},
    }
    return data, yaml.safe_dump(data, sort_keys=False)


def _origin(field: str, sets: list[str]) -> str | None:
    """The ``--set`` a problem's field came from, if any."""
    for item in sets:
        key = item.split("=", 1)[0]
        if field == key or field.startswith(f"{key}.") or key.startswith(f"{field}."):
            return f"--set {item}"
    return None


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("new", help="write a new variant spec as a diff from an existing one")
    p.add_argument("name", help="the new spec's id (its file name)")
    p.add_argument("--from", dest="base", required=True, metavar="VARIANT",
                   help="the variant it differs from")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="a field to change, dotted (gate.granularity=headwise); repeatable")
    p.add_argument("--description", help="one line: what it is (default: generated)")
    p.add_argument("--hypothesis", help="one line: what you expect (default: generated)")
    p.add_argument("--out", help="the folder (default: ./ablations, which every command "
                   "searches first)")
    return p


def run(args: argparse.Namespace) -> int:
    from gatelab.registry.loader import load_spec, spec_paths
    from gatelab.shipped import ablation_folders

    if not ID.match(args.name):
        raise ValueError(f"{args.name!r} is not a spec id: lowercase letters, digits and "
                         "hyphens (it becomes the file name)")
    known = spec_paths()
    if args.base not in known:
        from gatelab.registry.errors import closest

        raise ValueError(f"--from {args.base!r} is not a known variant"
                         f"{closest(args.base, known)}; see gatelab list")
    folder = Path(args.out or "ablations")
    path = folder / f"{args.name}.yaml"
    if path.exists():
        raise FileExistsError(f"{path} exists: choose another NAME or remove it")
    _, text = spec_text(args.name, args.base, args.set or [], args.description,
                        args.hypothesis)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    try:
        spec = load_spec(path)
    except SpecError as err:
        path.unlink()
        raise SpecError(str(path), [Problem(p.field, p.message, _origin(p.field, args.set or []))
                                    for p in err.problems]) from None
    print(text.rstrip())
    print(f"\nwrote {path} (valid: {spec.id}, a diff from {args.base})")
    found = folder.resolve() in ablation_folders()
    where = "" if found else f" (with --ablations {folder} or $GATELAB_ABLATIONS={folder})"
    print(f"run it: gatelab train {spec.id}{where}; or add it to a sweep's variants in "
          "sweeps.yaml")
    return 0
