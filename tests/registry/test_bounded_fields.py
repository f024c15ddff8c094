"""Every number of a configuration file is finite and bounded: the bound is declared once, next
to its field, checked where the field is read, and stated in the field's docstring."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass

import pytest

from gatelab.registry.backbone import YarnScaling
from gatelab.registry.errors import Problem
from gatelab.registry.from_dict import BOUND_KEY, Bound, bounded, from_dict
from gatelab.registry.rules import BOUNDS
from gatelab.registry.schema import Architecture
from gatelab.runners.run.recipe import DataRecipe, Recipe
from gatelab.runners.sweep.spec import OptunaSearch, RunResources, Selector, Sweep

CONFIG_TYPES = (Recipe, DataRecipe, YarnScaling, Sweep, Selector, OptunaSearch, RunResources)
"""The dataclasses read from recipes and sweeps files, whose numbers carry ``bounded``."""


def _number_type(tp: object) -> type | None:
    """``int`` or ``float`` for a number field (optional, or a tuple of numbers), else None."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union, tuple):
        (tp,) = [a for a in typing.get_args(tp) if a not in (type(None), Ellipsis)]
    return tp if tp in (int, float) else None


def _field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it), whitespace collapsed."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    assert isinstance(body, ast.ClassDef)
    docs = {}
    for node, after in zip(body.body, body.body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)):
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


@pytest.mark.parametrize("cls", CONFIG_TYPES, ids=lambda cls: cls.__name__)
def test_every_number_has_a_bound_stated_in_its_docstring(cls: type) -> None:
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    numbers = [f for f in dataclasses.fields(cls) if _number_type(hints[f.name])]
    assert numbers or cls is DataRecipe or cls is Sweep
    for f in numbers:
        bound = f.metadata.get(BOUND_KEY)
        assert isinstance(bound, Bound), f"{cls.__name__}.{f.name} has no bound"
        assert f"{bound}" in docs.get(f.name, ""), (
            f"{cls.__name__}.{f.name}: the docstring does not state 'Allowed: {bound}'")
        assert "Allowed:" in docs[f.name]


@pytest.mark.parametrize("field", sorted(BOUNDS))
def test_every_spec_bound_names_a_number_of_the_schema(field: str) -> None:
    tp: object = Architecture
    for name in field.split("."):
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        tp = typing.get_type_hints(args[0])[name]
    assert _number_type(tp) is not None, field


def test_bounds_read_as_their_text() -> None:
    assert str(Bound(gt=0, le=10)) == "> 0 and <= 10"
    assert str(Bound(ge=1, le=1_000_000_000)) == ">= 1 and <= 1_000_000_000"
    assert str(Bound(ge=0, lt=1)) == ">= 0 and < 1"
    with pytest.raises(TypeError, match="ge or gt"):
        Bound(ge=0, gt=0)


@dataclass(frozen=True)
class _Toy:
    n: int = bounded(1, Bound(ge=1, le=10))
    xs: tuple[float, ...] = bounded((), Bound(gt=0))
    y: float | None = None


@pytest.mark.parametrize(("data", "expected"), [
    ({"n": 0}, "n: 0 is out of range: must be >= 1 and <= 10"),
    ({"n": 10**400}, "is out of range: must be >= 1 and <= 10"),
    ({"n": 2.0}, "n: expected an integer, got 2.0 (float)"),
    ({"xs": [1.0, -1]}, "xs[1]: -1 is out of range: must be > 0"),
    ({"xs": [float("nan")]}, "xs[0]: nan is not a finite number; must be > 0"),
    ({"y": float("-inf")}, "y: -inf is not a finite number; expected a finite number"),
])
def test_from_dict_checks_each_number_as_it_reads_it(data: dict[str, object],
                                                     expected: str) -> None:
    problems: list[Problem] = []
    assert from_dict(_Toy, data, problems) is None
    assert len(problems) == 1
    assert expected in f"{problems[0].field}: {problems[0].message}"


def test_a_caller_bound_applies_by_dotted_field() -> None:
    problems: list[Problem] = []
    assert from_dict(_Toy, {"y": 5.0}, problems, bounds={"y": Bound(le=1)}) is None
    assert problems == [Problem("y", "5.0 is out of range: must be <= 1")]
    assert from_dict(_Toy, {"y": 0.5, "n": 10}, problems, bounds={"y": Bound(le=1)}) == _Toy(
        n=10, y=0.5)
