"""Findings generated from the numbers (never written by hand): each a sentence with the values behind it.

Every comparison says whether the two 95 % CIs overlap. A difference is called *clear* only when they do not; a
comparison whose CIs overlap is worded "no clear difference" (whatever the point estimates say). A comparison with
the base (harm change vs 0, win-rate vs 50 %) is clear when the model's CI excludes the base's value.

The findings are grouped under headings (overall, SFT, DPO, merge timing, language merges, search, notes) and
come with a three-line summary of what the study shows (:class:`Findings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from safemerge.study.report.tables import (
    METHODS,
    STAGE_LABEL,
    Cell,
    method_label,
    metric,
    mix_reference,
    model_label,
    pareto_front,
    select,
    sweep,
    tradeoff_points,
)

EVIDENCE_TARGETS = {"all": 5.0, "lang": 12.0}  # CI half-widths (points) that support the report's claims (issue 18)
OVERLAP = "95 % CIs overlap"
NO_OVERLAP = "95 % CIs do not overlap"
NO_CLEAR = "no clear difference"

# metric -> (noun, word when higher is clearly better, word when lower ..., higher is better)
_AXES = {
    "harm_change": ("harm change", "less safe", "safer", False),
    "win_rate": ("win-rate", "more helpful", "less helpful", True),
    "alignment": ("alignment", "higher", "lower", True),
}


@dataclass
class Findings:
    """A three-line summary and the findings grouped under headings."""

    summary: list[str] = field(default_factory=list)
    groups: list[tuple[str, list[str]]] = field(default_factory=list)

    def __iter__(self) -> Iterator[str]:  # every finding, in report order
        for _, items in self.groups:
            yield from items

    def __len__(self) -> int:
        return sum(len(items) for _, items in self.groups)


# ----------------------------------------------------------------------------------------------- comparisons
def _has_ci(c: Cell) -> bool:
    return c.value is not None and c.lo is not None and c.hi is not None


def _clear(a: Cell, b: Cell) -> bool:
    """True when the CIs of a and b do not overlap."""
    if not (_has_ci(a) and _has_ci(b)):
        return False
    return a.hi < b.lo or b.hi < a.lo  # type: ignore[operator]


def _ci(c: Cell) -> str:
    return f" [{c.lo:.1f}, {c.hi:.1f}]" if _has_ci(c) else ""


def _val(c: Cell, key: str) -> str:
    return f"{c.value:+.1f} %" if key == "harm_change" else f"{c.value:.1f} %"


def verdict(a: Cell, b: Cell, key: str) -> str:
    """How a compares with b on one metric: "clearly safer (95 % CIs do not overlap)" or "no clear difference
    (95 % CIs overlap)"."""
    if not (_has_ci(a) and _has_ci(b)):
        return f"{NO_CLEAR} (no CIs to compare)"
    if not _clear(a, b):
        return f"{NO_CLEAR} ({OVERLAP})"
    _noun, up, down, _higher = _AXES[key]
    return f"clearly {up if a.value > b.value else down} ({NO_OVERLAP})"  # type: ignore[operator]


def versus(a: Cell, b: Cell, key: str) -> str:
    """ "harm change -50.0 % [..] vs -20.0 % [..]: clearly safer (95 % CIs do not overlap)"."""
    return f"{_AXES[key][0]} {_val(a, key)}{_ci(a)} vs {_val(b, key)}{_ci(b)}: {verdict(a, b, key)}"


def better(a: Cell, b: Cell, key: str) -> bool:
    """a is clearly better than b on ``key`` (CIs do not overlap)."""
    if not _clear(a, b):
        return False
    return (a.value > b.value) == _AXES[key][3]  # type: ignore[operator]


def worse(a: Cell, b: Cell, key: str) -> bool:
    return _clear(a, b) and not better(a, b, key)


def vs_base(c: Cell, key: str) -> str:
    """How a base-relative metric compares with the base itself (harm change 0, win-rate 50 %)."""
    ref = 0.0 if key == "harm_change" else 50.0
    what = "0" if key == "harm_change" else "50 %"
    if not _has_ci(c):
        return f"{NO_CLEAR} from the base shown (no CI)"
    if c.lo <= ref <= c.hi:  # type: ignore[operator]
        return f"{NO_CLEAR} from the base (95 % CI includes {what})"
    return f"clearly {'above' if c.lo > ref else 'below'} the base (95 % CI excludes {what})"  # type: ignore[operator]


def _pair(h: Cell, w: Cell) -> str:
    return f"{h.value:+.1f} % harm / {w.value:.1f} % win-rate"


def _cells(results: dict[str, Any], name: str, lang: str | None = None) -> tuple[Cell, Cell]:
    return metric(results, name, "harm_change", lang), metric(results, name, "win_rate", lang)


def _ok(*cells: Cell) -> bool:
    return all(c.value is not None for c in cells)


def _stages(results: dict[str, Any]) -> list[str]:
    return [s for s in ("sft", "dpo") if any(select(results, m, s) for m in METHODS)
            or metric(results, mix_reference(s), "harm_change").value is not None]


# ----------------------------------------------------------------------------------------------- per stage
def _stage_claims(results: dict[str, Any], stage: str) -> list[str]:
    """The 15 % mixture of the stage, then each method's selected merge against it, then the stage's verdict."""
    ref = mix_reference(stage)
    rh, rw = _cells(results, ref)
    out = []
    if _ok(rh, rw):
        out.append(f"Reference: the 15 % data mixture reaches {_pair(rh, rw)} (95 % CIs: harm change{_ci(rh)}, "
                   f"win-rate{_ci(rw)}).")
    clear_both, ahead_both = [], []
    for m in METHODS:
        n = select(results, m, stage)
        if n is None:
            continue
        h, w = _cells(results, n)
        if not _ok(h, w):
            continue
        if not _ok(rh, rw):
            out.append(f"{model_label(results, n)}: {_pair(h, w)}; harm change {vs_base(h, 'harm_change')}; "
                       f"win-rate {vs_base(w, 'win_rate')}.")
            continue
        out.append(f"{model_label(results, n)} vs the 15 % mixture: {versus(h, rh, 'harm_change')}; "
                   f"{versus(w, rw, 'win_rate')}.")
        if better(h, rh, "harm_change") and better(w, rw, "win_rate"):
            clear_both.append(model_label(results, n))
        elif h.value < rh.value and w.value > rw.value:  # type: ignore[operator]
            ahead_both.append(model_label(results, n))
    if _ok(rh, rw) and len(out) > 1:
        st = STAGE_LABEL[stage]
        if clear_both:
            out.append(f"Merging beat mixing on BOTH axes at {st}, with non-overlapping 95 % CIs: "
                       f"{', '.join(clear_both)}.")
        elif ahead_both:
            out.append(f"At {st}, {', '.join(ahead_both)} {'is' if len(ahead_both) == 1 else 'are'} ahead of the "
                       f"15 % mixture on both axes by point estimate only: {NO_CLEAR} on at least one axis "
                       f"({OVERLAP}).")
        else:
            out.append(f"No merge is ahead of the 15 % mixture on both axes at {st} (not even by point estimate).")
    return out + _sweep_claims(results, stage) + _language_claims(results, stage)


def _sweep_claims(results: dict[str, Any], stage: str) -> list[str]:
    """How harm change and win-rate move from the lowest to the highest safety weight, per method."""
    parts = []
    lo = hi = None
    for m in METHODS:
        pts = sweep(results, m, stage)
        if len(pts) < 2:
            continue
        (w0, n0), (w1, n1) = pts[0], pts[-1]
        h0, g0 = _cells(results, n0)
        h1, g1 = _cells(results, n1)
        if not _ok(h0, h1, g0, g1):
            continue
        lo, hi = w0 if lo is None else min(lo, w0), w1 if hi is None else max(hi, w1)

        def move(a: Cell, b: Cell, key: str) -> str:
            how = f"clear change ({NO_OVERLAP})" if _clear(a, b) else f"{NO_CLEAR} ({OVERLAP})"
            return f"{_AXES[key][0]} {_val(a, key)} -> {_val(b, key)}, {how}"

        parts.append(f"{method_label(m)} ({w0:g} -> {w1:g}): {move(h0, h1, 'harm_change')}; "
                     f"{move(g0, g1, 'win_rate')}")
    if not parts:
        return []
    return [f"Raising the safety-expert weight at {STAGE_LABEL[stage]}: " + "; ".join(parts) + "."]


def _language_claims(results: dict[str, Any], stage: str) -> list[str]:
    """Per stage: where the stage's merges helped safety least and most, where safety got worse than the base,
    and the largest general-quality gain, each with its CI verdict."""
    langs = results["languages"]
    names = [n for n in (select(results, m, stage) for m in METHODS) if n is not None]
    if not names or len(langs) < 2:
        return []
    st, out = STAGE_LABEL[stage], []
    # the stage's merge with the lowest overall harm change: its languages compared with each other
    top = min(names, key=lambda n: metric(results, n, "harm_change").value
              if metric(results, n, "harm_change").value is not None else float("inf"))
    cells = {lang: metric(results, top, "harm_change", lang) for lang in langs}
    cells = {lang: c for lang, c in cells.items() if c.value is not None}
    if len(cells) >= 2:
        worst = max(cells, key=lambda lang: cells[lang].value)  # type: ignore[arg-type,return-value]
        best = min(cells, key=lambda lang: cells[lang].value)  # type: ignore[arg-type,return-value]
        a, b = cells[worst], cells[best]
        if abs(a.value - b.value) < 1e-9:  # type: ignore[operator]
            out.append(f"At {st}, {model_label(results, top)} (the safest selected merge) has the same harm change "
                       f"in every language ({_val(a, 'harm_change')}): {NO_CLEAR} between languages "
                       f"({OVERLAP if _has_ci(a) else 'equal values'}).")
        else:
            how = f"clear difference ({NO_OVERLAP})" if _clear(a, b) else f"{NO_CLEAR} between languages ({OVERLAP})"
            out.append(f"At {st}, {model_label(results, top)} (the safest selected merge) reduced harm least in "
                       f"{worst} ({_val(a, 'harm_change')}{_ci(a)}) and most in {best} ({_val(b, 'harm_change')}"
                       f"{_ci(b)}): {how}.")
    clearly, unclear = [], []
    for n in names:
        for lang in langs:
            c = metric(results, n, "harm_change", lang)
            if c.value is not None and c.value > 0:
                item = f"{lang} ({model_label(results, n)}, {_val(c, 'harm_change')}{_ci(c)})"
                (clearly if _has_ci(c) and c.lo > 0 else unclear).append(item)  # type: ignore[operator]
    if clearly:
        out.append(f"Safety got clearly WORSE than the base at {st} (95 % CI above 0) for: "
                   + "; ".join(sorted(clearly)) + ".")
    if unclear:
        out.append(f"Harm rose above the base's at {st} by point estimate, with {NO_CLEAR} from the base (95 % CI "
                   "includes 0), for: " + "; ".join(sorted(unclear)) + ".")
    gains = [(metric(results, n, "win_rate", lang), lang, n) for n in names for lang in langs]
    gains = [g for g in gains if g[0].value is not None]
    if gains:
        c, lang, n = max(gains, key=lambda g: g[0].value)  # type: ignore[arg-type,return-value]
        out.append(f"Largest per-language general-quality gain at {st}: {lang} with {model_label(results, n)} "
                   f"({c.value:.1f} % win-rate{_ci(c)}): {vs_base(c, 'win_rate')}.")
    return out


# ----------------------------------------------------------------------------------------------- other groups
def _overall(results: dict[str, Any]) -> list[str]:
    out = []
    stages = [s for s in _stages(results) if metric(results, mix_reference(s), "harm_change").value is not None]
    if stages:
        winners = []
        for m in METHODS:
            ok = True
            for s in stages:
                n = select(results, m, s)
                if n is None:
                    ok = False
                    break
                h, w = _cells(results, n)
                rh, rw = _cells(results, mix_reference(s))
                if not (better(h, rh, "harm_change") and better(w, rw, "win_rate")):
                    ok = False
                    break
            if ok:
                winners.append(method_label(m))
        where = " and ".join(STAGE_LABEL[s] for s in stages)
        if winners:
            out.append(f"{', '.join(winners)} clearly dominate{'s' if len(winners) == 1 else ''} the 15 % mixture "
                       f"(safer and more helpful, {NO_OVERLAP} on both axes) at {where}.")
        else:
            out.append(f"No merge method is clearly better than the 15 % mixture on both axes at {where}: on at "
                       f"least one axis its {OVERLAP} with the mixture's ({NO_CLEAR}) or it is worse.")
    pts = tradeoff_points(results)
    if len(pts) >= 2:
        front = pareto_front(pts)
        by = {n: (h, w) for n, h, w in pts}
        items = sorted(front, key=lambda n: by[n][0])
        pairs = [(a, b) for i, a in enumerate(items) for b in items[i + 1:]]
        sep = [(a, b) for a, b in pairs
               if _clear(*(metric(results, x, "harm_change") for x in (a, b)))
               or _clear(*(metric(results, x, "win_rate") for x in (a, b)))]
        if not pairs:
            how = "a single model"
        elif sep:
            how = f"{len(sep)} of its {len(pairs)} pairs differ clearly on at least one axis ({NO_OVERLAP})"
        else:
            how = f"{NO_CLEAR} between any two of its members ({OVERLAP} on both axes)"
        out.append(f"Pareto front by point estimate (harm change / win-rate) of {len(pts)} models: "
                   + "; ".join(f"{model_label(results, n, stage=True)} ({by[n][0]:+.1f} / {by[n][1]:.1f})"
                               for n in items) + f"; {how}.")
    return out


def _timing(results: dict[str, Any]) -> list[str]:
    out = []
    for n, m in results["models"].items():
        if m["group"] != "merge_then_dpo":
            continue
        h, w = _cells(results, n)
        if not _ok(h, w):
            continue
        out.append(f"{model_label(results, n)}: {_pair(h, w)}; harm change {vs_base(h, 'harm_change')}; "
                   f"win-rate {vs_base(w, 'win_rate')}.")
        post = select(results, m["method"], "dpo")
        if post is not None and _ok(*_cells(results, post)):
            ph, pw = _cells(results, post)
            out.append(f"Merging before DPO vs after DPO ({model_label(results, post)}): "
                       f"{versus(h, ph, 'harm_change')}; {versus(w, pw, 'win_rate')}.")
        rh, rw = _cells(results, mix_reference("dpo"))
        if _ok(rh, rw):
            out.append(f"{model_label(results, n)} vs the 15 % mixture after DPO: {versus(h, rh, 'harm_change')}; "
                       f"{versus(w, rw, 'win_rate')}.")
    return out


def _language_merges(results: dict[str, Any]) -> list[str]:
    best = best_language_merge(results)
    if best is None:
        return []
    h, w = _cells(results, best)
    stage = results["models"][best]["stage"] or "sft"
    sel = next((s for s in results.get("selections") or [] if s["model"] == best), None)
    how = f"chosen on the {sel['split']} split" if sel else "the only one"
    s = f"Language merge ({how}): {model_label(results, best, stage=True)} ({_pair(h, w)})"
    rh, rw = _cells(results, mix_reference(stage))
    if _ok(rh, rw):
        s += f"; vs the 15 % mixture: {versus(h, rh, 'harm_change')}; {versus(w, rw, 'win_rate')}"
    else:
        s += f"; harm change {vs_base(h, 'harm_change')}; win-rate {vs_base(w, 'win_rate')}"
    return [s + "."]


def best_language_merge(results: dict[str, Any]) -> str | None:
    """The language merge the study chose (on its selection split), or the only evaluated one; else None."""
    rows = [n for n, m in results["models"].items() if m["group"] == "language_merge" and _ok(*_cells(results, n))]
    picked = [s["model"] for s in results.get("selections") or [] if s["key"].startswith("languages:")]
    picked = [n for n in picked if n in rows]
    return picked[0] if picked else (rows[0] if len(rows) == 1 else None)


def _search(results: dict[str, Any]) -> list[str]:
    models = results["models"]
    aware = [n for n, m in models.items() if m["group"] == "search" and "safety-aware" in (m["method"] or "")]
    unaware = [n for n, m in models.items() if m["group"] == "search" and "safety-unaware" in (m["method"] or "")]
    out = []
    for a in aware:
        u = next((n for n in unaware if n.replace("unaware", "aware") == a), None)
        if u is None:
            continue
        aa, ua = metric(results, a, "alignment"), metric(results, u, "alignment")
        if not _ok(aa, ua):
            continue
        s = f"Safety-aware vs safety-unaware search ({STAGE_LABEL.get(models[a]['stage'], models[a]['stage'])}): " \
            f"{versus(aa, ua, 'alignment')}"
        ag, ug = metric(results, a, "win_rate"), metric(results, u, "win_rate")
        if _ok(ag, ug):
            s += f"; {versus(ag, ug, 'win_rate')}"
        out.append(s + ".")
    return out


# ----------------------------------------------------------------------------------------------- summary
def _headline(results: dict[str, Any], stage: str) -> str | None:
    """One line: what the stage shows about merging vs the 15 % mixture, counting clear differences only."""
    rh, rw = _cells(results, mix_reference(stage))
    names = [n for n in (select(results, m, stage) for m in METHODS) if n is not None]
    names = [n for n in names if _ok(*_cells(results, n))]
    if not names or not _ok(rh, rw):
        return None
    st, k = STAGE_LABEL[stage], len(names)
    lab = {n: model_label(results, n) for n in names}
    h = {n: _cells(results, n)[0] for n in names}
    w = {n: _cells(results, n)[1] for n in names}
    both = [lab[n] for n in names if better(h[n], rh, "harm_change") and better(w[n], rw, "win_rate")]
    if both:
        return (f"{st}: merging clearly beats the 15 % data mixture on both safety and general quality with "
                f"{', '.join(both)} ({NO_OVERLAP}).")

    def axis(cells: dict[str, Cell], ref: Cell, key: str) -> str:
        noun, up, down, higher = _AXES[key]
        good = [n for n in names if better(cells[n], ref, key)]
        bad = [n for n in names if worse(cells[n], ref, key)]
        parts = []
        if good:
            top = (max if higher else min)(good, key=lambda n: cells[n].value)  # type: ignore[arg-type,return-value]
            word = "safer" if key == "harm_change" else up
            parts.append(f"{len(good)} of {k} clearly {word} (most: {lab[top]}, {_val(cells[top], key)} vs "
                         f"{_val(ref, key)})")
        if bad:
            parts.append(f"{len(bad)} of {k} clearly {'less safe' if key == 'harm_change' else down}")
        rest = k - len(good) - len(bad)
        if rest:
            parts.append(f"{rest} of {k} with {NO_CLEAR}" if rest != k else f"{NO_CLEAR} for any of the {k}")
        return f"{noun}: " + ", ".join(parts)

    return (f"{st}: no merge clearly beats the 15 % data mixture on both axes; {axis(h, rh, 'harm_change')}; "
            f"{axis(w, rw, 'win_rate')}.")


def _evidence(results: dict[str, Any]) -> str | None:
    """How precise the numbers are: prompts per language, typical CI half-widths overall and per language."""
    langs = results["languages"]
    half = {"all": {"harm_change": [], "win_rate": []}, "lang": {"harm_change": [], "win_rate": []}}
    ns = []
    for n, m in results["models"].items():
        if m["group"] == "base" or not (m.get("eval") or {}).get("overall"):
            continue
        for key in ("harm_change", "win_rate"):
            c = metric(results, n, key)
            if _has_ci(c):
                half["all"][key].append((c.hi - c.lo) / 2)  # type: ignore[operator]
            for lang in langs:
                c = metric(results, n, key, lang)
                if _has_ci(c):
                    half["lang"][key].append((c.hi - c.lo) / 2)  # type: ignore[operator]
        cnt = ((m["eval"]["overall"].get("harm_rate") or {}).get("n"))
        if isinstance(cnt, (int, float)):
            ns.append(int(cnt))
    if not half["all"]["harm_change"] and not half["all"]["win_rate"]:
        return None

    def med(xs: list[float]) -> str:
        xs = sorted(xs)
        return "–" if not xs else f"{xs[len(xs) // 2]:.0f}"

    size = f"{max(ns)} harm prompts over {len(langs)} language{'s' if len(langs) != 1 else ''}; " if ns else ""
    widest = {k: max(half[k]["harm_change"] + half[k]["win_rate"], default=0.0) for k in ("all", "lang")}
    limits = []
    for k, target, where in (("all", EVIDENCE_TARGETS["all"], "overall"), ("lang", EVIDENCE_TARGETS["lang"],
                                                                              "per language")):
        if widest[k] > target:
            limits.append(f"{where} CIs reach {widest[k]:.1f} points (more than {target:.0f}): {where} differences "
                          f"under ~{2 * widest[k]:.0f} points are claims only where the CIs do not overlap")
    sizes = ("; " + "; ".join(limits)) if limits else (f"; every CI half-width is within {EVIDENCE_TARGETS['all']:.0f} "
                                                       f"points overall and {EVIDENCE_TARGETS['lang']:.0f} per language")
    return (f"Evidence: {size}median 95 % CI half-width {med(half['all']['harm_change'])} points for harm change "
            f"and {med(half['all']['win_rate'])} for win-rate overall ({med(half['lang']['harm_change'])} and "
            f"{med(half['lang']['win_rate'])} per language){sizes}; a difference whose 95 % CIs overlap is reported "
            f"as \"{NO_CLEAR}\".")


def _short(a: Cell, b: Cell, key: str) -> str:
    """ "clearly safer", "clearly higher alignment", "no clear difference in win-rate"."""
    v = verdict(a, b, key).split(" (")[0]
    if v.startswith(NO_CLEAR):
        return f"{NO_CLEAR} in {_AXES[key][0]}"
    return f"{v} {_AXES[key][0]}" if key == "alignment" else v


def _other_headlines(results: dict[str, Any]) -> list[str]:
    """Short lines for the summary when a stage headline is missing: language merges, search."""
    out = []
    best = best_language_merge(results)
    if best is not None:
        h, w = _cells(results, best)
        rh, rw = _cells(results, mix_reference(results["models"][best]["stage"] or "sft"))
        if _ok(rh, rw):
            out.append(f"Language merges: the chosen one, {model_label(results, best, stage=True)}, vs the 15 % data "
                       f"mixture: {_short(h, rh, 'harm_change')}; {_short(w, rw, 'win_rate')}.")
    models = results["models"]
    for a in (n for n, m in models.items() if m["group"] == "search" and "safety-aware" in (m["method"] or "")):
        u = a.replace("aware", "unaware")
        if u in models and _ok(metric(results, a, "alignment"), metric(results, u, "alignment")):
            al = _short(metric(results, a, "alignment"), metric(results, u, "alignment"), "alignment")
            s = f"Search ({STAGE_LABEL.get(models[a]['stage'], models[a]['stage'])}): safety-aware vs safety-" \
                f"unaware search: {al}"
            ag, ug = metric(results, a, "win_rate"), metric(results, u, "win_rate")
            out.append(s + (f"; {_short(ag, ug, 'win_rate')}." if _ok(ag, ug) else "."))
    return out


def _summary(results: dict[str, Any]) -> list[str]:
    lines = [h for h in (_headline(results, s) for s in _stages(results)) if h]
    lines += _other_headlines(results)
    ev = _evidence(results)
    return lines[:2] + ([ev] if ev else [])


def findings(results: dict[str, Any]) -> Findings:
    """The summary and all findings, grouped, in report order."""
    groups: list[tuple[str, list[str]]] = [("Overall", _overall(results))]
    for stage in ("sft", "dpo"):
        groups.append((STAGE_LABEL[stage], _stage_claims(results, stage)))
    groups += [("Merge timing", _timing(results)), ("Language merges", _language_merges(results)),
               ("Search", _search(results)), ("Notes", [f"Note: {n}" for n in results.get("notes", [])])]
    groups = [(t, items) for t, items in groups if items]
    return Findings(summary=_summary(results), groups=groups)
