"""Load variant specs from YAML with OmegaConf: resolve each file's ``base``, type and validate it.

A spec file is a diff from its base: its architecture fields are deep-merged over the base's
architecture (``gate: null`` removes a base's gate); the descriptive fields (id, description,
hypothesis, base, paper, sources) are never inherited. Nothing is returned for an invalid file:
``SpecError`` says why.
``load_all`` is strict (the first invalid file raises); ``load_all_valid`` returns the good
specs and the errors of the bad files, so that one bad file fails only what uses it.

Configuration files are plain data. OmegaConf reads the YAML, but interpolation (``${...}``,
including resolvers such as ``${oc.env:NAME}``) is rejected in every spec, recipe and sweeps
file, before anything is resolved: what a file says is what is hashed, logged and recorded, and
no environment value or secret can be pulled into a run's artifacts. ``read_config``,
``interpolations`` and ``plain_data`` enforce this for the recipes and sweeps too.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import GrammarParseError, OmegaConfBaseException

from gatelab.registry.errors import Problem, SpecError, closest
from gatelab.registry.from_dict import from_dict
from gatelab.registry.rules import BOUNDS, check
from gatelab.registry.schema import VariantSpec, architecture_dict
from gatelab.shipped import ablation_folders

_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")

PLAIN_DATA = ("is not allowed: configuration files are plain data (no ${...} interpolation or "
              "resolvers); write the value itself")
"""Why an interpolation is rejected; the end of every such message."""


def read_config(path: Path) -> DictConfig | ListConfig:
    """The YAML file at ``path`` as OmegaConf reads it, nothing resolved. ``SpecError`` if it
    is missing or cannot be parsed (a malformed ``${`` names its field)."""
    source = str(path)
    if not path.is_file():
        raise SpecError(source, [Problem("<file>", "does not exist")])
    try:
        return OmegaConf.load(path)
    except GrammarParseError as err:
        raise SpecError(source, [Problem(err.full_key or "<yaml>", f"looks like an "
                                         f"interpolation ({_first_line(err)}), which {PLAIN_DATA}")]
                        ) from None
    except (OmegaConfBaseException, yaml.YAMLError, ValueError, OSError) as err:
        raise SpecError(source, [Problem("<yaml>", f"cannot be parsed: {err}")]) from None


def interpolations(conf: DictConfig | ListConfig, path: str = "") -> list[Problem]:
    """A problem for every interpolated value in ``conf``, at its dotted field (under
    ``path``), found without resolving any."""
    problems = []
    raw: Any = OmegaConf.to_container(conf, resolve=False)
    keys: list[Any] = list(range(len(raw))) if isinstance(conf, ListConfig) else list(raw)
    for key in keys:
        if isinstance(conf, ListConfig):
            field = f"{path}[{key}]"
        else:
            field = f"{path}.{key}" if path else str(key)
        if OmegaConf.is_interpolation(conf, key):
            problems.append(Problem(field, f"{raw[key]!r} {PLAIN_DATA}"))
        elif isinstance(raw[key], dict | list):
            problems += interpolations(conf[key], field)
    return problems


def plain_data(path: Path) -> object:
    """The YAML file at ``path`` as plain Python data; ``SpecError`` if it is missing, cannot
    be parsed, or interpolates anything."""
    conf = read_config(path)
    problems = interpolations(conf)
    if problems:
        raise SpecError(str(path), problems)
    return OmegaConf.to_container(conf, resolve=False)


def spec_paths(folder: Path | None = None) -> dict[str, Path]:
    """Every spec file by id (file stem), sorted by id: in ``folder``, or else in the search
    order of ``gatelab.shipped.ablation_folders`` (an earlier folder's id wins)."""
    folders = (folder,) if folder is not None else ablation_folders()
    found: dict[str, Path] = {}
    for f in folders:
        for p in sorted(f.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return dict(sorted(found.items()))


def load_spec(path: str | Path, search: tuple[Path, ...] = ()) -> VariantSpec:
    """The validated spec in ``path``. Bases are looked up in the file's own folder, then in
    ``search``, then in the ablation folders (``gatelab.shipped``)."""
    path = Path(path)
    folders = (path.parent, *search, *ablation_folders())
    return _load(path.resolve(), tuple(f.resolve() for f in folders), ())


def load_variant(variant_id: str) -> VariantSpec:
    """The spec with this id in the ablation folders; an error listing close ids otherwise."""
    paths = spec_paths()
    if variant_id not in paths:
        raise KeyError(
            f"unknown variant {variant_id!r}{closest(variant_id, paths)}; "
            f"`gatelab list` shows the {len(paths)} known ids"
        )
    return _load_cached(paths[variant_id])


def load_all(folder: Path | None = None) -> list[VariantSpec]:
    """Every spec (in ``folder``, or in the ablation folders), sorted by id; the first invalid
    file raises."""
    return [_load_cached(p) for p in spec_paths(folder).values()]


def load_all_valid(folder: Path | None = None) -> tuple[list[VariantSpec], list[SpecError]]:
    """Every valid spec (in ``folder``, or in the ablation folders) sorted by id, and the error
    of every invalid file, sorted by id (``err.source`` is the file). A spec whose base is
    invalid is invalid too; its error names the base."""
    specs: list[VariantSpec] = []
    errors: list[SpecError] = []
    for path in spec_paths(folder).values():
        try:
            specs.append(_load_cached(path))
        except SpecError as err:
            errors.append(err)
    return specs, errors


@cache
def _load_cached(path: Path) -> VariantSpec:
    return load_spec(path)


def _load(path: Path, folders: tuple[Path, ...], chain: tuple[str, ...]) -> VariantSpec:
    merged = _merged_dict(path, folders, chain)
    problems: list[Problem] = []
    spec = from_dict(VariantSpec, merged, problems, bounds=BOUNDS)
    if spec is not None:
        problems.extend(check(spec))
    if problems:
        raise SpecError(str(path), problems)
    return spec


def _merged_dict(path: Path, folders: tuple[Path, ...], chain: tuple[str, ...]) -> dict[str, Any]:
    """The file's data merged over its base's architecture, with ``id`` set from the name."""
    source = str(path)
    if path.is_file() and not _ID.match(path.stem):
        raise SpecError(
            source,
            [Problem("<file name>", "a spec id is lowercase letters, digits and hyphens")],
        )
    own = plain_data(path)
    if not isinstance(own, dict):
        raise SpecError(source, [Problem("<top>", "must be a mapping of fields")])
    if "id" in own:
        raise SpecError(source, [Problem("id", "is not written in the file; it is the file name")])
    own["id"] = path.stem
    base_id = own.get("base")
    if base_id is None:
        return {str(k): v for k, v in own.items()}
    if not isinstance(base_id, str):
        raise SpecError(source, [Problem("base", f"expected a spec id, got {base_id!r}")])
    if base_id in (*chain, path.stem):
        cycle = " -> ".join((*chain, path.stem, base_id))
        raise SpecError(source, [Problem("base", f"{base_id!r} makes a cycle: {cycle}")])
    base_path = _find_base(base_id, folders)
    if base_path is None:
        known = {p.stem for f in folders for p in f.glob("*.yaml")}
        raise SpecError(
            source,
            [Problem("base", f"{base_id!r} is not a known spec{closest(base_id, known)}")],
        )
    try:
        base_spec = _load(base_path, folders, (*chain, path.stem))
    except SpecError as err:
        raise SpecError(source, [
            Problem("base", f"{base_id!r} is invalid: {p.source or err.source}: {p.field}: "
                    f"{p.message}") for p in err.problems]) from None
    inherited = architecture_dict(base_spec)
    try:
        merged = OmegaConf.merge(OmegaConf.create(inherited), OmegaConf.create(own))
    except OmegaConfBaseException as err:
        raise SpecError(source, [Problem("<top>", f"cannot be merged over base {base_id!r}: "
                                         f"{_first_line(err)}")]) from None
    data = OmegaConf.to_container(merged, resolve=False)
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items()}


def _find_base(base_id: str, folders: tuple[Path, ...]) -> Path | None:
    for folder in folders:
        candidate = folder / f"{base_id}.yaml"
        if candidate.is_file():
            return candidate
    return None


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__
