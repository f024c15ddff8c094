"""Pages as text, rendered from Jinja2 templates (``report/templates/``): the report as one
self-contained HTML page and a Markdown file, and the page of ``gatelab compare``. Both HTML
pages extend ``page.html.j2`` (the head and its CSS).

The HTML page has inline CSS and images as base64 ``data:`` URIs, no script and no external
resource, so it opens from disk (or an MLflow artifact view) offline; it fits a 1280-pixel
window without horizontal scrolling (tables wrap their cells; a setting shared by every row of
a table is said once in a caption instead of in a column).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import jinja2
import polars as pl
from markupsafe import Markup

from gatelab.dashboards.report.parts import Report, Table
from gatelab.dashboards.report.table_text import html_table, markdown_table
from gatelab.verdict import Verdict

VERDICT_BACKGROUND: dict[Verdict, str] = {
    Verdict.REPRODUCED: "#d8f5d8", Verdict.NOT_REPRODUCED: "#f8d4d4",
    Verdict.CONFOUNDED: "#e8e0f5", Verdict.INCONCLUSIVE: "#f4efd2",
    Verdict.UNDECIDED: "#f4efd2",
}
"""The background of a verdict's table cell and sentence (by its ``Verdict.css_class``)."""

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto;
       max-width: 1200px; padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; overflow-wrap: anywhere; }
table.table { border-collapse: collapse; font-size: 12px; margin: .6em 0; width: 100%;
              table-layout: fixed; }
table.table th, table.table td { border: 1px solid #d0d0d0; padding: 3px 5px; text-align: left;
                                 vertical-align: top; overflow-wrap: anywhere; }
table.table th { background: #f3f3f3; }
table.table tr:nth-child(even) td { background: #fafafa; }
ul.sentences li { margin: .25em 0; padding: .2em .4em; list-style: none; }
p.desc, p.caption { color: #444; max-width: 70em; } p.caption { font-style: italic; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 13px; }
""" + "".join(f"td.{v.css_class}, li.{v.css_class} {{ background: {colour} !important; }}\n"
              for v, colour in VERDICT_BACKGROUND.items())

SETTING_COLUMNS = ("setting", "lr_setting")
"""Long labels that become a caption when every row of a table shares one."""


def data_uri(path: Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def caption(table: Table) -> str:
    """``Setting: ...`` for a table whose rows all share one setting, else empty."""
    parts = []
    for col in SETTING_COLUMNS:
        if col in table.frame.columns and table.frame[col].n_unique() == 1:
            value = table.frame[col][0]
            if value is not None:
                parts.append(f"{'LR grid' if col == 'lr_setting' else 'Setting'}: {value}")
    return "; ".join(parts)


def shown(table: Table) -> pl.DataFrame:
    """The columns a reader sees: ``table.columns`` (all when empty), without a setting
    column that the caption already states."""
    frame = table.frame.select(list(table.columns)) if table.columns else table.frame
    drop = [c for c in SETTING_COLUMNS if c in frame.columns and table.frame[c].n_unique() == 1]
    return frame.drop(drop)


def _bold(text: str) -> Markup:
    escaped = html.escape(text)
    return Markup(re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped))


def _environment(out: Path | None = None) -> jinja2.Environment:
    """The templates' environment; ``out``: the report's folder, which Markdown image links
    are relative to."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gatelab.dashboards.report", "templates"),
        autoescape=jinja2.select_autoescape(["html.j2"]), keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["data_uri"] = data_uri
    if out is not None:
        env.filters["relative"] = lambda p: Path(p).relative_to(out).as_posix()
    env.filters["caption"] = caption

    def html_with_caption(table: Table) -> Markup:
        text = caption(table)
        cap = f"<p class='caption'>{html.escape(text)}</p>" if text else ""
        return Markup(cap + html_table(shown(table)))

    env.filters["html_table"] = html_with_caption
    env.filters["markdown_table"] = lambda t: markdown_table(shown(t))
    env.filters["bold"] = _bold
    return env


def render_html(report: Report) -> str:
    return _environment(report.out).get_template("report.html.j2").render(report=report,
                                                                          css=CSS)


def render_markdown(report: Report) -> str:
    return _environment(report.out).get_template("report.md.j2").render(report=report)


def render_compare(title: str, description: str, frame: pl.DataFrame) -> str:
    """The page of ``gatelab compare``: a title, what the table holds, and the table."""
    table = Table("compare", title, description, frame)
    return _environment().get_template("compare.html.j2").render(table=table, css=CSS)
