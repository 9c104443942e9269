"""The numpy copy of torch's CPU random stream: same masks as ``torch.rand(...) < p``, generator left where torch
would leave it (mergekit's DARE/DELLA masks depend on both)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from safemerge.merge import mtstream
from safemerge.merge import sparsify as sp


def test_this_torch_build_uses_the_numpy_stream():
    assert mtstream.numpy_stream_matches()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**63 - 1), st.integers(0, 700), st.lists(st.integers(1, 20_000), min_size=1, max_size=4),
       st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0, 1e-9, 0.3333]), st.booleans())
def test_masks_and_state_equal_torch(seed, skip, sizes, p, per_element):
    ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    torch.rand(skip, generator=ours), torch.rand(skip, generator=theirs)  # start anywhere in MT19937's block
    for n in sizes:
        shape = (n // 7 + 1, 7) if n % 2 else (n,)
        prob = (torch.rand(shape, generator=torch.Generator().manual_seed(n)) if per_element
                else torch.tensor(p, dtype=torch.bfloat16).float())
        expected = torch.rand(shape, generator=theirs, dtype=torch.float32) < prob
        got = mtstream.bernoulli_keep(shape, prob, ours)
        assert got.shape == expected.shape and torch.equal(got, expected)
    assert torch.equal(ours.get_state(), theirs.get_state())
    assert torch.equal(torch.rand(50, generator=ours), torch.rand(50, generator=theirs))


def test_large_tensor_crosses_chunks_and_matches_bernoulli():
    n = 3 * mtstream._CHUNK + 12345
    ours, theirs = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    prob = torch.tensor(0.5, dtype=torch.bfloat16).float()
    expected = torch.bernoulli(torch.full((n,), 0.5, dtype=torch.bfloat16), generator=theirs).bool()
    assert torch.equal(mtstream.bernoulli_keep((n,), prob, ours), expected)
    assert torch.equal(ours.get_state(), theirs.get_state())


def test_paths_that_stay_on_torch():
    prob = torch.tensor(0.4)
    for gen in (None, torch.Generator().manual_seed(1)):  # the global generator; a tensor below the numpy minimum
        torch.manual_seed(3)
        ref_gen = torch.Generator().manual_seed(1)
        got = mtstream.bernoulli_keep((10,), prob, gen)
        torch.manual_seed(3)
        expected = torch.rand(10, generator=None if gen is None else ref_gen) < prob
        assert torch.equal(got, expected)
    nan = torch.tensor(float("nan"))
    assert not mtstream.bernoulli_keep((5000,), nan, torch.Generator().manual_seed(0)).any()


def test_dare_in_place_only_when_asked():
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(64, 100, generator=gen).bfloat16()
    for rescale_mode in ("l1", "inverse_p"):
        kept = delta.clone()
        copy = sp.dare(kept, 0.3, torch.Generator().manual_seed(5), rescale_mode=rescale_mode)
        assert torch.equal(kept, delta)
        scratch = delta.clone()
        inplace = sp.dare(scratch, 0.3, torch.Generator().manual_seed(5), rescale_mode=rescale_mode, inplace=True)
        assert inplace.data_ptr() == scratch.data_ptr() and torch.equal(inplace.view(torch.int16),
                                                                         copy.view(torch.int16))
    fp16 = delta.half()  # work dtype float32: a copy even in place
    assert sp.dare(fp16, 0.3, torch.Generator().manual_seed(5), inplace=True).data_ptr() != fp16.data_ptr()
