"""Turn plain YAML data into the frozen dataclasses of ``registry/schema.py``.

Every mistake becomes a ``Problem`` naming the dotted field, the bad value, and what is allowed;
all problems of a file are collected before anything is reported.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

from gatelab.registry.errors import Problem, closest

_MISSING = object()


def from_dict(cls: type, data: object, problems: list[Problem], path: str = "") -> Any:
    """``cls`` built from ``data``; on error, appends to ``problems`` and returns ``None``."""
    return _convert(cls, data, problems, path)


def _convert(tp: Any, value: object, problems: list[Problem], path: str) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        (inner,) = args
        return _convert(inner, value, problems, path)
    if value is None:
        problems.append(Problem(path, f"must not be null; expected {_describe(tp)}"))
        return None
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, problems, path)
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
        return tuple(_convert(item_tp, v, problems, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            problems.append(Problem(path, f"expected a mapping, got {_show(value)}"))
            return None
        return {
            _convert(key_tp, k, problems, f"{path}.{k}"):
            _convert(val_tp, v, problems, f"{path}.{k}")
            for k, v in value.items()
        }
    return _convert_scalar(tp, value, problems, path)


def _convert_dataclass(cls: Any, value: object, problems: list[Problem], path: str) -> Any:
    if not isinstance(value, dict):
        problems.append(Problem(path or "<top>", f"expected a mapping, got {_show(value)}"))
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{path}." if path else ""
    for key in value:
        if key not in fields:
            problems.append(
                Problem(
                    f"{prefix}{key}",
                    f"unknown field{closest(str(key), fields)}; "
                    f"allowed fields: {', '.join(fields)}",
                )
            )
    kwargs: dict[str, Any] = {}
    ok = True
    for name, f in fields.items():
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
        kwargs[name] = _convert(hints[name], raw, problems, f"{prefix}{name}")
        ok = ok and len(problems) == before
    return cls(**kwargs) if ok else None


def _convert_scalar(tp: Any, value: object, problems: list[Problem], path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"schema type {tp!r} at {path} is not supported by from_dict")
    problems.append(Problem(path, f"expected {_describe(tp)}, got {_show(value)}"))
    return None


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
