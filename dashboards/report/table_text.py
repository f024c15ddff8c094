"""Tables as text for people: Markdown and HTML renderings of the typed result frames.

A column ``X`` followed by ``X_ci95`` is shown as one cell ``X ± ci`` (the 95% interval);
p-values as ``0.042`` or ``<0.001``; learning rates as written; other numbers with four
significant digits (``dashboards/numbers.py``); the grouping ids (``setting_id``,
``lr_setting_id``) are left out; missing values are ``–``; a ``verdict`` cell carries its
verdict's CSS class (``Verdict.css_class``). The CSV files keep the typed columns as they are.
"""

from __future__ import annotations

import html
from typing import Any

import polars as pl

from gatelab.dashboards.numbers import number
from gatelab.metrics import Metric
from gatelab.verdict import Verdict

HIDDEN = ("setting_id", "lr_setting_id")
MISSING = "–"


def _is_p(column: str) -> bool:
    return column == "p_value" or column.startswith("p_")


def format_value(column: str, value: Any) -> str:
    """One cell as text."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if column in ("added_params", Metric.PARAMS) else str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return MISSING
        if _is_p(column):
            return "<0.001" if value < 0.001 else f"{value:.3f}"
        if column in ("lr", "best_lr", "largest_stable_lr", "smallest_diverging_lr"):
            return f"{value:g}"
        return number(value, 4, MISSING)
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def display_rows(frame: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and text cells, with ``X_ci95`` merged into ``X``."""
    columns = [c for c in frame.columns if c not in HIDDEN and
               not (c.endswith("_ci95") and c[:-len("_ci95")] in frame.columns)]
    rows = []
    for record in frame.iter_rows(named=True):
        cells = []
        for col in columns:
            text = format_value(col, record[col])
            ci = record.get(f"{col}_ci95")
            if ci is not None and record[col] is not None and ci == ci:
                text += f" ± {format_value(col, ci)}"
            cells.append(text)
        rows.append(cells)
    return columns, rows


def markdown_table(frame: pl.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""
    headers, rows = display_rows(frame)
    if not rows:
        return "_no rows_"

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *map(line, rows)])


def html_table(frame: pl.DataFrame, css_class: str = "table") -> str:
    """An HTML ``<table>``; a ``verdict`` cell gets a class named after its verdict."""
    headers, rows = display_rows(frame)
    if not rows:
        return "<p><em>no rows</em></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for cells in rows:
        tds = []
        for header, cell in zip(headers, cells, strict=True):
            cls = f' class="{Verdict(cell).css_class}"' if header == "verdict" else ""
            tds.append(f"<td{cls}>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f'<table class="{css_class}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")
