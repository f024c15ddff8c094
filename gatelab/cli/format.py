"""Text for the terminal, shared by the commands: the one number format, counts, aligned tables,
the verdict table (``gatelab report`` and ``gatelab sweep --until-decided``), and ``say`` for a
progress message on stderr."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence

VERDICT_COLUMNS = ("claim", "at", "verdict", "statistic")
"""The columns of the verdict table, as the dashboards' verdicts frame names them."""


def number(x: object, digits: int = 4) -> str:
    """A table cell: a float to ``digits`` significant digits, ``None`` as ``-``, anything
    else as ``str`` does."""
    return "-" if x is None else f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def human_count(n: int | None) -> str:
    """1234567 -> '1.23M'; None -> '-'."""
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{sign}{n / size:.3g}{unit}"
    return f"{sign}{n}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned text table with a header rule."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict_table(rows: Iterable[Mapping[str, object]]) -> str:
    """One line per claim and setting: its verdict and the statistic behind it (rows of the
    dashboards' verdicts frame, e.g. ``frame.iter_rows(named=True)``)."""
    return table(VERDICT_COLUMNS, [tuple(r[c] for c in VERDICT_COLUMNS) for r in rows])


def say(message: str) -> None:
    """A progress message on stderr, flushed at once (stdout keeps the results)."""
    print(message, file=sys.stderr, flush=True)
