"""The study's choices as pure functions: the score, grid refinement (bisection where harm changes most)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safemerge.study.selection import refine, score


def _rec(harm: float | None, win: float | None) -> dict:
    ov = {}
    if harm is not None:
        ov["harm_change"] = {"value": harm}
    if win is not None:
        ov["win_rate"] = {"value": win}
    return {"summary": {"overall": ov}}


def test_score_is_win_rate_minus_harm_change_in_points():
    assert score(_rec(-0.5, 0.6)) == pytest.approx(110.0)
    assert score(_rec(0.0, 0.5)) == pytest.approx(50.0)
    assert score(_rec(None, 0.5)) == -math.inf and score(_rec(-0.2, None)) == -math.inf


def _step(w: float) -> float:
    """A harm curve shaped like the world's: flat, then a sharp drop between 0.5 and 0.7."""
    return 0.0 if w <= 0.55 else -100.0


def test_refine_bisects_the_step():
    made = []

    def make(w):
        made.append(w)
        return f"m{w:g}"

    ws = refine([0.0, 0.3, 0.5, 0.7, 1.0], 3, make, lambda n: _step(float(n[1:])))
    assert made[5:] == [0.6, 0.55, 0.575]  # first (0.5, 0.7), then always the half that still holds the step
    assert ws == [0.0, 0.3, 0.5, 0.55, 0.575, 0.6, 0.7, 1.0]


def test_flat_harm_is_not_refined():
    ws = refine([0.0, 0.5, 1.0], 4, lambda w: f"m{w:g}", lambda n: -10.0)
    assert ws == [0.0, 0.5, 1.0]


@settings(max_examples=60, deadline=None)
@given(grid=st.lists(st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]), min_size=2, max_size=5, unique=True),
       steps=st.integers(0, 5), harms=st.lists(st.floats(-100, 100), min_size=12, max_size=12))
def test_refine_invariants(grid, steps, harms):
    """Every refined weight lies strictly inside the grid's range, at most ``steps`` are added, each model is made
    once, and each added weight is the midpoint of the adjacent pair with the largest harm jump at that time."""
    harm = {}
    made = []

    def make(w):
        assert w not in made
        made.append(w)
        harm[f"m{w!r}"] = harms[len(made) % len(harms)]
        return f"m{w!r}"

    ws = refine(grid, steps, make, lambda n: harm[n])
    assert ws == sorted(set(ws)) and set(grid) <= set(ws)
    added = made[len(set(grid)):]
    assert len(added) <= steps
    assert all(min(grid) < w < max(grid) for w in added)
    # replay: each addition splits the then-steepest pair
    cur = sorted(set(grid))
    for w in added:
        gaps = [(abs(harm[f"m{b!r}"] - harm[f"m{a!r}"]), b - a, a, b) for a, b in zip(cur, cur[1:]) if b - a >= 0.01]
        _, _, a, b = max(gaps)
        assert w == round((a + b) / 2, 4)
        cur = sorted(cur + [w])
