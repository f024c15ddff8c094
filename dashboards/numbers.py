"""How the dashboards write a number in text: the verdicts' statistics, the report's sentences
and its table cells all go through ``number`` (the terminal's formatter is the CLI's own,
``gatelab/cli/format.py``).
"""

from __future__ import annotations

import math

MISSING = "-"
"""What stands for a number that does not exist (no interval with one seed, a NaN)."""


def number(x: float | int | None, digits: int = 4, missing: str = MISSING) -> str:
    """``x`` with ``digits`` significant digits (``0.0985``, ``4.5e+04``); an integer as it is;
    ``missing`` where there is no number or it is NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return missing
    if isinstance(x, bool) or not isinstance(x, float):
        return str(x)
    return f"{x:.{digits}g}"
