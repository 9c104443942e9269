"""The result of an evaluation, :class:`EvalReport`, and its per-language tables: markdown, CSV and a rich table;
``write_report`` (``EvalReport.save``) writes all files. :func:`safemerge.evaluate.harness.evaluate_model` makes it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safemerge.errors import InputError
from safemerge.evaluate.metric_table import METRICS
from safemerge.evaluate.metrics import Estimate
from safemerge.utils.atomic import atomic_write_json, atomic_write_text


@dataclass
class EvalReport:
    """Per-prompt records and per-language summaries (``summary[lang][metric]`` = Estimate dict; lang "all"
    is the mean over languages). Rates are fractions in [0, 1]; harm_change is a relative change."""

    model: str
    model_hash: str
    suite: str
    judge: dict[str, Any]
    settings: dict[str, Any]
    records: list[dict[str, Any]]
    summary: dict[str, dict[str, dict[str, Any]]]
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str, lang: str = "all") -> float | None:
        """Point estimate of a metric (None if undefined or not computed)."""
        return self.summary.get(lang, {}).get(name, {}).get("value")

    @property
    def overall(self) -> dict[str, Estimate]:
        """Metric -> :class:`Estimate` averaged over languages (``summary["all"]``)."""
        return self.by_lang("all")

    def by_lang(self, lang: str) -> dict[str, Estimate]:
        return {m: Estimate(**e) for m, e in self.summary.get(lang, {}).items()}

    @property
    def languages(self) -> list[str]:
        return [k for k in self.summary if k != "all"]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalReport:
        return cls(**d)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EvalReport:
        p = Path(path)
        p = p / "results.json" if p.is_dir() else p
        if not p.is_file():
            raise InputError(f"{p}: no eval results here; run `safemerge eval` first")
        return cls.from_dict(json.loads(p.read_text(encoding="utf-8")))

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write results.json (every prompt, answer, verdict), summary.md and summary.csv into ``out_dir``."""
        return write_report(self, out_dir)



# metric -> (column title, shown as percent), from the one metric table
COLUMNS: dict[str, tuple[str, bool]] = {k: (m.short, m.percent) for k, m in METRICS.items() if m.eval_table}


def _fmt(est: dict[str, Any] | None, pct: bool, ci: bool = True, compact: bool = False) -> str:
    if not est:
        return ""
    if est.get("value") is None:
        return "n/a"
    k = 100.0 if pct else 1.0
    s = f"{est['value'] * k:.1f}"
    if ci and est.get("lo") is not None:
        s += (f" [{est['lo'] * k:.0f},{est['hi'] * k:.0f}]" if compact
              else f" [{est['lo'] * k:.1f}, {est['hi'] * k:.1f}]")
    return s


def _columns(report: EvalReport) -> list[str]:
    present = {m for g in report.summary.values() for m in g}
    return [m for m in COLUMNS if m in present]


def rows(report: EvalReport, ci: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and one row per language (last: ``all`` = mean over languages)."""
    cols = _columns(report)
    header = ["lang", *[COLUMNS[c][0] for c in cols]]
    body = [[g, *[_fmt(report.summary[g].get(c), COLUMNS[c][1], ci) for c in cols]] for g in report.summary]
    return header, body


def to_markdown(report: EvalReport) -> str:
    header, body = rows(report)
    lines = [
        f"# Evaluation of `{report.model}`",
        "",
        f"suite `{report.suite}`, judge `{report.judge.get('name')}`"
        + (f", reference `{report.reference}`" if report.reference else "")
        + f", {report.meta.get('n_prompts', len(report.records))} prompts. Values in %, 95 % bootstrap CI in "
        "brackets; `all` = mean over languages.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(r) + " |" for r in body],
    ]
    notes = sorted({f"{m}: {e['note']}" for g, d in report.summary.items() for m, e in d.items() if e.get("note")})
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def to_csv(report: EvalReport) -> str:
    """Long format: lang, metric, value, lo, hi, n, note (fractions, not percent)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["lang", "metric", "value", "lo", "hi", "n", "note"])
    for g, d in report.summary.items():
        for m, e in d.items():
            w.writerow([g, m, e["value"], e["lo"], e["hi"], e["n"], e["note"]])
    return buf.getvalue()


def print_table(report: EvalReport) -> None:
    """Terminal table, one row per metric: value per language (%), then ``all`` with its 95 % CI."""
    from rich.console import Console
    from rich.table import Table

    langs = report.languages
    t = Table(title=f"{report.model} — {report.suite} / judge {report.judge.get('name')} (%)", padding=(0, 1),
              collapse_padding=True)
    t.add_column("metric", no_wrap=True)
    for g in langs:
        t.add_column(g, justify="right")
    t.add_column("all [95% CI]", justify="right", no_wrap=True)
    for c in _columns(report):
        pct = COLUMNS[c][1]
        t.add_row(c, *[_fmt(report.summary[g].get(c), pct, ci=False) for g in langs],
                  _fmt(report.summary["all"].get(c), pct, compact=True))
    Console().print(t)


def write_report(report: EvalReport, out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", report.to_dict())
    atomic_write_text(out / "summary.md", to_markdown(report))
    atomic_write_text(out / "summary.csv", to_csv(report))
    return out
