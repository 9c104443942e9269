"""TIES through its ``ranked`` hook (a merge search's cached task vectors and magnitude ranks) is TIES, bit for bit:
one task-vector core, the trim served by ``rank < k``."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from safemerge.merge import sparsify as sp
from safemerge.merge.methods import METHODS, RankedDeltas

BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values and equal signed zeros."""
    return a.dtype == b.dtype and torch.equal(a.view(BITS[a.element_size()]), b.view(BITS[b.element_size()]))


def pool(seed: int, m: int, shape: tuple[int, ...], dtype: torch.dtype, levels: int | None):
    """A base and ``m`` inputs near it; ``levels``: deltas on a coarse grid (many equal magnitudes, signed zeros)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g).to(dtype)
    if levels is None:
        deltas = torch.randn((m, *shape), generator=g) * 0.02
    else:
        deltas = torch.randint(-levels, levels + 1, (m, *shape), generator=g) * 0.01
    return base, [(base.float() + d).to(dtype) for d in deltas]


def ranked_hook(base: torch.Tensor, tensors: list[torch.Tensor], calls: list[str]):
    """What the search's cache hands the method: the deltas, their ranks under the asked tie_break, their L1 norms."""
    def ranked(tie_break: str) -> RankedDeltas:
        calls.append(tie_break)
        deltas = torch.stack([torch.sub(x, base) for x in tensors])
        ranks = torch.stack([sp.magnitude_ranks(d, tie_break) for d in deltas])
        return RankedDeltas(deltas, ranks, torch.stack([d.abs().sum() for d in deltas]))
    return ranked


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), density=st.sampled_from([0.0, 1e-6, 0.1, 0.37, 0.5, 0.999999, 1.0]),
       tie_break=st.sampled_from(["mergekit", "index"]), dtype=st.sampled_from([torch.float32, torch.bfloat16]),
       levels=st.sampled_from([None, 3]))
def test_ranks_below_the_kept_count_are_the_magnitude_mask(seed, density, tie_break, dtype, levels):
    _, (x,) = pool(seed, 1, (17, 29), dtype, levels)
    ranks = sp.magnitude_ranks(x, tie_break)
    assert ranks.shape == x.shape and ranks.dtype == torch.int32
    assert torch.equal(ranks < sp.kept_count(density, x.numel()), sp.magnitude_mask(x, density, tie_break))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 3), dtype=st.sampled_from([torch.float32, torch.bfloat16]),
       levels=st.sampled_from([None, 2]), normalize=st.booleans(), rescale=st.booleans(),
       tie_break=st.sampled_from([None, "mergekit", "index"]), data=st.data())
def test_ties_through_the_ranked_hook_is_ties(seed, m, dtype, levels, normalize, rescale, tie_break, data):
    base, tensors = pool(seed, m, (13, 31), dtype, levels)
    unit = st.sampled_from([0.0, 0.2, 0.37, 0.5, 1.0])
    per_model = [{"weight": data.draw(st.sampled_from([-0.7, 0.3, 0.6, 1.0])), "density": data.draw(unit)}
                 for _ in range(m)]
    shared = {"normalize": normalize, "rescale": rescale, **({"tie_break": tie_break} if tie_break else {}),
              "lambda": data.draw(st.sampled_from([1.0, 0.7]))}
    ties = METHODS["ties"]
    calls: list[str] = []
    want = ties.apply(base, tensors, per_model, shared)
    got = ties.apply(base, tensors, per_model, shared, ranked=ranked_hook(base, tensors, calls))
    assert calls == [tie_break or "mergekit"]  # the hook was used, asked for the method's tie order
    assert same_bits(got, want)


def test_a_hook_that_declines_leaves_the_engine_path():
    base, tensors = pool(0, 2, (8, 8), torch.float32, None)
    per_model = [{"weight": 0.5, "density": 0.4}, {"weight": 0.8, "density": 0.6}]
    ties = METHODS["ties"]
    assert same_bits(ties.apply(base, tensors, per_model, {}, ranked=lambda _tie_break: None),
                     ties.apply(base, tensors, per_model, {}))

