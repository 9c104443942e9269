"""report.html: one self-contained page (inline CSS, plots embedded as base64 PNG, no network)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from safemerge.study.report.markdown import PLOT_TITLES, reproducibility
from safemerge.study.report.tables import Table

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{background:#f2f2f2} tr.sep td{border-top:2px solid #555}
td.best{font-weight:bold;background:#eaf5ea}
.ci{color:#777;font-size:11px} .note{color:#555;font-style:italic;font-size:12px}
figure{margin:1em 0} figcaption{font-size:13px;color:#555} img{max-width:100%}
pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}
"""


def html_table(t: Table, table_id: str) -> str:
    e = html.escape
    out = [f'<h3>{e(t.title)}</h3>']
    if not t.rows:
        return out[0] + "<p><em>no data</em></p>"
    out.append(f'<table id="{table_id}" class="results"><thead><tr>'
               + "".join(f"<th>{e(c)}</th>" for c in t.columns) + "</tr></thead><tbody>")
    for i, (label, cells) in enumerate(t.rows):
        cls = ' class="sep"' if i in t.separators and i > 0 else ""
        tds = []
        for c in cells:
            ci = f' <span class="ci">[{c.lo:.1f}, {c.hi:.1f}]</span>' if c.lo is not None and c.hi is not None else ""
            val = "–" if c.value is None else f"{c.value:.1f}"
            tds.append(f'<td{" class=best" if c.bold else ""}>{val}{ci}</td>')
        out.append(f"<tr{cls}><td>{e(label)}</td>{''.join(tds)}</tr>")
    out.append("</tbody></table>")
    if t.note:
        out.append(f'<p class="note">{e(t.note)}</p>')
    return "\n".join(out)


def _md_inline(text: str) -> str:
    """The few Markdown bits the reproducibility lines use: `code`, **bold**, indented code blocks."""
    import re

    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def render_html(results: dict[str, Any], tables: dict[str, Table], plots: dict[str, Path],
                findings: list[str]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>safemerge study {e(results['name'])}</title><style>{CSS}</style></head><body>",
             f"<h1>Mix data or merge models? Study <code>{e(results['name'])}</code></h1>",
             f"<p>Languages: {e(', '.join(results['languages']))}. Every model is evaluated against the base model "
             "(harm change: relative change of the harmful-answer rate vs the base, negative is safer; win-rate: "
             "pairwise wins vs the base, 50 % = parity).</p>",
             '<h2>Findings</h2><ul id="findings">' + "".join(f"<li>{e(f)}</li>" for f in findings) + "</ul>",
             "<h2>Main tables</h2>",
             html_table(tables["harm_change"], "table-harm-change"),
             html_table(tables["win_rate"], "table-win-rate"),
             "<h2>Plots</h2>"]
    for name, path in plots.items():
        b64 = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        title = e(PLOT_TITLES.get(name, name))
        parts.append(f'<figure id="plot-{name}"><img class="plot" alt="{title}" src="data:image/png;base64,{b64}">'
                     f"<figcaption>{title}</figcaption></figure>")
    parts += ["<h2>All results</h2>", html_table(tables["sweep"], "table-sweep"),
              html_table(tables["all"], "table-all")]
    repro = reproducibility(results)
    body, in_table = [], False
    for line in repro[1:]:
        if line.startswith("### "):
            body.append(f"<h3>{e(line[4:])}</h3>")
        elif line.startswith("|"):
            if set(line) <= set("|-: "):
                continue
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not in_table:
                body.append('<table id="table-timings"><tr>' + "".join(f"<th>{e(c)}</th>" for c in cells) + "</tr>")
                in_table = True
            else:
                body.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
        else:
            if in_table:
                body.append("</table>")
                in_table = False
            if line.startswith("    "):
                body.append(f"<pre>{e(line.strip())}</pre>")
            elif line:
                body.append(f"<p>{_md_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    parts += ["<h2>Reproducibility</h2>", *body, "</body></html>"]
    return "\n".join(parts) + "\n"
