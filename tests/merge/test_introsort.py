"""The introsort replay gives exactly the kept set of torch's real (unstable) sort, as mergekit calls it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from safemerge.merge import introsort, sparsify as sp

pytestmark = pytest.mark.skipif(not introsort.replay_matches("cpu"),
                                reason="this torch build's CPU sort is not libstdc++ introsort: the replay is off")


def _reference(w: torch.Tensor, start: int, stop: int, descending: bool) -> torch.Tensor:
    """mergekit's calls: ``argsort(|d|.float(), descending=True)`` / ``sort(|d|.float()).indices``, windowed."""
    order = torch.argsort(w, descending=True) if descending else torch.sort(w, descending=False).indices
    keep = torch.zeros(w.numel(), dtype=torch.bool)
    keep[order[start:stop]] = True
    return keep


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 40), st.integers(0, 2**31 - 1), st.booleans(), st.data())
def test_replay_equals_torch_sort_on_tie_heavy_keys(n, levels, seed, descending, data):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randint(0, levels, (n,), generator=gen).float()
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, n))
    got = introsort.window_mask(w.view(torch.int32), start, stop, descending)
    assert got is not None
    assert torch.equal(got, _reference(w, start, stop, descending))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 40), st.integers(0, 2**31 - 1), st.booleans(), st.integers(1, 97),
       st.data())
def test_replay_scans_in_chunks_with_the_same_result(n, levels, seed, descending, chunk, data):
    """The partition's scans and swaps run :data:`introsort._CHUNK` entries at a time: any chunk size gives torch's
    kept set (chunk boundaries inside tie runs, at the crossing, beyond the segment)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randint(0, levels, (n,), generator=gen).float()
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, n))
    saved = introsort._CHUNK
    introsort._CHUNK = chunk
    try:
        got = introsort.window_mask(w.view(torch.int32), start, stop, descending)
    finally:
        introsort._CHUNK = saved
    assert got is not None and torch.equal(got, _reference(w, start, stop, descending))


def test_replay_scratch_is_a_few_bytes_per_entry(monkeypatch):
    """numpy's allocations during the replay of a bf16 delta's cut (tracemalloc traces numpy): the key copy (2 bytes
    per entry), the int32 index (4), the stop positions of the first partition (int32, ~half the entries) and the
    mask (1), plus one chunk's temporaries (a fixed ~36 MiB with the default chunk, here n / 32 entries). Before the
    scans were chunked and the keys kept in 16 bits it was 24.2 bytes per entry (9.6 now)."""
    import tracemalloc

    gen = torch.Generator().manual_seed(1)
    n = 1 << 21
    base = torch.randn(n, generator=gen).bfloat16()
    delta = (base.float() + 0.01 * torch.randn(n, generator=gen)).bfloat16() - base
    keys = sp.magnitude_keys(delta)
    monkeypatch.setattr(introsort, "_CHUNK", n // 32)
    tracemalloc.start()
    try:
        keep = introsort.window_mask(keys, 0, n // 2, True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert keep is not None and int(keep.sum()) == n // 2
    assert peak / n < 11, f"{peak / n:.1f} bytes per entry"


@pytest.mark.parametrize("descending", [True, False])
def test_replay_equals_torch_sort_on_a_bf16_delta(descending):
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(300_000, generator=gen).bfloat16()
    delta = (base.float() + 0.01 * torch.randn(300_000, generator=gen)).bfloat16() - base
    keys = sp.magnitude_keys(delta)
    w = delta.abs().float()
    for start, stop in ((0, 150_000), (0, 29_999), (12_345, 250_000)):
        got = introsort.window_mask(keys, start, stop, descending)
        assert got is not None and torch.equal(got, _reference(w, start, stop, descending))


def test_exhausted_depth_budget_means_full_sort():
    keys = np.arange(1000, dtype=np.int32)[::-1].copy()
    assert introsort.replay_order(keys, [500], depth_limit=0) is None
    assert introsort.replay_order(keys, [500]) is not None
    # a cut on a segment edge, or no cut at all, needs no partition
    assert introsort.replay_order(keys, [], depth_limit=0) is not None


def test_magnitude_mask_bf16_uses_the_replay_and_matches_mergekit():
    from mergekit.sparsify import magnitude, magnitude_outliers

    gen = torch.Generator().manual_seed(5)
    base = torch.randn(256, 300, generator=gen).bfloat16()
    delta = (base.float() + 0.02 * torch.randn(256, 300, generator=gen)).bfloat16() - base
    for density in (0.1, 0.5, 0.9):
        ours = torch.where(sp.magnitude_mask(delta, density), delta, 0)
        assert torch.equal(ours, magnitude(delta, density))
        ours = torch.where(sp.outlier_mask(delta, density, 0.05), delta, 0)
        assert torch.equal(ours, magnitude_outliers(delta, density, gamma=0.05))


@pytest.mark.parametrize("descending", [True, False])
def test_a_replay_that_gives_up_leaves_the_full_sort_correct_keys(monkeypatch, descending):
    """The replay rearranges its caller's keys in place (one copy less); when it meets introsort's heapsort fallback
    (here: a depth budget of 1) the caller sorts in full on keys made afresh, and the kept set is still torch's."""
    real = introsort.replay_order
    calls = []

    def no_depth(keys, cuts, depth_limit=None, *, copy=True):
        calls.append(copy)
        return real(keys, cuts, 1, copy=copy)  # one partition (the keys rearranged), then heapsort: give up

    monkeypatch.setattr(introsort, "replay_order", no_depth)
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(50_000, generator=gen).bfloat16()
    delta = (base.float() + 0.01 * torch.randn(50_000, generator=gen)).bfloat16() - base
    start, stop = (0, 20_000) if descending else (5_000, 45_000)
    got = sp._window_mask(delta, start, stop, descending, "mergekit")
    assert calls == [False]  # the replay ran on the scratch keys, and gave up
    assert torch.equal(got.reshape(-1), _reference(delta.abs().float(), start, stop, descending))
