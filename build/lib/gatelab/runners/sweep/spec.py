"""The schema of ``sweeps.yaml``: named sweeps, each a combination of variants, a recipe,
seeds, a learning-rate grid or an Optuna search, and resources per run.

A sweep only *names* things that live elsewhere: variants (``ablations/``), a recipe
(``recipes/``) with overrides, and resources. It is validated on load with the same quality
of errors as a spec: an unknown variant names the closest ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gatelab.registry.errors import Problem, SpecError, closest
from gatelab.registry.from_dict import from_dict
from gatelab.registry.loader import load_all
from gatelab.registry.schema import Position, VariantSpec
from gatelab.runners.run.recipe import recipe_names
from gatelab.shipped import sweeps_file


@dataclass(frozen=True)
class Selector:
    """Variants chosen by what they are rather than by id; ``None`` fields do not filter."""

    position: Position | None = None
    """Every variant with a gate at this position ("every G1 variant")."""
    paper_table: int | None = None
    """Every variant that reproduces a row of this table of the paper."""
    all: bool = False
    """Every variant in ``ablations/``."""


@dataclass(frozen=True)
class OptunaSearch:
    """A log-uniform search of the peak learning rate, per variant, with Optuna's TPE."""

    trials: int = 8
    """Trials per variant (a resumed study runs only the missing ones)."""
    lr_min: float = 1e-4
    lr_max: float = 1e-1
    parallel: int = 2
    """Trials of one variant in flight at once."""
    sampler_seed: int = 0


@dataclass(frozen=True)
class RunResources:
    """What each run asks Ray for. Never part of a run's identity."""

    cpus: float = 1.0
    gpus: float = 0.25
    """GPUs per run on a node that has GPUs (fractions share one); ignored where none exist."""
    threads: int | None = None
    """torch CPU threads per run; ``None``: ``max(1, int(cpus))``."""


@dataclass(frozen=True)
class Sweep:
    description: str
    variants: tuple[str, ...] = ()
    """Variant ids; combined (union) with ``select``."""
    select: Selector | None = None
    recipe: str = "tiny"
    """A recipe name (``recipes/``, found as ``gatelab.shipped`` says)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Recipe fields to change (dotted keys), e.g. ``steps: 150``."""
    seeds: tuple[int, ...] = (0,)
    lrs: tuple[float, ...] = ()
    """Peak learning rates to grid over; empty: the recipe's own."""
    search: OptunaSearch | None = None
    """Search the learning rate instead of a grid (then ``lrs`` must be empty)."""
    resources: RunResources = field(default_factory=RunResources)


def load_sweeps(path: Path | None = None) -> dict[str, Sweep]:
    """Every sweep in the file (``None``: ``gatelab.shipped.sweeps_file()``), validated;
    ``SpecError`` lists every problem."""
    path = sweeps_file(path)
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except FileNotFoundError:
        raise SpecError(str(path), [Problem("<file>", "does not exist")]) from None
    except Exception as err:  # omegaconf/yaml parse errors
        raise SpecError(str(path), [Problem("<yaml>", f"cannot be parsed: {err}")]) from None
    if not isinstance(raw, dict):
        raise SpecError(str(path), [Problem("<top>", "must map sweep names to sweeps")])
    problems: list[Problem] = []
    sweeps: dict[str, Sweep] = {}
    known = {spec.id for spec in load_all()}
    for name, body in raw.items():
        sweep = from_dict(Sweep, body, problems, str(name))
        if sweep is not None:
            problems += _check(str(name), sweep, known)
            sweeps[str(name)] = sweep
    if problems:
        raise SpecError(str(path), problems)
    return sweeps


def get_sweep(name: str, path: Path | None = None) -> Sweep:
    path = sweeps_file(path)
    sweeps = load_sweeps(path)
    if name not in sweeps:
        raise KeyError(f"unknown sweep {name!r}{closest(name, sweeps)} in {path}; "
                       f"known: {', '.join(sweeps)}")
    return sweeps[name]


def _check(name: str, sweep: Sweep, known: set[str]) -> list[Problem]:

    problems = []
    for i, variant in enumerate(sweep.variants):
        if variant not in known:
            problems.append(Problem(f"{name}.variants[{i}]",
                                    f"{variant!r} is not a known variant{closest(variant, known)}"))
    if not sweep.variants and sweep.select is None:
        problems.append(Problem(f"{name}.variants", "name at least one variant, or a select"))
    if sweep.recipe not in recipe_names():
        problems.append(Problem(f"{name}.recipe", f"{sweep.recipe!r} is not a recipe"
                                f"{closest(sweep.recipe, recipe_names())}; known: "
                                + ", ".join(recipe_names())))
    if sweep.search is not None and sweep.lrs:
        problems.append(Problem(f"{name}.lrs", "give either an lrs grid or a search, not both"))
    if not sweep.seeds:
        problems.append(Problem(f"{name}.seeds", "needs at least one seed"))
    if sweep.search is not None and not 0 < sweep.search.lr_min < sweep.search.lr_max:
        problems.append(Problem(f"{name}.search", "needs 0 < lr_min < lr_max"))
    for key in ("seed", "lr"):
        if key in sweep.overrides:
            problems.append(Problem(f"{name}.overrides.{key}",
                                    f"set {key}s in the sweep's {key}s field, not in overrides"))
    return problems


def selected_variants(sweep: Sweep) -> list[VariantSpec]:
    """The sweep's variants: its ids in order, then its selection, without repeats."""
    specs = {spec.id: spec for spec in load_all()}
    chosen = list(sweep.variants)
    sel = sweep.select
    if sel is not None:
        for spec in specs.values():
            by_position = sel.position is not None and spec.gate is not None and (
                spec.gate.position is sel.position)
            by_table = sel.paper_table is not None and any(
                p.table == sel.paper_table for p in spec.paper)
            if (sel.all or by_position or by_table) and spec.id not in chosen:
                chosen.append(spec.id)
    return [specs[v] for v in chosen]
