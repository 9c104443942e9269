"""The study report: report.md + report.html + plots/*.png, built from ``<out>/results.json`` only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safemerge.study.report.findings import findings
from safemerge.study.report.html import render_html
from safemerge.study.report.markdown import render_markdown
from safemerge.study.report.plots import make_plots
from safemerge.study.report.tables import all_models_table, paper_table, sweep_table
from safemerge.utils.atomic import atomic_write_text


def build_tables(results: dict[str, Any]) -> dict[str, Any]:
    return {"harm_change": paper_table(results, "harm_change"), "win_rate": paper_table(results, "win_rate"),
            "sweep": sweep_table(results), "all": all_models_table(results)}


def write_report(results: dict[str, Any], out: str | os.PathLike) -> dict[str, Path]:
    """Write report.md, report.html and plots/ into ``out``; returns their paths."""
    out = Path(out)
    tables = build_tables(results)
    plots = make_plots(results, out / "plots")
    found = findings(results)
    md = atomic_write_text(out / "report.md", render_markdown(results, tables, plots, found, out))
    page = atomic_write_text(out / "report.html", render_html(results, tables, plots, found))
    return {"markdown": md, "html": page, **{f"plot:{k}": v for k, v in plots.items()}}


def rebuild_report(out: str | os.PathLike) -> dict[str, Path]:
    """Re-render the report of a finished study from its results.json."""
    results = json.loads((Path(out) / "results.json").read_text(encoding="utf-8"))
    return write_report(results, out)


__all__ = ["build_tables", "rebuild_report", "write_report"]
