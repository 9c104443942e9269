"""Deterministic train/val/test assignment of template and entity indices (disjoint by construction)."""

from __future__ import annotations

import random

SPLITS: tuple[str, ...] = ("train", "val", "test")


def split_sizes(n: int, val_frac: float, test_frac: float) -> tuple[int, int, int]:
    """Sizes (train, val, test) for ``n`` items; every split gets at least one item when ``n >= 3``."""
    if n < 3:
        raise ValueError(f"need at least 3 items to split, got {n}")
    val = max(1, round(n * val_frac))
    test = max(1, round(n * test_frac))
    return n - val - test, val, test


def assign(n: int, rng_key: str, val_frac: float = 0.15, test_frac: float = 0.15,
           sizes: tuple[int, int, int] | None = None) -> dict[str, list[int]]:
    """Shuffle ``range(n)`` with a seeded RNG and cut it into train/val/test index lists (sorted)."""
    order = list(range(n))
    random.Random(rng_key).shuffle(order)
    tr, va, te = sizes or split_sizes(n, val_frac, test_frac)
    assert tr + va + te == n and min(tr, va, te) >= 1, (n, sizes)
    return {"train": sorted(order[:tr]), "val": sorted(order[tr:tr + va]), "test": sorted(order[tr + va:])}


def round_robin(groups: list[list[dict]], cap: int) -> list[dict]:
    """Take items from each group in turn until ``cap`` items are taken or all groups are empty."""
    out: list[dict] = []
    iters = [iter(g) for g in groups]
    while iters and len(out) < cap:
        alive = []
        for it in iters:
            item = next(it, None)
            if item is None:
                continue
            out.append(item)
            alive.append(it)
            if len(out) >= cap:
                break
        iters = alive
    return out


def entity_splits(seed: int, n_towns: int, n_people: int) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """(towns, people) split index lists of the knowledge base; a quarter of each are test entities."""
    return (assign(n_towns, f"towns-{seed}", test_frac=0.25), assign(n_people, f"people-{seed}", test_frac=0.25))
