"""Tables of a study's results in the papers' form, as plain data (rendered by markdown.py / html.py).

``results`` is the dict written to ``<out>/results.json`` by the runner: ``models[name]`` holds the model's
group/method/stage/weight and ``eval`` = ``{"overall": {metric: {value, lo, hi}}, "per_lang": {lang: {...}}}``
with every metric a fraction (shown here as %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

METHODS = ("linear", "slerp", "ties", "dare_ties")
METHOD_LABEL = {"linear": "Linear", "slerp": "SLERP", "ties": "TIES", "dare_ties": "DARE-TIES"}
STAGE_LABEL = {"sft": "SFT", "dpo": "DPO", "sft->merge->dpo": "SFT -> merge -> DPO"}
# metric -> (label, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "harm_change": ("harm change vs base %", False),
    "win_rate": ("win-rate vs base %", True),
    "harm_rate": ("harm rate %", False),
    "alignment": ("alignment %", True),
    "over_refusal": ("over-refusal %", False),
    "acc_gen": ("accuracy (generation) %", True),
    "acc_mc": ("accuracy (multiple choice) %", True),
    "wrong_language": ("wrong language %", False),
}


@dataclass
class Cell:
    value: float | None  # in %
    lo: float | None = None
    hi: float | None = None
    bold: bool = False

    def text(self, ci: bool = True) -> str:
        if self.value is None:
            return "–"
        s = f"{self.value:.1f}"
        if ci and self.lo is not None and self.hi is not None:
            s += f" [{self.lo:.1f}, {self.hi:.1f}]"
        return s


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[tuple[str, list[Cell]]] = field(default_factory=list)
    note: str = ""
    separators: list[int] = field(default_factory=list)  # row indices that start a new block


# ----------------------------------------------------------------------------------------------- accessors
def metric(results: dict[str, Any], name: str, key: str, lang: str | None = None) -> Cell:
    """One metric of one model (overall, or one language) as a Cell in %, or an empty Cell."""
    ev = (results["models"].get(name) or {}).get("eval") or {}
    block = ev.get("overall") if lang is None else (ev.get("per_lang") or {}).get(lang)
    m = (block or {}).get(key)
    if not m or m.get("value") is None or (isinstance(m["value"], float) and math.isnan(m["value"])):
        return Cell(None)
    pct = lambda x: None if x is None else 100.0 * float(x)  # noqa: E731
    return Cell(pct(m["value"]), pct(m.get("lo")), pct(m.get("hi")))


def evaluated(results: dict[str, Any], name: str) -> bool:
    return bool((results["models"].get(name) or {}).get("eval"))


def sweep(results: dict[str, Any], method: str, stage: str) -> list[tuple[float, str]]:
    """(weight, model name) of one method's objective merges at one stage, by weight, evaluated only."""
    rows = [(m["weight"], n) for n, m in results["models"].items()
            if m["group"] == "objective_merge" and m["method"] == method and m["stage"] == stage and evaluated(results, n)]
    return sorted(rows)


def score(results: dict[str, Any], name: str) -> float:
    """Selection score: win-rate minus harm change (both in %): better on either axis scores higher."""
    h, w = metric(results, name, "harm_change").value, metric(results, name, "win_rate").value
    return -math.inf if h is None or w is None else w - h


def select(results: dict[str, Any], method: str, stage: str) -> str | None:
    """The weight of a method's grid with the best score (ties: the weight closest to 0.5)."""
    cands = sweep(results, method, stage)
    if not cands:
        return None
    return max(cands, key=lambda wn: (score(results, wn[1]), -abs(wn[0] - 0.5)))[1]


def mix_reference(stage: str) -> str:
    return f"mix15_{'dpo' if stage != 'sft' else 'sft'}"


def main_rows(results: dict[str, Any]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Blocks of the main table: (block title, stage, [(row label, model name)])."""
    blocks = []
    for stage in ("sft", "dpo"):
        rows: list[tuple[str, str]] = []
        if evaluated(results, mix_reference(stage)):
            rows.append(("15 % mix", mix_reference(stage)))
        for m in METHODS:
            name = select(results, m, stage)
            if name is not None:
                w = results["models"][name]["weight"]
                rows.append((f"{METHOD_LABEL[m]} (w={w:g})", name))
        if rows:
            blocks.append((STAGE_LABEL[stage], stage, rows))
    extra: list[tuple[str, str]] = []
    for n, m in results["models"].items():
        if not evaluated(results, n):
            continue
        if m["group"] == "merge_then_dpo":
            extra.append((f"SFT -> {METHOD_LABEL.get(m['method'], m['method'])} (w={m['weight']:g}) -> DPO", n))
        elif m["group"] == "language_merge":
            extra.append((f"{METHOD_LABEL.get(m['method'], m['method'])} of {'+'.join(m['langs'])} ({m['stage']})", n))
        elif m["group"] == "search":
            extra.append((f"{m['method']} ({m['stage']})", n))
    if extra:
        blocks.append(("Merge timing, language merges, search", "other", extra))
    return blocks


# ----------------------------------------------------------------------------------------------- tables
def _bold_best(cells: list[Cell], higher: bool) -> None:
    vals = [c.value for c in cells if c.value is not None]
    if not vals:
        return
    best = max(vals) if higher else min(vals)
    for c in cells:
        c.bold = c.value is not None and abs(c.value - best) < 1e-9


def paper_table(results: dict[str, Any], key: str) -> Table:
    """Rows = 15 % mix and each method (selected weight) per stage; columns = languages + all (with CIs)."""
    label, higher = METRICS[key]
    langs = results["languages"]
    table = Table(title=label[0].upper() + label[1:], columns=["method", *langs, "all"])
    for block_title, _stage, rows in main_rows(results):
        table.separators.append(len(table.rows))
        block = [(f"{block_title}: {lab}", [*(metric(results, n, key, lang) for lang in langs),
                                              metric(results, n, key)]) for lab, n in rows]
        for col in range(len(langs) + 1):
            _bold_best([cells[col] for _, cells in block], higher)
        table.rows.extend(block)
    table.note = ("Best per column within each block in bold; 95 % bootstrap CIs in brackets; merge weights "
                  "(w = weight of the safety expert) selected on the evaluation set by win-rate minus harm change.")
    return table


def sweep_table(results: dict[str, Any]) -> Table:
    """Every objective merge of the weight grid: overall harm change, win-rate and alignment."""
    keys = ("harm_change", "win_rate", "alignment")
    table = Table(title="Weight sweeps of the objective merges (general x safety expert)",
                  columns=["stage / method / w (safety)", *(METRICS[k][0] for k in keys)])
    for stage in ("sft", "dpo"):
        for m in METHODS:
            for w, n in sweep(results, m, stage):
                table.rows.append((f"{STAGE_LABEL[stage]} / {METHOD_LABEL[m]} / {w:g}",
                                   [metric(results, n, k) for k in keys]))
    return table


def all_models_table(results: dict[str, Any]) -> Table:
    """Every evaluated model, overall metrics."""
    keys = list(METRICS)
    table = Table(title="All models (overall)", columns=["model (group)", *(METRICS[k][0] for k in keys)])
    for n, m in results["models"].items():
        if evaluated(results, n):
            cells = [metric(results, n, k) for k in keys]
            table.rows.append((f"{n} ({m['group'].replace('_', ' ')})", cells))
    for col, k in enumerate(keys):
        _bold_best([cells[col] for _, cells in table.rows], METRICS[k][1])
    return table


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names not dominated when minimising x (harm change) and maximising y (win-rate)."""
    front = []
    for n, x, y in points:
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for _, x2, y2 in points)
        if not dominated:
            front.append(n)
    return front


def tradeoff_points(results: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(name, overall harm change %, overall win-rate %) of every evaluated non-base model."""
    pts = []
    for n, m in results["models"].items():
        if m["group"] == "base":
            continue
        h, w = metric(results, n, "harm_change").value, metric(results, n, "win_rate").value
        if h is not None and w is not None:
            pts.append((n, h, w))
    return pts
