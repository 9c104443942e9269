"""Tables of a study's results in the papers' form, as plain data (rendered by markdown.py / html.py).

``results`` is the dict written to ``<out>/results.json`` by the runner: ``models[name]`` holds the model's
group/method/stage/weight and ``eval`` = ``{"overall": {metric: {value, lo, hi}}, "per_lang": {lang: {...}}}``
with every metric a fraction (shown here as %).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from safemerge import DEFAULT_SAFETY_FRACTION
from safemerge.evaluate.metric_table import METRICS as METRIC_TABLE
from safemerge.evaluate.metric_table import STUDY_TABLE
from safemerge.study import names
from safemerge.study.spec import PAPER_A_METHODS

METHODS = PAPER_A_METHODS  # the report's method order (other registry methods a spec uses follow them)


def method_label(method: str | None) -> str:
    """Display name of a merge method: the method registry's ``label`` (the name itself if it is no method)."""
    from safemerge.merge.methods import METHODS as REGISTRY

    return REGISTRY[method].label if method in REGISTRY else (method or "")
STAGE_LABEL = {"sft": "SFT", "dpo": "DPO", "sft->merge->dpo": "SFT -> merge -> DPO"}
# metric -> (label, higher is better), in the report's order (the one metric table)
METRICS: dict[str, tuple[str, bool]] = {k: (METRIC_TABLE[k].label, bool(METRIC_TABLE[k].higher_is_better))
                                        for k in STUDY_TABLE}


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
    block_titles: dict[int, str] = field(default_factory=dict)  # row index -> title of the block it starts
    prefix_blocks: set[int] = field(default_factory=set)  # blocks whose title prefixes their labels in flat text
    overall: int | None = None  # index (in cells) of the overall "all" column, shown first in the HTML

    def block_of(self, row: int) -> int:
        """The first row of the block that row ``row`` belongs to."""
        starts = [i for i in self.separators if i <= row]
        return max(starts) if starts else 0


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


def selection(results: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The study's choice recorded under ``key`` (see :mod:`safemerge.study.selection`), or None."""
    return next((s for s in results.get("selections") or [] if s.get("key") == key), None)


def select(results: dict[str, Any], method: str, stage: str) -> str | None:
    """The model of a method's weight grid the study chose (on its selection split), if it was evaluated."""
    sel = selection(results, f"weight:{method}:{stage}")
    return sel["model"] if sel is not None and evaluated(results, sel["model"]) else None


def splits_note(results: dict[str, Any]) -> str:
    """Which split chose what, and which one the numbers are on."""
    sp = results.get("splits") or {}
    rep, sel = sp.get("report", "test"), sp.get("select", "test")
    if sel == rep:
        return (f"Merge weights and the language subset were chosen on the same {rep} prompts the numbers are "
                f"reported on (the suite has no selection split): the chosen rows are optimistic.")
    return (f"Merge weights and the language subset were chosen on the {sel} split by win-rate minus harm change; "
            f"searches on their objective data ({sel} split); every number shown is on the {rep} split.")


def mix_reference(stage: str) -> str:
    return names.mixture(DEFAULT_SAFETY_FRACTION, "dpo" if stage != "sft" else "sft").name


def expert_of(results: dict[str, Any], name: str) -> str | None:
    """The expert an objective merge at w = 0 or w = 1 is: ``"general"`` (w = 0, the 0 % mix) or ``"safety"``
    (w = 1, the 100 % mix); None for any other model (and for an endpoint that is not the expert itself)."""
    m = results["models"].get(name) or {}
    if m.get("group") != "objective_merge" or m.get("weight") not in (0.0, 1.0):
        return None
    role = "safety" if m["weight"] == 1.0 else "general"
    expert = results["models"].get(mix_name_of(role, m.get("stage") or "sft")) or {}
    if expert.get("path") and expert.get("path") == m.get("path"):
        return role  # the study registered the merge as an alias of the expert (same model dir)
    if m.get("method") in ("linear", "slerp"):
        return role  # one input with weight 1 (linear) / t in {0, 1} (SLERP): the expert's own weights
    return None


def mix_name_of(role: str, stage: str) -> str:
    """The expert of an objective merge: the general expert is the 0 % mix, the safety expert the 100 % mix."""
    return names.mixture(1.0 if role == "safety" else 0.0, "dpo" if stage == "dpo" else "sft").name


def aliases(results: dict[str, Any]) -> dict[str, str]:
    """Objective-merge endpoints that are an expert itself: merge name -> expert (mix) name, when the expert is in
    the study (the report shows such a row as the expert, not as a merge)."""
    out = {}
    for n in results["models"]:
        role = expert_of(results, n)
        if role is not None:
            e = mix_name_of(role, results["models"][n].get("stage") or "sft")
            if e in results["models"]:
                out[n] = e
    return out


def _w(w: float | None) -> str:
    return "?" if w is None else f"{w:g}"


def model_label(results: dict[str, Any], name: str, stage: bool = False) -> str:
    """A model's name for people, e.g. "15 % mix", "TIES (w=0.5)", "safety expert (= Linear w=1)",
    "SFT -> SLERP (w=0.5) -> DPO", "TIES of en+fr+es"; with ``stage`` the stage is appended in brackets."""
    m = results["models"].get(name) or {}
    group, method, st = m.get("group"), m.get("method"), m.get("stage")
    meth = method_label(method)
    suffix = f" ({STAGE_LABEL.get(st, st)})" if stage and st in ("sft", "dpo") else ""
    if group == "base":
        return "base"
    if group == "mixture":
        p = round(100 * m["fraction"]) if m.get("fraction") is not None else None
        role = {0: "general expert (0 % mix)", 100: "safety expert (100 % mix)"}.get(p) if p is not None else None
        return (role or f"{p} % mix") + suffix
    if group == "objective_merge":
        role = expert_of(results, name)
        if role is not None:
            return f"{role} expert (= {meth} w={_w(m.get('weight'))})" + suffix
        if m.get("weight") in (0.0, 1.0):  # e.g. TIES at w = 1: only the safety expert's (trimmed) delta
            role = "safety" if m["weight"] == 1.0 else "general"
            return f"{meth} (w={_w(m.get('weight'))}: {role} expert's delta only)" + suffix
        return f"{meth} (w={_w(m.get('weight'))})" + suffix
    if group == "merge_then_dpo":
        return f"SFT -> {meth} (w={_w(m.get('weight'))}) -> DPO"
    if group == "layer_merge":
        return f"{meth} per layer (w={'/'.join(_w(x) for x in m.get('layer_weights') or [])})" + suffix
    if group == "language_merge":
        return f"{meth} of {'+'.join(m.get('langs') or [])}" + suffix
    if group == "monolingual":
        return f"{'+'.join(m.get('langs') or [])} only" + suffix
    if group == "search":  # "ties search (safety-aware)" -> "TIES search, safety-aware"
        g = re.match(r"^(\w+) search \((.+)\)$", method or "")
        return (f"{method_label(g.group(1))} search, {g.group(2)}" if g else f"{method}") + suffix
    return name


def main_rows(results: dict[str, Any]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Blocks of the main table: (block title, stage, [(row label, model name)]). Row labels never repeat the
    block title; a selected endpoint is shown as the expert it is."""
    blocks = []
    for stage in ("sft", "dpo"):
        rows: list[tuple[str, str]] = []
        if evaluated(results, mix_reference(stage)):
            rows.append(("15 % mix", mix_reference(stage)))
        for m in METHODS:
            name = select(results, m, stage)
            if name is not None:
                rows.append((model_label(results, name), name))
        if rows:
            blocks.append((STAGE_LABEL[stage], stage, rows))
    for title, group in (("Merge timing", "merge_then_dpo"), ("Per-layer weights", "layer_merge"),
                         ("Language merges", "language_merge"), ("Search", "search")):
        rows = [(model_label(results, n, stage=True), n) for n, m in results["models"].items()
                if m["group"] == group and evaluated(results, n)
                and (group != "layer_merge" or n in chosen(results))]  # per-layer lists: the chosen one
        if rows:
            blocks.append((title, group, rows))
    return blocks


def chosen(results: dict[str, Any]) -> set[str]:
    """Every model one of the study's choices picked."""
    return {s["model"] for s in results.get("selections") or []}


# ----------------------------------------------------------------------------------------------- tables
def _bold_best(cells: list[Cell], higher: bool) -> None:
    vals = [c.value for c in cells if c.value is not None]
    if not vals:
        return
    best = max(vals) if higher else min(vals)
    for c in cells:
        c.bold = c.value is not None and abs(c.value - best) < 1e-9


def paper_table(results: dict[str, Any], key: str) -> Table:
    """Rows = 15 % mix and each method (selected weight) per stage, then merge timing, language merges and search;
    columns = languages + all (with CIs). Row labels are clean; the block titles are kept apart."""
    label, higher = METRICS[key]
    langs = results["languages"]
    table = Table(title=label[0].upper() + label[1:], columns=["method", *langs, "all"], overall=len(langs))
    for block_title, stage, rows in main_rows(results):
        start = len(table.rows)
        table.separators.append(start)
        table.block_titles[start] = block_title
        if stage in ("sft", "dpo"):  # "SFT: 15 % mix" in Markdown (no block rows there)
            table.prefix_blocks.add(start)
        block = [(lab, [*(metric(results, n, key, lang) for lang in langs), metric(results, n, key)])
                 for lab, n in rows]
        for col in range(len(langs) + 1):
            _bold_best([cells[col] for _, cells in block], higher)
        table.rows.extend(block)
    table.note = ("Best per column within each block in bold; 95 % bootstrap CIs in brackets; w = weight of the "
                  "safety expert; w = 0 and w = 1 of Linear and SLERP are the general and the safety expert "
                  "themselves. " + splits_note(results))
    return table


def sweep_table(results: dict[str, Any]) -> Table:
    """Every objective merge of the weight grid: overall harm change, win-rate and alignment (one block per stage
    and method; an endpoint that is an expert is named as that expert)."""
    keys = ("harm_change", "win_rate", "alignment")
    table = Table(title="Weight sweeps of the objective merges (general x safety expert)",
                  columns=["w (safety)", *(METRICS[k][0] for k in keys)])
    for stage in ("sft", "dpo"):
        for m in METHODS:
            pts = sweep(results, m, stage)
            if not pts:
                continue
            start = len(table.rows)
            table.separators.append(start)
            table.block_titles[start] = f"{STAGE_LABEL[stage]}, {method_label(m)}"
            table.prefix_blocks.add(start)
            for w, n in pts:
                role = expert_of(results, n)
                lab = f"w={w:g}" + (f" = {role} expert" if role else "")
                table.rows.append((lab, [metric(results, n, k) for k in keys]))
    return table


def all_models_table(results: dict[str, Any]) -> Table:
    """Every evaluated model, overall metrics; an objective-merge endpoint that is an expert itself is not
    repeated (the expert's row says which merges it also is)."""
    keys = list(METRICS)
    table = Table(title="All models (overall)", columns=["model", *(METRICS[k][0] for k in keys)])
    same = aliases(results)
    also: dict[str, list[str]] = {}
    for n, e in same.items():
        m = results["models"][n]
        also.setdefault(e, []).append(f"{method_label(m['method'])} w={m['weight']:g}")
    for n, m in results["models"].items():
        if evaluated(results, n) and n not in same:
            cells = [metric(results, n, k) for k in keys]
            lab = model_label(results, n, stage=True)
            if also.get(n):
                lab += f"; = {', '.join(also[n])}"
            table.rows.append((lab, cells))
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
    """(name, overall harm change %, overall win-rate %) of every evaluated non-base model; an objective-merge
    endpoint that is an expert itself is left out (its expert is the point)."""
    same = aliases(results)
    pts = []
    for n, m in results["models"].items():
        if m["group"] == "base" or n in same:
            continue
        h, w = metric(results, n, "harm_change").value, metric(results, n, "win_rate").value
        if h is not None and w is not None:
            pts.append((n, h, w))
    return pts
