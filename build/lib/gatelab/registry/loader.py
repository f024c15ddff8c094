"""Load variant specs from YAML with OmegaConf: resolve each file's ``base``, type and validate it.

A spec file is a diff from its base: its architecture fields are deep-merged over the base's
(``gate: null`` removes a base's gate). The descriptive fields (id, description, hypothesis,
paper) are never inherited. Nothing is returned for an invalid file: ``SpecError`` says why.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gatelab.registry.errors import Problem, SpecError, closest
from gatelab.registry.from_dict import from_dict
from gatelab.registry.rules import check
from gatelab.registry.schema import SPEC_ONLY_FIELDS, VariantSpec
from gatelab.shipped import ablation_folders

_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")


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


@cache
def _load_cached(path: Path) -> VariantSpec:
    return load_spec(path)


def _load(path: Path, folders: tuple[Path, ...], chain: tuple[str, ...]) -> VariantSpec:
    merged = _merged_dict(path, folders, chain)
    problems: list[Problem] = []
    spec = from_dict(VariantSpec, merged, problems)
    if spec is not None:
        problems.extend(check(spec))
    if problems:
        raise SpecError(str(path), problems)
    return spec


def _merged_dict(path: Path, folders: tuple[Path, ...], chain: tuple[str, ...]) -> dict[str, Any]:
    """The file's data merged over its base's architecture, with ``id`` set from the name."""
    source = str(path)
    if not path.is_file():
        raise SpecError(source, [Problem("<file>", "does not exist")])
    if not _ID.match(path.stem):
        raise SpecError(
            source,
            [Problem("<file name>", "a spec id is lowercase letters, digits and hyphens")],
        )
    try:
        own = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError, OSError) as err:
        raise SpecError(source, [Problem("<yaml>", f"cannot be parsed: {err}")]) from None
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
    base_spec = _load(base_path, folders, (*chain, path.stem))
    inherited = {
        k: v for k, v in _as_yaml_data(base_spec).items() if k not in SPEC_ONLY_FIELDS
    }
    merged = OmegaConf.merge(OmegaConf.create(inherited), OmegaConf.create(own))
    data = OmegaConf.to_container(merged, resolve=True)
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items()}


def _find_base(base_id: str, folders: tuple[Path, ...]) -> Path | None:
    for folder in folders:
        candidate = folder / f"{base_id}.yaml"
        if candidate.is_file():
            return candidate
    return None


def _as_yaml_data(spec: VariantSpec) -> dict[str, Any]:
    from gatelab.registry.schema import to_plain

    data = to_plain(spec)
    assert isinstance(data, dict)
    return data
