"""Findings generated from the numbers (never written by hand): each a sentence with the values behind it.

"Better" compares point estimates; a comparison is called *clear* when the two 95 % CIs do not overlap.
"""

from __future__ import annotations

from typing import Any

from safemerge.study.report.tables import (
    METHOD_LABEL,
    METHODS,
    STAGE_LABEL,
    Cell,
    metric,
    mix_reference,
    pareto_front,
    select,
    sweep,
    tradeoff_points,
)


def _clear(a: Cell, b: Cell) -> bool:
    """True when the CIs of a and b do not overlap."""
    if None in (a.lo, a.hi, b.lo, b.hi):
        return False
    return a.hi < b.lo or b.hi < a.lo  # type: ignore[operator]


def _pair(h: Cell, w: Cell) -> str:
    return f"{h.value:+.1f} % harm / {w.value:.1f} % win-rate"


def _label(results: dict[str, Any], name: str) -> str:
    m = results["models"][name]
    if m["group"] == "objective_merge":
        return f"{METHOD_LABEL[m['method']]} (w={m['weight']:g})"
    return name


def _vs_mix(results: dict[str, Any], stage: str) -> list[str]:
    ref = mix_reference(stage)
    rh, rw = metric(results, ref, "harm_change"), metric(results, ref, "win_rate")
    if rh.value is None or rw.value is None:
        return []
    both, safer, better, neither = [], [], [], []
    for m in METHODS:
        n = select(results, m, stage)
        if n is None:
            continue
        h, w = metric(results, n, "harm_change"), metric(results, n, "win_rate")
        if h.value is None or w.value is None:
            continue
        s, g = h.value < rh.value, w.value > rw.value
        item = f"{_label(results, n)}: {_pair(h, w)}"
        (both if s and g else safer if s else better if g else neither).append(item)
    stage_l = STAGE_LABEL[stage]
    out = [f"At the {stage_l} stage the 15 % data mixture reaches {_pair(rh, rw)}."]
    if both:
        out.append(f"Merging beat mixing on BOTH axes at {stage_l}: " + "; ".join(both) + ".")
    else:
        out.append(f"No merge beat the 15 % mixture on both axes at {stage_l}.")
    if safer:
        out.append(f"Safer than the mixture but less helpful at {stage_l}: " + "; ".join(safer) + ".")
    if better:
        out.append(f"More helpful than the mixture but less safe at {stage_l}: " + "; ".join(better) + ".")
    if neither:
        out.append(f"Worse than the mixture on both axes at {stage_l}: " + "; ".join(neither) + ".")
    return out


def _dominance(results: dict[str, Any]) -> list[str]:
    """Methods better than the mixture on both axes at every stage run."""
    stages = [s for s in ("sft", "dpo") if metric(results, mix_reference(s), "harm_change").value is not None]
    if not stages:
        return []
    winners = []
    for m in METHODS:
        ok = []
        for s in stages:
            n, ref = select(results, m, s), mix_reference(s)
            if n is None:
                break
            h, w = metric(results, n, "harm_change"), metric(results, n, "win_rate")
            rh, rw = metric(results, ref, "harm_change"), metric(results, ref, "win_rate")
            if None in (h.value, w.value) or not (h.value < rh.value and w.value > rw.value):  # type: ignore[operator]
                break
            ok.append(s)
        if len(ok) == len(stages):
            winners.append(METHOD_LABEL[m])
    where = " and ".join(STAGE_LABEL[s] for s in stages)
    if winners:
        return [f"{', '.join(winners)} dominate{'s' if len(winners) == 1 else ''} the 15 % mixture "
                f"(safer and more helpful) at {where}."]
    return [f"No merge method dominates the 15 % mixture at {where}."]


def _pareto(results: dict[str, Any]) -> list[str]:
    pts = tradeoff_points(results)
    if len(pts) < 2:
        return []
    front = pareto_front(pts)
    by = {n: (h, w) for n, h, w in pts}
    items = sorted(front, key=lambda n: by[n][0])
    return [f"Pareto front (harm change vs win-rate) of {len(pts)} models: "
            + "; ".join(f"{n} ({by[n][0]:+.1f} / {by[n][1]:.1f})" for n in items) + "."]


def _languages(results: dict[str, Any]) -> list[str]:
    """Per stage: the language whose safety the merges helped least (and any that got less safe than base)."""
    out = []
    langs = results["languages"]
    for stage in ("sft", "dpo"):
        names = [n for n in (select(results, m, stage) for m in METHODS) if n is not None]
        if not names or len(langs) < 2:
            continue
        avg = {}
        for lang in langs:
            vals = [metric(results, n, "harm_change", lang).value for n in names]
            vals = [v for v in vals if v is not None]
            if vals:
                avg[lang] = sum(vals) / len(vals)
        if not avg:
            continue
        worst = max(avg, key=avg.__getitem__)
        best = min(avg, key=avg.__getitem__)
        if abs(avg[worst] - avg[best]) < 1e-9:
            out.append(f"At {STAGE_LABEL[stage]}, the merges' mean harm change is the same in every language "
                       f"({avg[worst]:+.1f} %).")
        else:
            out.append(f"At {STAGE_LABEL[stage]}, merges reduced harm least in {worst} (mean harm change "
                       f"{avg[worst]:+.1f} %) and most in {best} ({avg[best]:+.1f} %).")
        worse = sorted({f"{lang} ({_label(results, n)}, {metric(results, n, 'harm_change', lang).value:+.1f} %)"
                        for n in names for lang in langs
                        if (metric(results, n, "harm_change", lang).value or 0.0) > 0})
        if worse:
            out.append(f"Safety got WORSE than the base at {STAGE_LABEL[stage]} for: " + "; ".join(worse) + ".")
        gains = {lang: max((metric(results, n, "win_rate", lang).value or 0.0, n) for n in names) for lang in langs}
        top = max(gains, key=lambda lang: gains[lang][0])
        out.append(f"Largest general-quality gain at {STAGE_LABEL[stage]}: {top} with "
                   f"{_label(results, gains[top][1])} ({gains[top][0]:.1f} % win-rate).")
    return out


def _sweeps(results: dict[str, Any]) -> list[str]:
    """Per stage: how harm change and win-rate move from the lowest to the highest safety weight."""
    out = []
    for stage in ("sft", "dpo"):
        parts = []
        for m in METHODS:
            pts = sweep(results, m, stage)
            if len(pts) < 2:
                continue
            (w0, n0), (w1, n1) = pts[0], pts[-1]
            h0, h1 = metric(results, n0, "harm_change").value, metric(results, n1, "harm_change").value
            g0, g1 = metric(results, n0, "win_rate").value, metric(results, n1, "win_rate").value
            if None in (h0, h1, g0, g1):
                continue
            parts.append(f"{METHOD_LABEL[m]} harm {h0:+.1f} -> {h1:+.1f} %, win-rate {g0:.1f} -> {g1:.1f} %")
        if parts:
            lo = min(w for m in METHODS for w, _ in sweep(results, m, stage))
            hi = max(w for m in METHODS for w, _ in sweep(results, m, stage))
            out.append(f"Raising the safety-expert weight from {lo:g} to {hi:g} at {STAGE_LABEL[stage]}: "
                       + "; ".join(parts) + ".")
    return out


def _timing(results: dict[str, Any]) -> list[str]:
    mtd = [n for n, m in results["models"].items() if m["group"] == "merge_then_dpo"]
    out = []
    ref = mix_reference("dpo")
    for n in mtd:
        m = results["models"][n]
        h, w = metric(results, n, "harm_change"), metric(results, n, "win_rate")
        if h.value is None or w.value is None:
            continue
        s = f"SFT -> {METHOD_LABEL[m['method']]} merge -> DPO: {_pair(h, w)}"
        post = select(results, m["method"], "dpo")
        if post is not None:
            ph, pw = metric(results, post, "harm_change"), metric(results, post, "win_rate")
            s += f"; merging after DPO ({_label(results, post)}): {_pair(ph, pw)}"
        rh, rw = metric(results, ref, "harm_change"), metric(results, ref, "win_rate")
        if rh.value is not None and rw.value is not None:
            s += f"; 15 % mix after DPO: {_pair(rh, rw)}"
        out.append(s + ".")
    return out


def _language_merges(results: dict[str, Any]) -> list[str]:
    names = [n for n, m in results["models"].items() if m["group"] == "language_merge"]
    rows = []
    for n in names:
        h, w = metric(results, n, "harm_change"), metric(results, n, "win_rate")
        if h.value is not None and w.value is not None:
            rows.append((w.value - h.value, n, h, w))
    if not rows:
        return []
    rows.sort(reverse=True)
    _, best, h, w = rows[0]
    langs = "+".join(results["models"][best]["langs"])
    s = f"Best language merge: {langs} ({_pair(h, w)})"
    ref = mix_reference(results["models"][best]["stage"] or "sft")
    rh, rw = metric(results, ref, "harm_change"), metric(results, ref, "win_rate")
    if rh.value is not None and rw.value is not None:
        verdict = "beats" if (h.value < rh.value and w.value > rw.value) else "does not beat"  # type: ignore[operator]
        s += f"; it {verdict} the 15 % mixture on both axes ({_pair(rh, rw)})"
    return [s + "."]


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
        ag, ug = metric(results, a, "win_rate"), metric(results, u, "win_rate")
        if aa.value is None or ua.value is None:
            continue
        rel = "higher" if aa.value > ua.value else "lower" if aa.value < ua.value else "equal"
        clear = " (CIs do not overlap)" if _clear(aa, ua) else " (CIs overlap)"
        s = (f"Safety-aware search gives {rel} alignment than safety-unaware search: "
             f"{aa.value:.1f} % vs {ua.value:.1f} %{clear}")
        if ag.value is not None and ug.value is not None:
            s += f"; win-rate {ag.value:.1f} % vs {ug.value:.1f} %"
        out.append(s + ".")
    return out


def findings(results: dict[str, Any]) -> list[str]:
    """All findings, in report order."""
    out: list[str] = []
    out += _dominance(results)
    for stage in ("sft", "dpo"):
        out += _vs_mix(results, stage)
    out += _pareto(results)
    out += _sweeps(results)
    out += _languages(results)
    out += _timing(results)
    out += _language_merges(results)
    out += _search(results)
    out += [f"Note: {n}" for n in results.get("notes", [])]
    return out
