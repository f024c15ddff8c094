"""Errors of the registry: each names the file, the field, the bad value and what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: ``field`` is a dotted path (``gate.position``)."""

    field: str
    message: str
    source: str | None = None
    """Where the bad value came from when it is not the error's file: an override's origin
    (``--lr``, ``sweeps.yaml: smoke.overrides.steps``). ``None``: the file itself."""


class SpecError(ValueError):
    """A spec file that cannot be used. ``str()`` gives one line per problem, each starting
    with where its value came from: the problem's own ``source``, else the file."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{p.source or source}: {p.field}: {p.message}"
                                   for p in problems))


def closest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest known name, or an empty string."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
