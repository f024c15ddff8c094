"""What a report holds: its tables, its plots and where its files are (written by
``report.py``, rendered by ``report_html.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    description: str
    frame: pl.DataFrame


@dataclass(frozen=True)
class Plot:
    key: str
    title: str
    description: str
    path: Path


@dataclass(frozen=True)
class Report:
    """What a report holds and where its files are."""

    title: str
    meta: dict[str, str]
    tables: list[Table]
    plots: list[Plot]
    notes: list[str]
    out: Path
    n_runs: int
    files: list[Path] = field(default_factory=list)

    @property
    def html_path(self) -> Path:
        return self.out / "report.html"

    @property
    def markdown_path(self) -> Path:
        return self.out / "report.md"

    def table(self, key: str) -> pl.DataFrame:
        return next(t.frame for t in self.tables if t.key == key)
