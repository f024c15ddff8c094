"""The report as one self-contained HTML page: inline CSS, images as base64 ``data:`` URIs, no
script and no external resource, so it opens from disk (or an MLflow artifact view) offline.
"""

from __future__ import annotations

import base64
import html

from gatelab.dashboards.render import html_table
from gatelab.dashboards.report_parts import Report

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1400px; padding: 0 1.5em; color: #1d1d1f; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; }
.scroll { overflow-x: auto; }
table.table { border-collapse: collapse; font-size: 12.5px; margin: .6em 0; }
table.table th, table.table td { border: 1px solid #d0d0d0; padding: 3px 7px; text-align: left;
                                 vertical-align: top; }
table.table th { background: #f3f3f3; position: sticky; top: 0; }
table.table tr:nth-child(even) td { background: #fafafa; }
td.v-reproduced { background: #d8f5d8 !important; }
td.v-not { background: #f8d4d4 !important; }
td.v-inconclusive { background: #f4efd2 !important; }
p.desc { color: #444; max-width: 70em; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 13px; }
"""


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(report: Report) -> str:
    """The whole page."""
    esc = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{esc(report.title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{esc(report.title)}</h1>", "<dl class='meta'>"]
    parts += [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in report.meta.items()]
    parts.append("</dl>")
    for table in report.tables:
        parts += [f"<h2 id='{esc(table.key)}'>{esc(table.title)}</h2>",
                  f"<p class='desc'>{esc(table.description)}</p>",
                  f"<div class='scroll'>{html_table(table.frame)}</div>"]
    if report.plots:
        parts.append("<h2 id='plots'>Plots</h2>")
        for plot in report.plots:
            parts.append(f"<figure id='{esc(plot.key)}'><img alt='{esc(plot.title)}' "
                         f"src='{data_uri(plot.path.read_bytes())}'><figcaption><b>"
                         f"{esc(plot.title)}</b>: {esc(plot.description)}</figcaption></figure>")
    parts.append("<h2 id='notes'>Notes</h2><ul>")
    parts += [f"<li>{esc(note)}</li>" for note in report.notes]
    parts.append("</ul></body></html>")
    return "\n".join(parts)
