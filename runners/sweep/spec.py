"""The schema of ``sweeps.yaml``: named sweeps, each a combination of variants, a recipe,
seeds, a learning-rate grid or an Optuna search, resources per run, and stages (runs that
continue from each run's final weights with some recipe fields changed).

A sweep only *names* things that live elsewhere: variants (``ablations/``), a recipe
(``recipes/``) with overrides, and resources. ``load_sweeps`` validates every sweep of the file
with the same quality of errors as a spec, before anything starts: an unknown variant id names
the closest ids (ids are file names: no spec is loaded to check them), every number is finite
and in its field's bound, and each sweep's recipe is loaded with its overrides, seeds and
learning rates, so a bad value is blamed on ``<sweeps file>: <sweep>.overrides.<key>`` (or
``.seeds[i]``, ``.lrs[i]``). A bad entry fails only its own sweep: ``read_sweeps`` keeps the
valid sweeps of the file beside each invalid one's problems, so ``get_sweep`` runs any valid
sweep of a file that holds a broken one (``load_sweeps`` still checks the whole file). A bad
spec file fails only the sweeps that use it: ``get_sweep`` loads the sweep's named variants,
and every spec when it has a ``select`` (which might have chosen the bad file).

A run's CPU share is what Ray can place: Ray counts resources in units of
``RAY_RESOURCE_UNIT`` (0.0001), so ``cpus`` and ``gpus`` are rounded to it as they are read, and
a run asks for at least ``MIN_CPUS``; ``RunResources.slots`` is how many such runs fit on a
number of cores, counted in those units as Ray counts them.

Sweeps files are plain data: interpolation (``${...}``, resolvers such as ``${oc.env:NAME}``)
is rejected before anything is resolved (``gatelab.registry.loader``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gatelab.registry.errors import Problem, SpecError, closest
from gatelab.registry.from_dict import Bound, bounded, from_dict
from gatelab.registry.loader import load_all, load_all_valid, load_variant, plain_data, spec_paths
from gatelab.registry.schema import Position, VariantSpec
from gatelab.runners.run.recipe import (
    LR_BOUND,
    SEED_BOUND,
    Recipe,
    derive_recipe,
    load_recipe,
    recipe_names,
)
from gatelab.set_values import yaml_problem
from gatelab.shipped import sweeps_file

logger = logging.getLogger("gatelab")


@dataclass(frozen=True)
class Selector:
    """Variants chosen by what they are rather than by id; ``None`` fields do not filter."""

    position: Position | None = None
    """Every variant with a gate at this position ("every G1 variant")."""
    paper_table: int | None = bounded(None, Bound(ge=1, le=99))
    """Every variant that reproduces a row of this table of the paper.
    Allowed: >= 1 and <= 99."""
    all: bool = False
    """Every variant in ``ablations/``."""


@dataclass(frozen=True)
class OptunaSearch:
    """A log-uniform search of the peak learning rate, per variant, with Optuna's TPE."""

    trials: int = bounded(8, Bound(ge=1, le=100_000))
    """Trials per variant (a resumed study runs only the missing ones).
    Allowed: >= 1 and <= 100_000."""
    lr_min: float = bounded(1e-4, LR_BOUND)
    """Lowest learning rate searched, below ``lr_max``. Allowed: > 0 and <= 10."""
    lr_max: float = bounded(1e-1, LR_BOUND)
    """Highest learning rate searched. Allowed: > 0 and <= 10."""
    parallel: int = bounded(2, Bound(ge=1, le=1024))
    """Trials of one variant in flight at once. Allowed: >= 1 and <= 1024."""
    sampler_seed: int = bounded(0, SEED_BOUND)
    """Seed of the TPE sampler. Allowed: >= 0 and <= 4_294_967_295."""


RAY_RESOURCE_UNIT = 0.0001
"""The granularity of Ray's resource quantities: a request is counted in these units."""
MIN_CPUS = 0.1
"""The smallest CPU share a run may ask for. Each run is a Python process of its own with torch
(about 0.3 GB and a share of a core before it trains anything): more than ten runs to a core
would only queue for that core and fill the memory."""


def ray_quantity(value: float) -> float:
    """``value`` rounded to a whole number of ``RAY_RESOURCE_UNIT``, as Ray will place it."""
    return round(round(value / RAY_RESOURCE_UNIT) * RAY_RESOURCE_UNIT, 4)


@dataclass(frozen=True)
class RunResources:
    """What each run asks Ray for. Never part of a run's identity. ``cpus`` and ``gpus`` are
    rounded to Ray's granularity (``ray_quantity``) when the sweep is read."""

    cpus: float = bounded(1.0, Bound(ge=MIN_CPUS, le=1024))
    """CPUs per run (fractions share one; see ``MIN_CPUS``). Allowed: >= 0.1 and <= 1024."""
    gpus: float = bounded(0.25, Bound(ge=0, le=64))
    """GPUs per run on a node that has GPUs (fractions share one, at least 0.0001 when not 0);
    ignored where none exist. Allowed: >= 0 and <= 64."""
    threads: int | None = bounded(None, Bound(ge=1, le=1024))
    """torch CPU threads per run; ``None``: ``max(1, int(cpus))``. Allowed: >= 1 and <= 1024."""

    def __post_init__(self) -> None:
        for name in ("cpus", "gpus"):
            placed = ray_quantity(getattr(self, name))
            if placed > 0:  # a share that rounds to nothing stays, for the check to name it
                object.__setattr__(self, name, placed)

    def slots(self, cores: float) -> int:
        """How many runs Ray places at once on ``cores`` CPUs (at least 1), counted in Ray's
        units so that the plan's parallelism is Ray's."""
        units = round(cores / RAY_RESOURCE_UNIT) // round(self.cpus / RAY_RESOURCE_UNIT)
        return max(1, int(units))


@dataclass(frozen=True)
class Stage:
    """A run after each run of the sweep that continues from the one before it (the sweep's
    run, or the previous stage's) with some recipe fields changed: Table 5's context extension
    (``seq_len``, ``rope_base``), or an evaluation under YaRN (``yarn``, ``steps: 0``)."""

    name: str
    """What the stage is: the ``gatelab.stage`` tag of its runs and its label in the plan."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Recipe fields (dotted keys) changed from the run it continues from; the rest is that
    run's recipe. Not ``seed``, ``lr`` (the run's own) nor ``continue_from`` (set by the plan)."""


NO_STAGE_OVERRIDES = ("seed", "lr", "continue_from")
"""Recipe fields a stage keeps from the run it continues from."""
PLACEHOLDER_HASH = "0" * 16
"""The parent hash a stage's recipe is checked with before any hash is known."""


@dataclass(frozen=True)
class Sweep:
    description: str
    variants: tuple[str, ...] = ()
    """Variant ids; combined (union) with ``select``."""
    select: Selector | None = None
    recipe: str = "tiny"
    """A recipe name (``recipes/``, found as ``gatelab.shipped`` says)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Recipe fields to change (dotted keys), e.g. ``steps: 150``; checked as the recipe's."""
    seeds: tuple[int, ...] = bounded((0,), SEED_BOUND)
    """Recipe seeds, one run each. Allowed: each >= 0 and <= 4_294_967_295."""
    lrs: tuple[float, ...] = bounded((), LR_BOUND)
    """Peak learning rates to grid over; empty: the recipe's own.
    Allowed: each > 0 and <= 10."""
    search: OptunaSearch | None = None
    """Search the learning rate instead of a grid (then ``lrs`` must be empty)."""
    resources: RunResources = field(default_factory=RunResources)
    claims: tuple[str, ...] = ()
    """Ids of the claims (``claims.yaml``) this sweep tests, the ones ``--until-decided``
    adds seeds for; empty: every claim whose variants the sweep has."""
    max_seeds: int | None = bounded(None, Bound(ge=2, le=1000))
    """``--until-decided``'s default cap on seeds, sized to the sweep's time budget;
    ``None``: twice the sweep's seeds. Allowed: >= 2 and <= 1000."""
    stages: tuple[Stage, ...] = ()
    """Runs after each run, in order, each continuing from the previous one's final weights;
    every run a stage continues from saves its weights (``save_weights``). Empty: none."""


def with_sets(name: str, body: object, sets: Sequence[str]) -> object:
    """``body`` (one sweep's YAML data) with ``--set FIELD=VALUE`` overrides merged in through
    OmegaConf's dotlist parsing (``seeds=[0,1]``, ``overrides.steps=500``)."""
    if not sets:
        return body
    for item in sets:
        if "=" not in item or not item.split("=", 1)[0]:
            raise SpecError(f"--set {item}", [Problem(name, "expected FIELD=VALUE, e.g. "
                                                            "--set overrides.steps=500")])
        value = item.split("=", 1)[1]
        try:
            yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise SpecError(f"--set {item}", [Problem(name, (
                f"{value!r} is not a YAML value ({yaml_problem(err)}): close its quote or "
                "bracket, or quote the whole value"))]) from None
    try:
        merged = OmegaConf.merge(OmegaConf.create(body if isinstance(body, dict) else {}),
                                 OmegaConf.from_dotlist(list(sets)))
    except OmegaConfBaseException as err:
        raise SpecError(f"--set {' '.join(sets)}",
                        [Problem(name, str(err).splitlines()[0])]) from None
    return OmegaConf.to_container(merged, resolve=False)


def _set_origin(problem: Problem, name: str, sets: Sequence[str]) -> Problem:
    """``problem`` blamed on the ``--set`` that wrote its field: one that set the field, a
    field below it, or a field below an unknown one (``--set nonsense.x=1`` makes
    ``nonsense`` unknown)."""
    for item in sets:
        key = f"{name}.{item.split('=', 1)[0]}"
        source = (problem.source or "").rsplit(": ", 1)[-1]  # a recipe field's origin
        if any(where == key or where.startswith((f"{key}.", f"{key}["))
               or key.startswith((f"{where}.", f"{where}["))
               for where in (problem.field, source) if where and where != name):
            return Problem(problem.field, problem.message, f"--set {item}")
    return problem


@dataclass(frozen=True)
class SweepsFile:
    """A sweeps file read sweep by sweep: the valid sweeps, and each invalid one's problems."""

    path: Path
    sweeps: dict[str, Sweep]
    """Every valid sweep, validated with its recipe (specs are not loaded: ``get_sweep``)."""
    problems: dict[str, list[Problem]]
    """By sweep name: what is wrong with each invalid sweep (a ``--set`` it came from named)."""

    def names(self) -> list[str]:
        """Every sweep of the file, valid or not, in the file's order."""
        return [*self.sweeps, *(n for n in self.problems if n not in self.sweeps)]


def read_sweeps(path: Path | None = None, sets: Mapping[str, Sequence[str]] | None = None
                ) -> SweepsFile:
    """Every sweep in the file (``None``: ``gatelab.shipped.sweeps_file()``), each validated
    with its recipe on its own, so one bad entry leaves the others usable. ``sets``: ``--set``
    overrides per sweep name, merged before validation; a problem they cause names the
    ``--set`` it came from. A file that is not a mapping of sweeps raises ``SpecError``."""
    path = sweeps_file(path)
    raw = plain_data(path)
    if not isinstance(raw, dict):
        raise SpecError(str(path), [Problem("<top>", "must map sweep names to sweeps")])
    for name, items in (sets or {}).items():
        if name in raw:
            raw[name] = with_sets(name, raw[name], items)
    sweeps: dict[str, Sweep] = {}
    problems: dict[str, list[Problem]] = {}
    known = set(spec_paths())
    for key, body in raw.items():
        name = str(key)
        found: list[Problem] = []
        sweep = from_dict(Sweep, body, found, name)
        if sweep is not None:
            found += _check(name, sweep, known)
            if sweep.recipe in recipe_names():
                found += _recipe_problems(path, name, sweep)
        if found or sweep is None:
            given = (sets or {}).get(name, ())
            problems[name] = [_set_origin(p, name, given) for p in found]
        else:
            sweeps[name] = sweep
    return SweepsFile(path, sweeps, problems)


def load_sweeps(path: Path | None = None, sets: Mapping[str, Sequence[str]] | None = None
                ) -> dict[str, Sweep]:
    """Every sweep in the file, the whole file checked: ``SpecError`` lists every problem of
    every sweep (``read_sweeps`` keeps the valid ones instead)."""
    file = read_sweeps(path, sets)
    if file.problems:
        raise SpecError(str(file.path), [p for found in file.problems.values() for p in found])
    return file.sweeps


def get_sweep(name: str, path: Path | None = None, sets: Sequence[str] = ()) -> Sweep:
    """The sweep ``name`` of the file, validated, with the specs it uses: ``SpecError``
    (naming the sweep) if its entry is invalid, if a named variant's file is invalid, or if it
    has a ``select`` and any spec file is. Another sweep's bad entry only logs a warning."""
    file = read_sweeps(path, {name: sets} if sets else None)
    if name in file.problems:
        raise SpecError(str(file.path), file.problems[name])
    if name not in file.sweeps:
        raise KeyError(f"unknown sweep {name!r}{closest(name, file.names())} in {file.path}; "
                       f"known: {', '.join(file.names())}")
    for other in file.problems:
        logger.warning("%s: sweep %s is invalid and left out (gatelab sweep %s --dry-run names "
                       "its problems)", file.path, other, other)
    problems = _spec_problems(name, file.sweeps[name])
    if problems:
        raise SpecError(str(file.path), problems)
    return file.sweeps[name]


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
    gpus = sweep.resources.gpus
    if 0 < gpus < RAY_RESOURCE_UNIT:
        problems.append(Problem(f"{name}.resources.gpus", f"{gpus!r} is below Ray's "
                                f"granularity of {RAY_RESOURCE_UNIT}: give 0 (no GPU) or at "
                                f"least {RAY_RESOURCE_UNIT}"))
    if sweep.search is not None and sweep.lrs:
        problems.append(Problem(f"{name}.lrs", "give either an lrs grid or a search, not both"))
    if not sweep.seeds:
        problems.append(Problem(f"{name}.seeds", "needs at least one seed"))
    search = sweep.search
    if search is not None and not search.lr_min < search.lr_max:
        problems.append(Problem(f"{name}.search", f"needs lr_min < lr_max, got lr_min "
                                f"{search.lr_min!r} and lr_max {search.lr_max!r}"))
    for key in ("seed", "lr"):
        if key in sweep.overrides:
            problems.append(Problem(f"{name}.overrides.{key}",
                                    f"set {key}s in the sweep's {key}s field, not in overrides"))
    if sweep.stages and sweep.search is not None:
        problems.append(Problem(f"{name}.stages", "stages continue from a grid sweep's runs; "
                                "an Optuna search's trials have none"))
    seen: set[str] = set()
    for i, stage in enumerate(sweep.stages):
        if not stage.name.strip() or stage.name in seen:
            problems.append(Problem(f"{name}.stages[{i}].name", f"{stage.name!r}: each stage "
                                    "needs a name of its own"))
        seen.add(stage.name)
        for key in NO_STAGE_OVERRIDES:
            if key in stage.overrides:
                problems.append(Problem(f"{name}.stages[{i}].overrides.{key}", "a stage keeps "
                                        f"the {key} of the run it continues from"))
    return problems


def stage_recipe(parent: Recipe, stage: Stage, parent_hash: str,
                 where: str | None = None) -> Recipe:
    """The recipe of ``stage`` after the run of ``parent``'s recipe and hash ``parent_hash``;
    ``where`` (``<sweeps file>: <sweep>.stages[i]``) is blamed for a bad override."""
    overrides = {k: v for k, v in stage.overrides.items() if k not in NO_STAGE_OVERRIDES}
    origins = {k: f"{where or stage.name}.overrides.{k}" for k in overrides}
    return derive_recipe(parent, {**overrides, "continue_from": parent_hash}, origins,
                         f"the recipe stage {stage.name} continues from")


def _recipe_problems(path: Path, name: str, sweep: Sweep) -> list[Problem]:
    """What is wrong with the sweep's recipe as each of its runs would load it: a problem is
    blamed on the override, seed or learning rate that set the field, or on the recipe file.
    ``seed`` and ``lr`` overrides are left out (``_check`` rejects them)."""
    where = f"{path}: {name}"
    overrides = {k: v for k, v in sweep.overrides.items() if k not in ("seed", "lr")}
    origins = {key: f"{where}.overrides.{key}" for key in overrides}
    runs: list[tuple[dict[str, Any], dict[str, str]]] = [({}, {})]
    runs += [({"seed": seed}, {"seed": f"{where}.seeds[{i}]"})
             for i, seed in enumerate(sweep.seeds)]
    runs += [({"lr": lr}, {"lr": f"{where}.lrs[{i}]"}) for i, lr in enumerate(sweep.lrs)]
    problems: list[Problem] = []
    for extra, extra_origins in runs:
        try:
            recipe = load_recipe(sweep.recipe, {**overrides, **extra},
                                 {**origins, **extra_origins})
            for i, stage in enumerate(sweep.stages):
                recipe = stage_recipe(recipe, stage, PLACEHOLDER_HASH, f"{where}.stages[{i}]")
        except SpecError as err:
            for p in err.problems:
                blamed = p if p.source else dataclasses.replace(p, source=err.source)
                if blamed not in problems:
                    problems.append(blamed)
    return problems


def _spec_problems(name: str, sweep: Sweep) -> list[Problem]:
    """The invalid spec files the sweep would read: its named variants' files, and every spec
    file when it has a ``select``."""
    problems: list[Problem] = []
    for i, variant in enumerate(sweep.variants):
        try:
            load_variant(variant)
        except SpecError as err:
            problems += [Problem(f"{name}.variants[{i}]", f"{variant!r} is invalid: "
                                 f"{p.source or err.source}: {p.field}: {p.message}")
                         for p in err.problems]
    if sweep.select is not None:
        _, errors = load_all_valid()
        problems += [Problem(f"{name}.select", f"reads every spec file, and "
                             f"{p.source or err.source} is invalid: {p.field}: {p.message}")
                     for err in errors for p in err.problems]
    return problems


def selected_variants(sweep: Sweep) -> list[VariantSpec]:
    """The sweep's variants: its ids in order, then its selection, without repeats. Only the
    named variants' files are read, and every spec file for a ``select``: an invalid one
    raises its ``SpecError`` (``get_sweep`` reports them all, naming the sweep)."""
    specs = {variant: load_variant(variant) for variant in sweep.variants}
    sel = sweep.select
    if sel is not None:
        for spec in load_all():
            gate = spec.architecture.gate
            by_position = sel.position is not None and gate is not None and (
                gate.position is sel.position)
            by_table = sel.paper_table is not None and any(
                p.table == sel.paper_table for p in spec.paper)
            if sel.all or by_position or by_table:
                specs.setdefault(spec.id, spec)
    return list(specs.values())
