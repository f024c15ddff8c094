"""Turn plain YAML data into frozen dataclasses (the spec schema, recipes, sweeps).

Every mistake becomes a ``Problem`` naming the dotted field, the bad value, and what is allowed;
all problems of a file are collected before anything is reported. Every number read must be
finite (no ``.nan``, ``.inf``); a field declared with ``bounded`` (or given a bound by the
caller, as the spec's are in ``registry/rules.py``) must also lie in its ``Bound``, which is
checked here, where the field is read (for a tuple: each item). A field declared with
``inlined`` holds a dataclass whose fields are written at its parent's level (the spec's
architecture: a spec file is flat), as ``gatelab.registry.schema.to_plain`` writes them.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from gatelab.registry.errors import Problem, closest

_MISSING = object()
_T = TypeVar("_T")

BOUND_KEY = "gatelab.bound"
"""The key of a field's ``Bound`` in its ``dataclasses.field`` metadata."""
INLINED_KEY = "gatelab.inlined"
"""The key, in a field's ``dataclasses.field`` metadata, that marks it ``inlined``."""


@dataclass(frozen=True)
class Bound:
    """The allowed range of a number: at most one lower (``ge``/``gt``) and one upper
    (``le``/``lt``) limit. ``str()`` is how errors and docstrings state it (``> 0 and <= 10``)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __post_init__(self) -> None:
        if self.ge is not None and self.gt is not None:
            raise TypeError("a Bound takes ge or gt, not both")
        if self.le is not None and self.lt is not None:
            raise TypeError("a Bound takes le or lt, not both")

    def allows(self, value: float) -> bool:
        """Whether ``value`` (a finite number) lies in the range."""
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le)
                and (self.lt is None or value < self.lt))

    def __str__(self) -> str:
        limits = [f"{op} {_number(v)}" for op, v in
                  ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                  if v is not None]
        return " and ".join(limits) or "any finite number"


def bounded(default: _T, bound: Bound) -> _T:
    """A dataclass field with ``default`` whose value ``from_dict`` checks against ``bound``
    (each item of a tuple; ``None`` is not checked). State the bound in the field's docstring
    as ``Allowed: <str(bound)>``: tests compare the two."""
    return dataclasses.field(default=default, metadata={BOUND_KEY: bound})


def inlined(factory: Callable[[], _T]) -> _T:
    """A dataclass field, ``factory()`` by default, whose own fields are read from (and written
    to, by ``to_plain``) its parent's mapping, as if they were the parent's: a flat file for a
    nested type. Errors name them as the parent's (``gate.position``, not
    ``architecture.gate.position``)."""
    return dataclasses.field(default_factory=factory, metadata={INLINED_KEY: True})


def is_inlined(f: dataclasses.Field[Any]) -> bool:
    """Whether the field ``f`` was declared with ``inlined``."""
    return bool(f.metadata.get(INLINED_KEY))


def written_names(cls: type) -> list[str]:
    """The names a mapping of dataclass ``cls`` is written with, in order: its fields, an
    ``inlined`` field's own names in its place."""
    hints = typing.get_type_hints(cls)
    return [name for f in dataclasses.fields(cls)
            for name in (written_names(hints[f.name]) if is_inlined(f) else [f.name])]


def _check_number(value: float, bound: Bound | None, path: str) -> Problem | None:
    """The problem with a number read at ``path``: not finite, or outside ``bound``."""
    if isinstance(value, float) and not math.isfinite(value):
        allowed = f"must be {bound}" if bound is not None else "expected a finite number"
        return Problem(path, f"{value!r} is not a finite number; {allowed}")
    if bound is not None and not bound.allows(value):
        return Problem(path, f"{value!r} is out of range: must be {bound}")
    return None


def from_dict(cls: type, data: object, problems: list[Problem], path: str = "",
              bounds: Mapping[str, Bound] | None = None) -> Any:
    """``cls`` built from ``data``; on error, appends to ``problems`` and returns ``None``.
    ``bounds`` adds a ``Bound`` by dotted field (``capacity.q_heads_mult``) to fields declared
    without ``bounded``."""
    return _convert(cls, data, problems, path, None, bounds or {})


def _convert(tp: Any, value: object, problems: list[Problem], path: str,
             bound: Bound | None, bounds: Mapping[str, Bound]) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        (inner,) = args
        return _convert(inner, value, problems, path, bound, bounds)
    if value is None:
        problems.append(Problem(path, f"must not be null; expected {_describe(tp)}"))
        return None
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, problems, path, bounds)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = [m.value for m in tp]
        if value in allowed:
            return tp(value)
        hint = closest(str(value), allowed) if isinstance(value, str) else ""
        problems.append(
            Problem(path, f"{value!r} is not allowed{hint}; allowed: {', '.join(allowed)}")
        )
        return None
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, list | tuple):
            problems.append(Problem(path, f"expected a list, got {_show(value)}"))
            return None
        return tuple(_convert(item_tp, v, problems, f"{path}[{i}]", bound, bounds)
                     for i, v in enumerate(value))
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            problems.append(Problem(path, f"expected a mapping, got {_show(value)}"))
            return None
        return {
            _convert(key_tp, k, problems, f"{path}.{k}", None, bounds):
            _convert(val_tp, v, problems, f"{path}.{k}", None, bounds)
            for k, v in value.items()
        }
    return _convert_scalar(tp, value, problems, path, bound)


def _convert_dataclass(cls: Any, value: object, problems: list[Problem], path: str,
                       bounds: Mapping[str, Bound]) -> Any:
    if not isinstance(value, dict):
        problems.append(Problem(path or "<top>", f"expected a mapping, got {_show(value)}"))
        return None
    names = written_names(cls)
    prefix = f"{path}." if path else ""
    for key in value:
        if key not in names:
            problems.append(
                Problem(
                    f"{prefix}{key}",
                    f"unknown field{closest(str(key), names)}; "
                    f"allowed fields: {', '.join(names)}",
                )
            )
    return _convert_fields(cls, value, problems, prefix, bounds)


def _convert_fields(cls: Any, value: dict[Any, Any], problems: list[Problem], prefix: str,
                    bounds: Mapping[str, Bound]) -> Any:
    """``cls`` from the known keys of ``value`` (an ``inlined`` field from the same mapping),
    or ``None`` after appending its problems."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    ok = True
    for f in dataclasses.fields(cls):
        name = f.name
        if is_inlined(f):
            before = len(problems)
            kwargs[name] = _convert_fields(hints[name], value, problems, prefix, bounds)
            ok = ok and len(problems) == before
            continue
        raw = value.get(name, _MISSING)
        if raw is _MISSING:
            no_default = (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            if no_default:
                problems.append(Problem(f"{prefix}{name}", "is required but missing"))
                ok = False
            continue
        before = len(problems)
        bound = f.metadata.get(BOUND_KEY, bounds.get(f"{prefix}{name}"))
        kwargs[name] = _convert(hints[name], raw, problems, f"{prefix}{name}", bound, bounds)
        ok = ok and len(problems) == before
    return cls(**kwargs) if ok else None


def _convert_scalar(tp: Any, value: object, problems: list[Problem], path: str,
                    bound: Bound | None) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int or tp is float:
        number = int if tp is int else int | float
        if isinstance(value, number) and not isinstance(value, bool):
            problem = _check_number(value, bound, path)
            if problem is not None:
                problems.append(problem)
                return None
            return value if tp is int else float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"schema type {tp!r} at {path} is not supported by from_dict")
    problems.append(Problem(path, f"expected {_describe(tp)}, got {_show(value)}"))
    return None


def _number(value: float) -> str:
    """``1_000_000`` for a large int (as YAML and Python may write it), ``1024``, ``0.5``."""
    return f"{value:_}" if isinstance(value, int) and abs(value) >= 10_000 else repr(value)


def _describe(tp: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(m.value for m in tp)
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _show(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"
