"""The study's choices: each is taken on the selection split (:mod:`safemerge.study.evaluation`) and recorded,
with that split, in ``ctx.selections`` (results.json ``selections``); the report shows the chosen models' numbers
on the report split.

- a method's merge weight at a stage: the weight with the best :func:`score` (ties: the weight closest to 0.5),
  after :func:`refine` has bisected the grid where harm changes most;
- the best language subset of a language-merge stage, by the same score;
- a search's result: the search's own objective, on its objective data (the world's val split by default).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from safemerge.study.context import StudyContext
from safemerge.study.evaluation import SELECT, evaluate_entry, selection_split

SCORE = "win-rate minus harm change"  # what a weight or a language subset is chosen by


def _overall(rec: dict[str, Any], key: str) -> float | None:
    m = ((rec.get("summary") or {}).get("overall") or {}).get(key) or {}
    v = m.get("value")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def score(rec: dict[str, Any]) -> float:
    """Win-rate minus harm change, in points (both as %): better on either axis scores higher; -inf if unknown."""
    h, w = _overall(rec, "harm_change"), _overall(rec, "win_rate")
    return -math.inf if h is None or w is None else 100.0 * (w - h)


def harm(rec: dict[str, Any]) -> float | None:
    h = _overall(rec, "harm_change")
    return None if h is None else 100.0 * h


def on_split(ctx: StudyContext, name: str) -> dict[str, Any]:
    """Model ``name``'s evaluation on the selection split (cached unit)."""
    return evaluate_entry(ctx, ctx.models[name], SELECT)


def refine(weights: list[float], steps: int, make: Callable[[float], str],
           harm_of: Callable[[str], float | None]) -> list[float]:
    """Bisect the weight grid where harm changes most, ``steps`` times.

    ``make(w)`` merges (and registers) the model at weight ``w`` and returns its name; ``harm_of(name)`` is its
    harm change on the selection split. Each step takes the adjacent pair of weights whose harm change differs
    most and adds their midpoint (rounded to 4 decimals); a pair closer than 0.01 is not split again, and a flat
    grid is not refined. Returns every weight, sorted.
    """
    done = {w: make(w) for w in sorted(set(weights))}
    for _ in range(steps):
        ws = sorted(done)
        gaps = []
        for a, b in zip(ws, ws[1:]):
            ha, hb = harm_of(done[a]), harm_of(done[b])
            if ha is not None and hb is not None and b - a >= 0.01:
                gaps.append((abs(hb - ha), b - a, a, b))
        if not gaps or max(gaps)[0] == 0.0:
            break  # harm is flat on the grid: nothing to refine
        _, _, a, b = max(gaps)
        mid = round((a + b) / 2, 4)
        if mid in done:
            break
        done[mid] = make(mid)
    return sorted(done)


def choose(ctx: StudyContext, key: str, what: str, names: dict[str, float | None], **info: Any) -> str | None:
    """Record the best of ``names`` (name -> weight or None) on the selection split by :data:`SCORE`; ties: the
    weight closest to 0.5, then the first. Returns the chosen name (None for no candidates)."""
    if not names:
        return None
    scores = {n: score(on_split(ctx, n)) for n in names}
    order = list(names)

    def rank(n: str) -> tuple[float, float, int]:
        w = names[n]
        return (scores[n], -abs(w - 0.5) if w is not None else 0.0, -order.index(n))

    best = max(names, key=rank)
    ctx.selections[key] = {
        "key": key, "what": what, "model": best, "weight": names[best], "split": selection_split(ctx),
        "by": SCORE, "scores": {n: (None if math.isinf(s) else round(s, 3)) for n, s in scores.items()}, **info,
    }
    return best


def record_search(ctx: StudyContext, key: str, name: str, objective_split: str, **info: Any) -> None:
    """A search's result: chosen by the search's own objective on its objective data (``objective_split``)."""
    ctx.selections[key] = {"key": key, "what": "search result", "model": name, "weight": None,
                           "split": objective_split, "by": "the search objective L_safety + alpha * L_domain",
                           **info}
