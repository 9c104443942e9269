"""Which elements an unstable ``torch.sort`` puts before a cut position, without sorting everything.

mergekit keeps ``torch.argsort(|delta|, descending=True)[:k]``. With many equal magnitudes (bfloat16 deltas take
~2k distinct values) the cut splits a group of equal values, and which members of that group land before the cut is
decided by the sort algorithm. On CPU (for the dtypes that do not take a SIMD or radix path) torch runs
``std::sort`` from the C++ standard library: in libstdc++ builds, introsort. Introsort's result at a position
depends only on the partition steps of the segments that contain that position, so replaying those steps (and no
others) gives the kept set in O(n) expected time instead of the O(n log n) full sort. Whether the replay matches the
running torch build is checked once per process on a tie-heavy probe (:func:`replay_matches`); callers fall back to
the full sort when it does not, or when the replay reaches introsort's heapsort fallback.

The replayed algorithm (libstdc++ ``std::sort`` with comparator ``comp(a, b) = a > b`` on the keys, i.e. a
descending sort; an ascending sort is replayed on negated keys):

- while a segment has more than 16 elements: decrement the depth budget (``2 * floor(log2 n)``; at 0, heapsort),
  move the median of the elements at ``lo + 1``, ``mid`` and ``hi - 1`` to ``lo``, and run the unguarded Hoare
  partition of ``[lo + 1, hi)`` around it; recurse into both sides;
- finally an insertion sort, which only reorders elements inside the <= 16-element leaf segments (a stable sort).

The Hoare partition is vectorised: the left scan stops at the elements ``<= pivot`` (in key order, positions
``L_0 < L_1 < ...``), the right scan at the elements ``>= pivot`` (``R_0 > R_1 > ...``); pair ``i`` is swapped while
``L_i < R_i``, and the partition point is ``min(L_m, R_{m-1})`` for the first pair ``m`` that does not swap.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

_THRESHOLD = 16  # libstdc++ _S_threshold


def mergekit_sort(w: Tensor, descending: bool) -> Tensor:
    """mergekit's sort call on its float magnitudes: ``argsort(w, descending=True)`` / ``sort(w).indices``."""
    return torch.argsort(w, descending=True) if descending else torch.sort(w, descending=False).indices


def _median_to_first(v: np.ndarray, idx: np.ndarray, lo: int, a: int, b: int, c: int) -> None:
    """libstdc++ ``__move_median_to_first(lo, a, b, c)`` with ``comp(x, y) = v[x] > v[y]``."""
    va, vb, vc = v[a], v[b], v[c]
    if va > vb:
        pick = b if vb > vc else (c if va > vc else a)
    elif va > vc:
        pick = a
    elif vb > vc:
        pick = c
    else:
        pick = b
    for t in (v, idx):
        t[lo], t[pick] = t[pick], t[lo]


def _partition(v: np.ndarray, idx: np.ndarray, lo: int, hi: int) -> int | None:
    """libstdc++ ``__unguarded_partition(lo + 1, hi, pivot=lo)`` on ``v`` (and ``idx`` alongside); the cut."""
    seg, seg_idx = v[lo + 1:hi], idx[lo + 1:hi]
    pivot = v[lo]
    left = np.flatnonzero(seg <= pivot)
    right = np.flatnonzero(seg >= pivot)[::-1]
    pairs = min(left.size, right.size)
    m = int(np.count_nonzero(left[:pairs] < right[:pairs]))  # a prefix: left increases, right decreases
    cands = ([int(left[m])] if m < left.size else []) + ([int(right[m - 1])] if m > 0 else [])
    if not cands:
        return None  # the scan would leave the segment: not the algorithm we replay
    if m:
        li, ri = left[:m], right[:m]
        for t in (seg, seg_idx):
            tl = t[li]
            t[li] = t[ri]
            t[ri] = tl
    return lo + 1 + min(cands)


def replay_order(keys: np.ndarray, cuts: list[int], depth_limit: int | None = None) -> np.ndarray | None:
    """Replay a descending ``std::sort`` of 1-D integer ``keys`` on every segment that contains a cut.

    Returns the index arrangement the full sort leaves wherever it matters: for each cut ``c``, the set of indices
    at positions ``< c`` equals the full sort's (other segments keep their members, in some order). ``None`` when
    the replay meets introsort's heapsort fallback (the caller sorts in full). ``depth_limit`` overrides
    introsort's ``2 * floor(log2 n)`` (for tests).
    """
    n = keys.size
    v = keys.copy()
    idx = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    depth = 2 * (n.bit_length() - 1) if depth_limit is None else depth_limit
    stack = [(0, n, depth)] if n else []
    while stack:
        lo, hi, depth = stack.pop()
        if not any(lo < c < hi for c in cuts):
            continue  # which elements are in this segment is final; their order does not matter
        if hi - lo <= _THRESHOLD:  # the final insertion sort: stable inside the leaf segment
            order = np.argsort(-v[lo:hi].astype(np.int64), kind="stable")
            v[lo:hi] = v[lo:hi][order]
            idx[lo:hi] = idx[lo:hi][order]
            continue
        if depth == 0:
            return None
        _median_to_first(v, idx, lo, lo + 1, lo + (hi - lo) // 2, hi - 1)
        cut = _partition(v, idx, lo, hi)
        if cut is None:
            return None
        stack += [(cut, hi, depth - 1), (lo, cut, depth - 1)]
    return idx


def window_mask(keys: Tensor, start: int, stop: int, descending: bool) -> Tensor | None:
    """Bool mask of the elements that torch's unstable sort of ``keys`` (non-negative ints) puts at positions
    ``[start, stop)``: ``argsort(keys, descending=True)`` or ``sort(keys).indices``. ``None``: sort in full."""
    k = keys.detach().cpu().reshape(-1).numpy().astype(np.int32)
    if not descending:
        np.negative(k, out=k)
    n = k.size
    idx = replay_order(k, [c for c in (start, stop) if 0 < c < n])
    if idx is None:
        return None
    keep = np.zeros(n, dtype=np.bool_)
    keep[idx[start:stop]] = True
    return torch.from_numpy(keep).to(keys.device)


@functools.cache
def replay_matches(device: str) -> bool:
    """Whether :func:`window_mask` reproduces this torch build's sort on ``device`` (checked once per process):
    tie-heavy probes (bfloat16-like magnitudes, and a few distinct values), both directions, several cuts."""
    if device != "cpu":
        return False
    gen = torch.Generator().manual_seed(0)
    bf16 = (torch.randn(40_000, generator=gen) * 0.01).bfloat16().abs()
    few = torch.randint(0, 5, (3_000,), generator=gen).float()
    for w, keys in ((bf16.float(), bf16.view(torch.int16)), (few, few.view(torch.int32))):
        n = keys.numel()
        for descending in (True, False):  # mergekit's two sort calls
            order = mergekit_sort(w, descending)
            for start, stop in ((0, n // 3), (0, n // 2 + 7), (n // 10, n - n // 5)):
                ref = torch.zeros(n, dtype=torch.bool)
                ref[order[start:stop]] = True
                got = window_mask(keys, start, stop, descending)
                if got is None or not torch.equal(got, ref):
                    return False
    return True
