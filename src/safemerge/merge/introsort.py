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
Memory: 16-bit keys stay 16-bit (rearranged in place when the caller gives them up), the index is int32, and only
the stops before and after the scans' crossing are listed (int32, in chunks), so a replay holds ~5-10 bytes per
entry (tests/merge/test_introsort.py measures it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

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


_CHUNK = 1 << 22  # elements per pass of a scan: bounds its bool and int64 temporaries (~36 MiB)


def _positions(seg: np.ndarray, test: Callable[[np.ndarray], np.ndarray], dtype: type) -> np.ndarray:
    """Ascending positions in ``seg`` where ``test`` holds, as ``dtype``, scanned in chunks of :data:`_CHUNK`."""
    parts = [(np.flatnonzero(test(seg[a:a + _CHUNK])) + a).astype(dtype) for a in range(0, seg.size, _CHUNK)]
    return np.concatenate(parts) if parts else np.empty(0, dtype)


def _count(seg: np.ndarray, test: Callable[[np.ndarray], np.ndarray]) -> int:
    return sum(int(np.count_nonzero(test(seg[a:a + _CHUNK]))) for a in range(0, seg.size, _CHUNK))


def _first(seg: np.ndarray, test: Callable[[np.ndarray], np.ndarray], start: int) -> int | None:
    """The first position ``>= start`` in ``seg`` where ``test`` holds, or None."""
    for a in range(start, seg.size, _CHUNK):
        hit = test(seg[a:a + _CHUNK])
        if hit.any():
            return a + int(hit.argmax())
    return None


def _partition(v: np.ndarray, idx: np.ndarray, lo: int, hi: int) -> int | None:
    """libstdc++ ``__unguarded_partition(lo + 1, hi, pivot=lo)`` on ``v`` (and ``idx`` alongside); the cut.

    With ``seg = v[lo + 1:hi]``, let ``A(p)`` count the left stops (``<= pivot``) in ``seg[:p + 1]`` and ``B(p)`` the
    right stops (``>= pivot``) in ``seg[p + 1:]``. Pair ``i`` swaps iff some ``p`` has ``A(p) > i`` and ``B(p) > i``,
    so the number of swaps is ``m = max_p min(A(p), B(p))``, reached where ``A - B`` turns non-negative: at the first
    ``p`` with ``p + 1 + E(p) >= B(-1)`` (every key is ``<=`` or ``>=`` the pivot, so ``A(p) + B(-1) - B(p) = p + 1 +
    E(p)``, ``E`` counting the keys equal to the pivot), or just before it. Only the stops before that crossing
    (left) and after it (right) are listed, in int32 where the segment allows: one pass that lists positions over
    the segment instead of two, and ~4 bytes per element less than listing both kinds over all of it."""
    seg, seg_idx = v[lo + 1:hi], idx[lo + 1:hi]
    pivot = v[lo]
    n = seg.size
    pos = np.int32 if n < 2**31 else np.int64
    le, ge, eq = (lambda c: c <= pivot), (lambda c: c >= pivot), (lambda c: c == pivot)
    total_ge = _count(seg, ge)
    ties = _positions(seg, eq, pos)
    # the crossing: the smallest p in [-1, n - 1] with p + 1 + E(p) >= total_ge (strictly increasing in p)
    a, b = -1, n - 1
    while a < b:
        mid = (a + b) // 2
        if mid + 1 + int(np.searchsorted(ties, mid, side="right")) >= total_ge:
            b = mid
        else:
            a = mid + 1
    cross = a
    del ties
    left = _positions(seg[:cross + 1], le, pos)  # the left stops in seg[:cross + 1], ascending
    right = _positions(seg[cross + 1:], ge, pos)[::-1] + pos(cross + 1)  # the right stops after it, descending
    at_le = cross >= 0 and bool(seg[cross] <= pivot)
    at_ge = cross >= 0 and bool(seg[cross] >= pivot)
    m = min(left.size, right.size)  # min(A, B) at the crossing
    if cross >= 0:  # and one position before it
        m = max(m, min(left.size - at_le, right.size + at_ge))
    if m > right.size:  # the m-th right stop is the crossing position itself
        right = np.append(right, pos(cross))
    nxt = int(left[m]) if m < left.size else _first(seg, le, cross + 1)
    cands = ([nxt] if nxt is not None else []) + ([int(right[m - 1])] if m > 0 else [])
    if not cands:
        return None  # the scan would leave the segment: not the algorithm we replay
    for a in range(0, m, _CHUNK):  # the pairs' positions are disjoint: swapped a chunk at a time
        li, ri = left[a:min(m, a + _CHUNK)], right[a:min(m, a + _CHUNK)]
        for t in (seg, seg_idx):
            tl = t[li]
            t[li] = t[ri]
            t[ri] = tl
    return lo + 1 + min(cands)


def replay_order(keys: np.ndarray, cuts: list[int], depth_limit: int | None = None, *,
                 copy: bool = True) -> np.ndarray | None:
    """Replay a descending ``std::sort`` of 1-D integer ``keys`` on every segment that contains a cut.

    Returns the index arrangement the full sort leaves wherever it matters: for each cut ``c``, the set of indices
    at positions ``< c`` equals the full sort's (other segments keep their members, in some order). ``None`` when
    the replay meets introsort's heapsort fallback (the caller sorts in full). ``depth_limit`` overrides
    introsort's ``2 * floor(log2 n)`` (for tests). ``copy=False``: rearrange ``keys`` itself (a scratch copy).
    """
    n = keys.size
    v = keys.copy() if copy else keys
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


def window_mask(keys: Tensor, start: int, stop: int, descending: bool, *, scratch: bool = False) -> Tensor | None:
    """Bool mask of the elements that torch's unstable sort of ``keys`` (non-negative ints) puts at positions
    ``[start, stop)``: ``argsort(keys, descending=True)`` or ``sort(keys).indices``. ``None``: sort in full.
    ``scratch``: ``keys`` (a contiguous CPU tensor) is the caller's to lose: the replay rearranges it in place
    instead of a copy."""
    k = keys.detach().cpu().reshape(-1).numpy()  # int16 keys stay int16 (2 bytes per element of scratch)
    if not (scratch and keys.device.type == "cpu" and keys.is_contiguous()):
        k = k.copy()
    if not descending:
        np.negative(k, out=k)  # non-negative keys: the negation fits the dtype
    n = k.size
    idx = replay_order(k, [c for c in (start, stop) if 0 < c < n], copy=False)
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
