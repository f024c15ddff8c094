"""What a report holds: its headline figures and sentences, its tables, its plots and where its
files are (written by ``write.py``, rendered by ``page.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from gatelab.verdict import Verdict


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    description: str
    frame: pl.DataFrame
    """Every column (the CSV file)."""
    columns: tuple[str, ...] = ()
    """The columns the HTML and Markdown show; empty: all."""


@dataclass(frozen=True)
class Plot:
    key: str
    title: str
    description: str
    path: Path
    alt_text: str | None = None
    """What the image shows, in words; ``None``: its title and description."""

    @property
    def alt(self) -> str:
        return self.alt_text or f"{self.title}: {self.description}"


@dataclass(frozen=True)
class Sentence:
    """One verdict as a sentence (``verdicts.text.verdict_sentence``)."""

    text: str
    verdict: Verdict


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
    headline: list[Plot] = field(default_factory=list)
    """The figures the report opens with: the forest plot first."""
    sentences: list[Sentence] = field(default_factory=list)

    @property
    def html_path(self) -> Path:
        return self.out / "report.html"

    @property
    def markdown_path(self) -> Path:
        return self.out / "report.md"

    def table(self, key: str) -> pl.DataFrame:
        return next(t.frame for t in self.tables if t.key == key)
