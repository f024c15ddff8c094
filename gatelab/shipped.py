"""Where gatelab finds its YAML: the user's own folders and files first, then the copies that
ship with gatelab (package data, read through ``importlib.resources``).

Search order, for each kind:

- variant specs: the folders in ``$GATELAB_ABLATIONS`` (``--ablations``; several joined by
  ``os.pathsep``; each must exist), then ``./ablations``, then the shipped
  ``gatelab.ablations``; an id found in an earlier folder hides the same id later;
- recipes: ``$GATELAB_RECIPES`` (``--recipes``), then ``./recipes``, then the shipped ones;
- the sweeps file: ``--sweeps FILE``, else ``$GATELAB_SWEEPS``, else ``./sweeps.yaml``, else
  the shipped ``sweeps.yaml``;
- the claims file: ``--claims FILE``, else ``$GATELAB_CLAIMS``, else ``./claims.yaml``, else
  the shipped one (``gatelab.dashboards.verdicts``).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

ABLATIONS_ENV = "GATELAB_ABLATIONS"
RECIPES_ENV = "GATELAB_RECIPES"
SWEEPS_ENV = "GATELAB_SWEEPS"
CLAIMS_ENV = "GATELAB_CLAIMS"


def shipped_ablations() -> Path:
    """The variant specs that ship with gatelab."""
    return Path(str(files("gatelab.ablations")))


def shipped_recipes() -> Path:
    return Path(str(files("gatelab.recipes")))


def shipped_sweeps() -> Path:
    return Path(str(files("gatelab").joinpath("sweeps.yaml")))


def _folders(env: str, local: str, shipped: Path, flag: str | None = None
             ) -> tuple[Path, ...]:
    """The folders of ``$env``, ``./local`` and ``shipped`` that exist, in order; with ``flag``
    (the option that sets ``$env``), a folder named in ``$env`` that is not one is an error."""
    given = [Path(p) for p in os.environ.get(env, "").split(os.pathsep) if p]
    for folder in given if flag else []:
        if not folder.is_dir():
            what = "not a folder" if folder.exists() else "no such folder"
            raise FileNotFoundError(f"{flag} {folder} (${env}): {what}; give a folder of "
                                    "variant spec files, or leave it out")
    candidates = [*given, Path.cwd() / local, shipped]
    out: list[Path] = []
    for folder in candidates:
        resolved = folder.resolve()
        if resolved.is_dir() and resolved not in out:
            out.append(resolved)
    return tuple(out)


def ablation_folders() -> tuple[Path, ...]:
    """Folders searched for variant specs, in order (see the module docstring)."""
    return _folders(ABLATIONS_ENV, "ablations", shipped_ablations(), "--ablations")


def recipe_folders() -> tuple[Path, ...]:
    return _folders(RECIPES_ENV, "recipes", shipped_recipes())


def shipped_claims() -> Path:
    return Path(str(files("gatelab.dashboards.verdicts").joinpath("claims.yaml")))


def _file(given: str | Path | None, env: str, local: str, shipped: Path) -> Path:
    """``given``, else ``$env``, else ``./local`` where it exists, else ``shipped``."""
    if given is not None:
        return Path(given).resolve()
    if os.environ.get(env):
        return Path(os.environ[env]).resolve()
    here = Path.cwd() / local
    return here.resolve() if here.is_file() else shipped


def sweeps_file(given: str | Path | None = None) -> Path:
    """The sweeps file to read (see the module docstring)."""
    return _file(given, SWEEPS_ENV, "sweeps.yaml", shipped_sweeps())


def claims_file(given: str | Path | None = None) -> Path:
    """The claims file to read (see the module docstring)."""
    return _file(given, CLAIMS_ENV, "claims.yaml", shipped_claims())
