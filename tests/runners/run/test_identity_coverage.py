"""Every field of the schema has its identity decided, and every hashed field moves the hash.

A run's identity takes the architecture from the schema's own field list (every field of
``Architecture`` but ``ABSORBED_BY_BACKBONE``, which reach it through the resolved backbone) and
from the recipe's ``HASHED_FIELDS``; its ``NOT_HASHED_FIELDS`` are the others. These tests walk
``dataclasses.fields``, so a field added to either class is tested the day it is added: an
undecided recipe field fails the coverage check, and a field that is declared hashed but does
not reach the hash fails here too.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

import pytest

from gatelab.identity import Lineage
from gatelab.model.build import resolve_backbone
from gatelab.registry.schema import (
    ABSORBED_BY_BACKBONE,
    Architecture,
    GateSpec,
    VariantSpec,
    to_plain,
)
from gatelab.runners.run.numerics import resolve_numerics
from gatelab.runners.run.recipe import HASHED_FIELDS, NOT_HASHED_FIELDS, Recipe, load_recipe
from gatelab.runners.run.setting import architecture_fields, recipe_identity_gaps, resolve_setting

CPU = resolve_numerics("cpu")
REFERENCE = Architecture(gate=GateSpec())
"""The architecture each field is varied from: gated, so that parameter matching has
something to match away."""
STRINGS = {"size": "sink-cpu", "continue_from": "0123456789abcdef"}
"""A second value of each text field, which no rule can make up (a preset, a run hash)."""


def _some(tp: Any, name: str) -> object:
    """A value of type ``tp`` for the field ``name``: its default where it has one."""
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return next(iter(tp))
    if dataclasses.is_dataclass(tp):
        return tp()
    if tp is str:
        return STRINGS[name]
    return {bool: True, int: 2, float: 2.0}[tp]


def _other(tp: Any, value: object, name: str) -> object:
    """A value of type ``tp`` other than ``value``: ``None`` for a set optional field, and the
    first field of a nested dataclass that can be varied without a text example."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _some(inner, name) if value is None else None
    if isinstance(value, enum.Enum):
        return next(m for m in type(value) if m is not value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    if isinstance(value, tuple):
        return value[:-1]
    if isinstance(value, str):
        return STRINGS[name]
    assert dataclasses.is_dataclass(value) and not isinstance(value, type), (name, value)
    hints = typing.get_type_hints(type(value))
    for f in dataclasses.fields(value):
        if hints[f.name] is not str:
            changed = _other(hints[f.name], getattr(value, f.name), f.name)
            return dataclasses.replace(value, **{f.name: changed})
    raise AssertionError(f"{name}: no field of {type(value).__name__} to vary")


def _varied(obj: Any, name: str) -> Any:
    """``obj`` (a dataclass) with its field ``name`` set to another value."""
    hint = typing.get_type_hints(type(obj))[name]
    return dataclasses.replace(obj, **{name: _other(hint, getattr(obj, name), name)})


def _run_hash(arch: Architecture = REFERENCE, recipe: Recipe | None = None) -> str:
    recipe = recipe or load_recipe("tiny")
    parent = (None if recipe.continue_from is None
              else Lineage(recipe.continue_from, "0" * 16, "1" * 16))
    spec = VariantSpec(id="x", description="", hypothesis="", base="baseline",
                       architecture=arch)
    return resolve_setting(spec, recipe, CPU, parent=parent).run_hash


ARCHITECTURE_FIELDS = [f.name for f in dataclasses.fields(Architecture)]
RECIPE_FIELDS = [f.name for f in dataclasses.fields(Recipe)]


def test_every_recipe_field_is_hashed_or_not_exactly_once() -> None:
    assert recipe_identity_gaps() == []
    for name in RECIPE_FIELDS:
        assert (name in HASHED_FIELDS) != (name in NOT_HASHED_FIELDS), name
    assert set(RECIPE_FIELDS) == HASHED_FIELDS | NOT_HASHED_FIELDS


def test_a_recipe_field_added_without_deciding_its_identity_fails_the_check() -> None:
    @dataclasses.dataclass(frozen=True)
    class Grown(Recipe):
        new_knob: int = 0

    gaps = recipe_identity_gaps(Grown)
    assert len(gaps) == 1 and gaps[0].startswith("Grown.new_knob: in neither"), gaps


@pytest.mark.parametrize("name", ARCHITECTURE_FIELDS)
def test_every_architecture_field_is_hashed_itself_or_through_the_backbone(name: str) -> None:
    changed = _varied(REFERENCE, name)
    base = architecture_fields(REFERENCE, resolve_backbone(REFERENCE, "tiny"))
    document = architecture_fields(changed, resolve_backbone(changed, "tiny"))
    if name in ABSORBED_BY_BACKBONE:
        assert name not in document and document["backbone"] != base["backbone"]
    else:
        assert document[name] == to_plain(getattr(changed, name)) != base.get(name)
    assert set(ARCHITECTURE_FIELDS) >= ABSORBED_BY_BACKBONE


@pytest.mark.parametrize("name", ARCHITECTURE_FIELDS)
def test_another_value_of_any_architecture_field_changes_the_run_hash(name: str) -> None:
    assert _run_hash(_varied(REFERENCE, name)) != _run_hash()


@pytest.mark.parametrize("name", [n for n in RECIPE_FIELDS if n in HASHED_FIELDS])
def test_another_value_of_a_hashed_recipe_field_changes_the_run_hash(name: str) -> None:
    recipe = load_recipe("tiny")
    assert _run_hash(recipe=_varied(recipe, name)) != _run_hash(recipe=recipe)


@pytest.mark.parametrize("name", [n for n in RECIPE_FIELDS if n in NOT_HASHED_FIELDS])
def test_another_value_of_a_not_hashed_recipe_field_keeps_the_run_hash(name: str) -> None:
    recipe = load_recipe("tiny")
    assert _run_hash(recipe=_varied(recipe, name)) == _run_hash(recipe=recipe)
