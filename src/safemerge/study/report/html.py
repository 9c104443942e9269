"""report.html: one self-contained page (inline CSS, plots embedded as base64 PNG, no network)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from safemerge.study.report.findings import Findings
from safemerge.study.report.markdown import PLOT_TITLES, reproducibility
from safemerge.study.report.tables import Table

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em auto;max-width:1180px;color:#222;
padding:0 16px;line-height:1.4}
h1{font-size:1.6em} h2{margin-top:1.6em;border-bottom:1px solid #ddd}
p,li{overflow-wrap:anywhere}
#summary{background:#f4f7fb;border-left:4px solid #1f77b4;padding:0.6em 1em;margin:1em 0}
#summary p{margin:0.25em 0}
#findings h3{margin:1em 0 0.3em;font-size:1.05em} #findings ul{margin:0.2em 0;padding-left:1.4em}
#findings li{margin:0.2em 0;font-size:14px}
.wrap{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;margin:0.5em 0 0.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}
td{white-space:nowrap} th{background:#f2f2f2;font-weight:600;max-width:11em}
th:first-child,td:first-child{text-align:left;white-space:normal;min-width:12em;max-width:20em}
tr.block th{background:#e4e9f0;text-align:left;font-size:12px;letter-spacing:0.02em}
th.all,td.all{border-left:2px solid #555;border-right:2px solid #555}
td.best{font-weight:bold;background:#eaf5ea}
.ci{display:block;color:#777;font-size:10.5px;font-weight:normal}
.note{color:#555;font-style:italic;font-size:12px}
figure{margin:1em 0} figcaption{font-size:13px;color:#555} img{max-width:100%;height:auto}
pre{background:#f6f6f6;padding:0.6em;overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere}
"""


def _cell(c: Any, extra: str = "") -> str:
    ci = f'<span class="ci">[{c.lo:.1f}, {c.hi:.1f}]</span>' if c.lo is not None and c.hi is not None else ""
    val = "–" if c.value is None else f"{c.value:.1f}"
    cls = " ".join(x for x in (extra, "best" if c.bold else "") if x)
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{val}{ci}</td>"


def html_table(t: Table, table_id: str) -> str:
    """One table: block titles as their own rows, each CI on a second line in smaller type, and the overall
    ("all") column first when the table has one."""
    e = html.escape
    out = [f'<h3>{e(t.title)}</h3>']
    if not t.rows:
        return out[0] + "<p><em>no data</em></p>"
    order = list(range(len(t.columns) - 1))  # cell indices in display order
    if t.overall is not None:
        order = [t.overall] + [i for i in order if i != t.overall]
    heads = [t.columns[0]] + [t.columns[i + 1] for i in order]
    out.append(f'<div class="wrap"><table id="{table_id}" class="results"><thead><tr>'
               + "".join(f'<th{" class=all" if t.overall is not None and j == 1 else ""}>{e(c)}</th>'
                         for j, c in enumerate(heads)) + "</tr></thead><tbody>")
    for i, (label, cells) in enumerate(t.rows):
        if i in t.block_titles:
            out.append(f'<tr class="block"><th colspan="{len(heads)}">{e(t.block_titles[i])}</th></tr>')
        tds = "".join(_cell(cells[k], "all" if t.overall is not None and j == 0 else "") for j, k in enumerate(order))
        out.append(f"<tr><td>{e(label)}</td>{tds}</tr>")
    out.append("</tbody></table></div>")
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
                findings: Findings) -> str:
    e = html.escape
    groups = "".join(f"<h3>{e(t)}</h3><ul>" + "".join(f"<li>{e(f)}</li>" for f in items) + "</ul>"
                     for t, items in findings.groups)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>safemerge study {e(results['name'])}</title><style>{CSS}</style></head><body>",
             f"<h1>Mix data or merge models? Study <code>{e(results['name'])}</code></h1>",
             '<section id="summary">' + "".join(f"<p>{e(s)}</p>" for s in findings.summary) + "</section>",
             f"<p>Languages: {e(', '.join(results['languages']))}. Every model is evaluated against the base model "
             "(harm change: relative change of the harmful-answer rate vs the base, negative is safer; win-rate: "
             "pairwise wins vs the base, 50 % = parity).</p>",
             '<h2>Findings</h2><p class="note">A difference is called clear only when the two 95 % CIs do not '
             'overlap; otherwise the finding says "no clear difference".</p>'
             f'<div id="findings">{groups or "<p>no evaluated models</p>"}</div>',
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
