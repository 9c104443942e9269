"""Merge methods: hypothesis invariants (identities, endpoints, exact pruning counts, determinism, dtypes)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from safemerge.merge import sparsify as sp
from safemerge.merge.methods import METHODS

FLOATS = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)
COARSE = st.integers(-4, 4).map(float)  # many exact ties in magnitude
WEIGHTS = st.floats(0.0625, 3.0, allow_nan=False, width=32)
SETTINGS = settings(max_examples=60, deadline=None)


def vectors(n_min: int = 1, n_max: int = 64, elements=FLOATS):
    return st.lists(elements, min_size=n_min, max_size=n_max).map(lambda v: torch.tensor(v, dtype=torch.float32))


@SETTINGS
@given(vectors(), st.lists(WEIGHTS, min_size=1, max_size=4))
def test_linear_of_identical_tensors_is_the_tensor(x, weights):
    out = METHODS["linear"].apply(None, [x] * len(weights), [{"weight": w} for w in weights], {})
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(vectors(2), st.data())
def test_slerp_endpoints_exact(a, data):
    b = data.draw(vectors(a.numel(), a.numel()))
    slerp = METHODS["slerp"]
    assert torch.equal(slerp.apply(a, [b], [{}], {"t": 0.0}), a)
    assert torch.equal(slerp.apply(a, [b], [{}], {"t": 1.0}), b)


@SETTINGS
@given(vectors(), st.data(), st.floats(-2, 2, allow_nan=False, width=32).filter(lambda w: abs(w) > 1e-3))
def test_ties_density_one_single_model_is_task_arithmetic(base, data, weight):
    x = data.draw(vectors(base.numel(), base.numel()))
    pm = [{"weight": weight, "density": 1.0}]
    ties = METHODS["ties"].apply(base, [x], pm, {"normalize": False})
    ta = METHODS["task_arithmetic"].apply(base, [x], [{"weight": weight}], {})
    assert torch.equal(ties, ta)


@SETTINGS
@given(st.one_of(vectors(1, 200), vectors(1, 200, COARSE)), st.floats(0.01, 0.99),
       st.sampled_from(["mergekit", "index"]))
def test_magnitude_keeps_exactly_k_largest(x, density, tie_break):
    keep = sp.magnitude_mask(x, density, tie_break)
    k = max(1, int(density * x.numel()))
    assert int(keep.sum()) == k
    if k < x.numel():
        assert x.abs()[keep].min() >= x.abs()[~keep].max()


@SETTINGS
@given(vectors(1, 200, COARSE), st.floats(0.01, 0.99))
def test_magnitude_mergekit_tie_break_equals_mergekit_argsort(x, density):
    k = max(1, int(density * x.numel()))
    expected = torch.zeros(x.numel(), dtype=torch.bool)
    expected[torch.argsort(x.abs().float(), descending=True)[:k]] = True
    keep = sp.magnitude_mask(x, density, "mergekit")
    # kept sets may differ only among zeros (a kept zero and a dropped zero merge identically)
    assert torch.equal(keep | (x == 0), expected | (x == 0))


@SETTINGS
@given(st.one_of(vectors(1, 200), vectors(1, 200, COARSE)), st.floats(0.0, 0.99), st.floats(0.0, 0.5),
       st.sampled_from(["mergekit", "index"]))
def test_breadcrumbs_keeps_exactly_k_inside_the_band(x, density, gamma, tie_break):
    n = x.numel()
    keep = sp.outlier_mask(x, density, gamma, tie_break)
    k = int(density * n)
    assert int(keep.sum()) == k
    n_top = n - k - max(0, n - k - int(gamma * n))  # outliers actually dropped
    ordered = x.abs().sort().values
    if k:
        assert x.abs()[keep].min() >= ordered[n - k - n_top] and x.abs()[keep].max() <= ordered[n - 1 - n_top]


@SETTINGS
@given(vectors(4, 64), st.integers(0, 2**31 - 1), st.sampled_from(["dare_ties", "dare_linear", "della",
                                                                    "della_linear"]))
def test_random_methods_deterministic_for_a_seed(x, seed, name):
    base = torch.zeros_like(x)
    pm = [{"weight": 1.0, "density": 0.5}, {"weight": 0.5, "density": 0.3}]
    ys = [x, x.flip(0)]
    spec = METHODS[name]
    a = spec.apply(base, ys, pm, {}, torch.Generator().manual_seed(seed))
    b = spec.apply(base, ys, pm, {}, torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)


def test_random_methods_use_only_the_given_generator():
    x = torch.randn(5000)
    spec = METHODS["dare_ties"]
    pm = [{"weight": 1.0, "density": 0.5}]
    torch.manual_seed(0)
    a = spec.apply(torch.zeros_like(x), [x], pm, {}, torch.Generator().manual_seed(1))
    torch.manual_seed(99)  # the global RNG must not matter
    b = spec.apply(torch.zeros_like(x), [x], pm, {}, torch.Generator().manual_seed(1))
    c = spec.apply(torch.zeros_like(x), [x], pm, {}, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_methods_independent_of_thread_count():
    """Masks never depend on the thread count; with rescale_mode inverse_p nothing does. The default L1 rescale
    uses torch's full-tensor sum (as mergekit does), whose last bit may change with the thread count."""
    x = torch.randn(300, 200)
    pm = [{"weight": 1.0, "density": 0.4}, {"weight": 0.5, "density": 0.6}]
    ys = [x, -x.T.reshape(300, 200)]
    threads = torch.get_num_threads()
    outs = []
    for n in (1, 2):
        torch.set_num_threads(n)
        try:
            outs.append([METHODS[m].apply(torch.zeros_like(x), ys, pm, {"rescale_mode": mode},
                                          torch.Generator().manual_seed(5))
                         for m in ("dare_ties", "della") for mode in ("inverse_p", "l1")])
        finally:
            torch.set_num_threads(threads)
    for i, (a, b) in enumerate(zip(*outs)):
        assert torch.equal(a != 0, b != 0)
        if i % 2 == 0:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=0)


CALLS = {
    "linear": (False, [{"weight": 0.4}, {"weight": 0.6}], {}),
    "slerp": (True, [{}], {"t": 0.3}),
    "nuslerp": (True, [{"weight": 0.4}, {"weight": 0.6}], {}),
    "multislerp": (True, [{"weight": 0.4}, {"weight": 0.6}], {}),
    "karcher": (False, [{}, {}], {}),
    "task_arithmetic": (True, [{"weight": 0.4}, {"weight": 0.6}], {}),
    "ties": (True, [{"weight": 0.4, "density": 0.5}, {"weight": 0.6, "density": 0.5}], {}),
    "dare_linear": (True, [{"weight": 0.4, "density": 0.5}, {"weight": 0.6, "density": 0.5}], {}),
    "dare_ties": (True, [{"weight": 0.4, "density": 0.5}, {"weight": 0.6, "density": 0.5}], {}),
    "breadcrumbs": (True, [{"weight": 0.4, "density": 0.5}, {"weight": 0.6, "density": 0.5}], {}),
    "breadcrumbs_ties": (True, [{"weight": 0.4, "density": 0.5}, {"weight": 0.6, "density": 0.5}], {}),
    "della": (True, [{"weight": 0.4, "density": 0.5}, {"weight": 0.6, "density": 0.5}], {}),
    "della_linear": (True, [{"weight": 0.4, "density": 0.5}, {"weight": 0.6, "density": 0.5}], {}),
    "sce": (True, [{}, {}], {"select_topk": 0.5}),
    "model_stock": (True, [{}, {}], {}),
    "nearswap": (True, [{}], {"t": 0.01}),
    "passthrough": (False, [{"scale": 2.0}], {}),
    "arcee_fusion": (True, [{}], {}),
    "ram": (True, [{}, {}], {}),
    "ramplus_tl": (True, [{}, {}], {"r": 0.5}),
}


def test_every_method_has_a_shape_dtype_case():
    assert set(CALLS) == set(METHODS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", sorted(CALLS))
@settings(max_examples=8, deadline=None)
@given(shape=st.sampled_from([(7,), (3, 5), (2, 3, 4)]), seed=st.integers(0, 1000))
def test_output_dtype_and_shape_equal_input(name, dtype, shape, seed):
    with_base, pm, glob = CALLS[name]
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g).to(dtype)
    xs = [(base.float() + torch.randn(shape, generator=g)).to(dtype) for _ in pm]
    out = METHODS[name].apply(base if with_base else None, xs, pm, glob, torch.Generator().manual_seed(seed))
    assert out.dtype == dtype and out.shape == base.shape


@pytest.mark.parametrize("name", sorted(CALLS))
def test_inputs_are_not_modified(name):
    with_base, pm, glob = CALLS[name]
    base = torch.randn(4, 6)
    xs = [base + torch.randn(4, 6) for _ in pm]
    copies = [base.clone(), *(x.clone() for x in xs)]
    METHODS[name].apply(base if with_base else None, xs, pm, glob, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(copies, [base, *xs]))
