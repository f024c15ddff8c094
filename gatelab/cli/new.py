"""``gatelab new NAME --from VARIANT [--set FIELD=VALUE ...]``: write a variant spec that is a
diff from a named one, validate it, and say how to run it.

Nothing is written when anything is wrong, and each refusal is one line naming the argument:
a NAME that is no spec id (lowercase letters, digits and hyphens, at most ``MAX_ID_CHARS``: it
becomes a file name and every recorded run's ``gatelab.variant``), a ``--set`` that is not
``FIELD=VALUE`` with a YAML value, an invalid spec. Two refusals can be overridden with
``--force``: a file that exists (it is replaced), and a NAME that is already a variant's id in
another file of the search path (a shipped one included): the new file would hide that spec,
or be hidden by it, and two architectures would be recorded under one id (the dashboards then
show that id's runs as one row per architecture, ``gatelab.dashboards.store.identity``)."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import yaml

from gatelab.cli.options import Subparsers
from gatelab.registry.errors import Problem, SpecError

ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
MAX_ID_CHARS = 64
"""The longest spec id ``new`` writes: a file name, a tag on every run and a column of every
table."""


def spec_text(name: str, base: str, sets: list[str], description: str | None,
              hypothesis: str | None) -> tuple[dict[str, object], str]:
    """The new spec's data (``base`` plus the ``--set`` fields, nested by their dots) and its
    YAML text."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from gatelab.set_values import parse_set

    for item in sets:
        parse_set(item, "gate.granularity=headwise")
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
    p.add_argument("--force", action="store_true",
                   help="replace an existing file, or reuse the id of a variant in another file "
                   "(a shipped one included), which the new spec then hides or is hidden by")
    return p


def _outermost_missing(folder: Path) -> Path | None:
    """The outermost folder of ``folder``'s path that does not exist (what ``mkdir(parents=True)``
    would create first); ``None`` when ``folder`` exists."""
    if folder.exists():
        return None
    missing = folder.absolute()
    while not missing.parent.exists():
        missing = missing.parent
    return missing


def check_name(name: str) -> None:
    """``ValueError`` when ``name`` cannot be a spec id (and so a file name)."""
    if len(name) > MAX_ID_CHARS:
        raise ValueError(f"NAME {name[:20]}... is {len(name)} characters: a spec id has at most "
                         f"{MAX_ID_CHARS} (it becomes the file name and every run's tag)")
    if not ID.match(name):
        raise ValueError(f"NAME {name!r} is not a spec id: lowercase letters, digits and "
                         "hyphens, starting with a letter or digit (it becomes the file name)")


def check_target(path: Path, name: str, known: dict[str, Path], force: bool) -> str | None:
    """``FileExistsError`` when ``path`` exists, ``ValueError`` when ``name`` is the id of a
    spec in another file, unless ``force``; with ``force``, the note to print about either."""
    if path.exists():
        if not force:
            raise FileExistsError(f"{path} exists: choose another NAME, or pass --force to "
                                  "replace it")
        return f"replaced {path}"
    other = known.get(name)
    if other is None or other.resolve() == path.resolve():
        return None
    if not force:
        raise ValueError(f"NAME {name!r} is already a variant's id ({other}): a second spec of "
                         "that id would hide it or be hidden by it, and runs of both would be "
                         "recorded under one name; choose another NAME, or pass --force")
    return f"{path} has the id of {other}: one of them now hides the other"


def run(args: argparse.Namespace) -> int:
    from gatelab.registry.loader import load_spec, spec_paths
    from gatelab.shipped import ablation_folders

    check_name(args.name)
    known = spec_paths()
    if args.base not in known:
        from gatelab.registry.errors import closest

        raise ValueError(f"--from {args.base!r} is not a known variant"
                         f"{closest(args.base, known)}; see gatelab list")
    folder = Path(args.out or "ablations")
    path = folder / f"{args.name}.yaml"
    note = check_target(path, args.name, known, args.force)
    _, text = spec_text(args.name, args.base, args.set or [], args.description,
                        args.hypothesis)
    created = _outermost_missing(folder)
    before = path.read_text() if path.exists() else None
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    try:
        spec = load_spec(path)
    except SpecError as err:
        if before is None:
            path.unlink()
        else:
            path.write_text(before)
        if created is not None:
            shutil.rmtree(created)
        raise SpecError(str(path), [Problem(p.field, p.message, _origin(p.field, args.set or []))
                                    for p in err.problems]) from None
    print(text.rstrip())
    print(f"\nwrote {path} (valid: {spec.id}, a diff from {args.base})")
    if note:
        print(f"note: {note}")
    found = folder.resolve() in ablation_folders()
    where = "" if found else f" (with --ablations {folder} or $GATELAB_ABLATIONS={folder})"
    print(f"run it: gatelab train {spec.id}{where}; or add it to a sweep's variants in "
          "sweeps.yaml")
    return 0
