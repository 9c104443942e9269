"""Sampling for data mixtures: one helper shared by the world's training recipes (``safemerge.train.recipes``) and the
mixtures built from prepared datasets (``safemerge.data.prepare``), so both follow the same recipe."""

from __future__ import annotations

import random
from typing import Any


def take_cycled(pool: list[dict[str, Any]], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """``n`` rows: a shuffled pass over ``pool``, cycled (re-shuffled) when n exceeds its size."""
    out: list[dict[str, Any]] = []
    while len(out) < n and pool:
        order = list(pool)
        rng.shuffle(order)
        out += order[: n - len(out)]
    return out
