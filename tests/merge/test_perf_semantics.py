"""Semantics of the fast paths: radix selection, `tie_break: index`, --fast-ties, parallel pruning, finite check."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from safemerge.merge import methods as mt
from safemerge.merge import sparsify as sp
from safemerge.merge.config import load_config
from safemerge.merge.engine import merge_state_dicts, with_fast_ties
from safemerge.merge.task import all_finite


def _quantised(n: int, levels: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-levels, levels + 1, (n,), generator=g).float() * 0.001
    return x.to(dtype)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 40), st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
       st.integers(0, 10**6), st.data())
def test_select_matches_a_sort(n, levels, dtype, seed, data):
    keys = sp.magnitude_keys(_quantised(n, levels, dtype, seed))
    ranks = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3))
    ordered = keys.long().sort().values
    for rank, (value, below, count) in zip(ranks, sp._select(keys, ranks)):
        assert value == int(ordered[rank])
        assert below == int((keys.long() < value).sum()) and count == int((keys.long() == value).sum())


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 3000), st.integers(0, 30), st.sampled_from([torch.float32, torch.bfloat16]),
       st.floats(0.01, 0.99), st.integers(0, 10**6))
def test_index_tie_break_is_a_stable_sort(n, levels, dtype, density, seed):
    delta = _quantised(n, levels, dtype, seed)
    mags = delta.abs().float()
    k = max(1, int(density * n))
    expected = torch.zeros(n, dtype=torch.bool)
    expected[torch.sort(mags, descending=True, stable=True).indices[:k]] = True
    assert torch.equal(sp.magnitude_mask(delta, density, "index"), expected)
    target, n_bot = int(density * n), max(0, n - int(density * n) - int(0.05 * n))
    expected = torch.zeros(n, dtype=torch.bool)
    expected[torch.sort(mags, stable=True).indices[n_bot:n_bot + target]] = True
    assert torch.equal(sp.outlier_mask(delta, density, 0.05, "index"), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bf16_and_fp32_exact_mode_is_mergekits_sort(dtype):
    delta = _quantised(200_000, 500, dtype, 1).reshape(400, 500)
    k = int(0.3 * delta.numel())
    expected = torch.zeros(delta.numel(), dtype=torch.bool)
    expected[torch.argsort(delta.abs().reshape(-1).float(), descending=True)[:k]] = True
    assert torch.equal(sp.magnitude_mask(delta, 0.3, "mergekit").reshape(-1), expected)


def test_parallel_pruning_equals_sequential():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(300, 400, generator=g).bfloat16()
    xs = [(base.float() + 0.01 * torch.randn(300, 400, generator=g)).bfloat16() for _ in range(3)]
    prune = mt._magnitude_pruner([0.3, 0.5, 0.7], False, "mergekit")
    one = mt._task_vectors(base, xs, [0.2, 0.5, 0.3], prune, True, True, 1.0, parallel=False)
    many = mt._task_vectors(base, xs, [0.2, 0.5, 0.3], prune, True, True, 1.0, parallel=True)
    assert torch.equal(one, many)


def test_models_of_an_embedding_sized_tensor_are_pruned_one_at_a_time():
    assert mt.pruned_at_once(mt._PARALLEL_MIN - 1, 3) == 1
    assert mt.pruned_at_once(mt._PARALLEL_MIN, 3) == mt.pruned_at_once(mt._PARALLEL_MAX, 3) == 3
    assert mt.pruned_at_once(32000 * 1536, 3) == 1  # a 32k-vocabulary embedding runs alone and sets the peak


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 400), st.integers(1, 50), st.integers(0, 12),
       st.sampled_from([torch.float32, torch.bfloat16, torch.float16]), st.booleans(), st.booleans(),
       st.sampled_from([1.0, 0.7, -0.5]), st.integers(0, 10**6))
def test_merge_step_in_chunks_gives_the_whole_tensors_bits(m, n, chunk, levels, dtype, consensus, normalize, lam,
                                                          seed):
    """The sign election, disjoint merge, normalisation and scaling are per entry: merged ``chunk`` entries at a
    time (the engine's memory bound for embedding-sized tensors) they give the same bits, signed zeros included."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=g).to(dtype)
    deltas = torch.stack([_quantised(n, levels, dtype, seed + i) for i in range(m)])
    deltas[:, : n // 5] = 0.0
    deltas[0, : n // 7] = -0.0
    weight = [0.6 - 0.3 * i for i in range(m)]
    whole = mt._merge_deltas(base, deltas.clone(), weight, consensus, normalize, lam, chunk=10**9)
    parts = mt._merge_deltas(base, deltas.clone(), weight, consensus, normalize, lam, chunk=chunk)
    kind = {2: torch.int16, 4: torch.int32}[dtype.itemsize]
    assert torch.equal(whole.view(kind), parts.view(kind))


def _cfg(method: str, **params) -> dict:
    return {"merge_method": method, "base_model": "base", "parameters": params,
            "models": [{"model": "a", "parameters": {"weight": 0.6, "density": 0.4}},
                       {"model": "b", "parameters": {"weight": 0.4, "density": 0.6}}]}


def test_fast_ties_sets_index_only_where_unset():
    assert with_fast_ties(load_config(_cfg("ties"))).parameters == {"tie_break": "index"}
    pinned = load_config(_cfg("ties", tie_break="mergekit"))
    assert with_fast_ties(pinned) is pinned
    dare = load_config(_cfg("dare_ties"))
    assert with_fast_ties(dare) is dare


def test_fast_ties_merge_equals_explicit_index_and_differs_only_at_ties():
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(64, 80, generator=g).bfloat16()}
    sds = {"base": base, **{m: {"w": (base["w"].float() + 0.01 * torch.randn(64, 80, generator=g)).bfloat16()}
                            for m in "ab"}}
    fast = merge_state_dicts(_cfg("ties"), sds, fast_ties=True)["w"]
    assert torch.equal(fast, merge_state_dicts(_cfg("ties", tie_break="index"), sds)["w"])
    exact = merge_state_dicts(_cfg("ties"), sds)["w"]
    differ = fast != exact
    if differ.any():  # only entries whose |delta| sits at a model's cut can differ
        cuts = []
        for m, rho in (("a", 0.4), ("b", 0.6)):
            mags = (sds[m]["w"] - base["w"]).abs().float().reshape(-1)
            cuts.append(mags == mags.sort(descending=True).values[int(rho * mags.numel()) - 1])
        assert bool((differ.reshape(-1) <= (cuts[0] | cuts[1])).all())


def test_all_finite():
    assert all_finite(torch.ones(10, dtype=torch.bfloat16)) and all_finite(torch.empty(0))
    for bad in (float("nan"), float("inf"), float("-inf")):
        x = torch.zeros(1000)
        x[517] = bad
        assert not all_finite(x) and not all_finite(x.bfloat16())
    assert all_finite(torch.full((100,), 3e38))  # the sum overflows, the values are finite
    assert all_finite(torch.arange(10))  # integers are always finite


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.data(), st.sampled_from([float("nan"), float("inf"), float("-inf")]),
       st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64]))
def test_all_finite_finds_any_non_finite_entry(n, data, bad, dtype):
    x = torch.randn(n).to(dtype)
    assert all_finite(x)
    x[data.draw(st.integers(0, n - 1))] = bad
    assert not all_finite(x) and not all_finite(x.view(-1, 1))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 500), st.integers(0, 3),
       st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64]), st.integers(0, 10**6))
def test_sign_agreement_bits_equal_mergekits_mask(m, n, levels, dtype, seed):
    """The integer sign-bit election equals mergekit's get_mask (sum method), incl. zeros, -0.0 and zero sums."""
    from mergekit.merge_methods.generalized_task_arithmetic import get_mask

    deltas = torch.stack([_quantised(n, levels, dtype, seed + i) for i in range(m)])
    deltas[deltas == 0] = torch.where(torch.rand(int((deltas == 0).sum())) < 0.5, -0.0, 0.0).to(dtype)
    assert torch.equal(sp.sign_agreement(deltas), get_mask(deltas, "sum"))


def test_merging_restores_the_garbage_collector_state():
    import gc

    sds = {"a": {"w": torch.ones(4)}, "b": {"w": torch.zeros(4)}}
    cfg = {"merge_method": "linear", "models": [{"model": "a", "parameters": {"weight": 1.0}},
                                                 {"model": "b", "parameters": {"weight": 1.0}}]}
    assert gc.isenabled()
    merge_state_dicts(cfg, sds)
    assert gc.isenabled()
    gc.disable()
    try:
        merge_state_dicts(cfg, sds)
        assert not gc.isenabled()
        with pytest.raises(Exception):
            merge_state_dicts({**cfg, "merge_method": "ties", "base_model": "a"}, {"a": sds["a"]})
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("method,key,bad", [("ties", "tie_break", "foo"), ("della", "tie_break", "stable"),
                                            ("dare_ties", "rescale_mode", "l2")])
def test_string_options_are_validated_before_merging(method, key, bad):
    from safemerge.errors import ConfigError

    sds = {"a": {"w": torch.randn(64)}, "b": {"w": torch.randn(64)}}
    cfg = {"merge_method": method, "base_model": "a", "parameters": {key: bad},
           "models": [{"model": "b", "parameters": {"weight": 1.0, "density": 0.5}}]}
    with pytest.raises(ConfigError, match=f"{key} must be one of"):
        merge_state_dicts(cfg, sds)


def _della_reference(x: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """mergekit's della_magprune probabilities with ranks from a STABLE sort (ties in index order)."""
    order = torch.sort(x.abs(), dim=1, stable=True).indices
    ranks = order.argsort(dim=1).to(x.dtype) + 1
    lo, hi = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
    return (density - epsilon) + ((ranks - lo) / (hi - lo)).clamp(0, 1) * 2 * epsilon


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(2, 600), st.integers(0, 6), st.sampled_from([torch.bfloat16, torch.float32]),
       st.integers(0, 10**6))
def test_della_index_tie_break_ranks_ties_in_index_order(rows, cols, levels, dtype, seed):
    x = _quantised(rows * cols, levels, dtype, seed).reshape(rows, cols)
    assert torch.equal(sp.della_probs(x, 0.5, 0.1, "index"), _della_reference(x, 0.5, 0.1))


def test_della_index_tie_break_equals_mergekit_without_ties_and_fast_ties_sets_it():
    x = torch.randn(64, 300, generator=torch.Generator().manual_seed(0))  # fp32: no equal magnitudes
    assert torch.equal(sp.della_probs(x, 0.4, 0.1, "index"), sp.della_probs(x, 0.4, 0.1, "mergekit"))
    cfg = load_config({"merge_method": "della", "base_model": "a", "models": [
        {"model": "b", "parameters": {"weight": 1.0, "density": 0.5, "epsilon": 0.1}}]})
    assert with_fast_ties(cfg).parameters == {"tie_break": "index"}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(0, 4), st.sampled_from([torch.float32, torch.bfloat16, torch.float16,
                                                                  torch.float64]), st.integers(0, 10**6))
def test_mask_is_multiplication_by_the_mask_bit_for_bit(n, levels, dtype, seed):
    """sp.mask_ (integer AND) == mergekit's tensor * mask, signed zeros included, in place."""
    x = _quantised(n, levels, dtype, seed)
    x[::3] = -x[::3]
    keep = torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5
    expected = x * keep.to(dtype)
    out = sp.mask_(x, keep)
    assert out.data_ptr() == x.data_ptr()
    assert torch.equal(out, expected) and torch.equal(torch.signbit(out), torch.signbit(expected))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 6), st.sampled_from([torch.float32, torch.bfloat16, torch.float16,
                                                                  torch.float64]), st.integers(0, 10**6))
def test_agreeing_sum_pair_equals_masked_sum(n, levels, dtype, seed):
    """The two-model TIES sum equals the general sign election + mask + sum bit for bit, signed zeros included
    (few levels: many ties, zeros, -0 and exactly opposite pairs)."""
    g = torch.Generator().manual_seed(seed)
    d = (torch.randint(-levels, levels + 1, (2, n), generator=g).double() * 0.37).to(dtype)
    d[torch.rand(2, n, generator=g) < 0.2] *= -1  # with levels 0 or d == 0: -0
    d[1, : n // 3] = -d[0, : n // 3]
    expected = sp.sum0(sp.mask_(d.clone(), sp.sign_agreement(d)))
    got = sp.agreeing_sum_pair(d)
    kind = {2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]
    assert torch.equal(got.view(kind), expected.view(kind))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 400), st.integers(0, 3),
       st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64]), st.integers(0, 10**6))
def test_sum0_is_the_reduction_bit_for_bit(m, n, levels, dtype, seed):
    """sum0 == x.sum(dim=0) in every bit: two -0.0 sum to +0.0 there, as in mergekit's sums."""
    x = torch.stack([_quantised(n, levels, dtype, seed + i) for i in range(m)])
    x[torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) < 0.3] *= -1  # zeros of both signs
    kind = {2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]
    assert torch.equal(sp.sum0(x).view(kind), x.sum(dim=0).view(kind))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(7, 90), (40, 33), (3, 5, 40), (1, 300), (250,), (64, 100)]), st.integers(1, 400), st.integers(0, 30),
       st.sampled_from([torch.float32, torch.bfloat16]), st.sampled_from(["mergekit", "index"]),
       st.sampled_from(["l1", "inverse_p"]), st.integers(0, 10**6))
def test_della_in_row_blocks_gives_the_whole_tensors_bits(shape, block, levels, dtype, tie_break, mode, seed):
    """DELLA ranks each row on its own and draws one uniform per entry in row-major order: run a block of rows at a
    time (the engine's memory bound on embedding-sized tensors) it gives the same mask, rescale and generator state."""
    n = 1
    for d in shape:
        n *= d
    delta = _quantised(n, levels, dtype, seed).view(shape)
    outs, states = [], []
    saved = sp._DELLA_BLOCK
    try:
        for size in (10**9, block):
            sp._DELLA_BLOCK = size
            g = torch.Generator().manual_seed(seed)
            outs.append(sp.della(delta, 0.5, 0.2, g, tie_break=tie_break, rescale_mode=mode))
            states.append(g.get_state())
    finally:
        sp._DELLA_BLOCK = saved
    kind = {2: torch.int16, 4: torch.int32}[dtype.itemsize]
    assert torch.equal(outs[0].view(kind), outs[1].view(kind))
    assert torch.equal(states[0], states[1])
