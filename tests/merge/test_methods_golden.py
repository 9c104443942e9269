"""Merge methods: hand-computed golden values, edge cases, and same-input parity with mergekit 0.1.5's methods."""

from __future__ import annotations

import math

import pytest
import torch

from safemerge.errors import ConfigError
from safemerge.merge import sparsify as sp
from safemerge.merge.methods import METHODS, get_method

R = 1 / math.sqrt(2)  # 0.70710678...


def T(*values: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def run(name: str, base, tensors, per_model=None, seed: int = 0, **global_params):
    spec = get_method(name)
    per_model = per_model if per_model is not None else [{} for _ in tensors]
    return spec.apply(base, tensors, per_model, global_params, torch.Generator().manual_seed(seed))


def close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-6) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (actual, expected)
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------------ golden values
def test_linear_golden():
    a, b = T(1, 2), T(3, 6)
    close(run("linear", None, [a, b], [{"weight": 1}, {"weight": 3}]), T(2.5, 5.0))  # (1+9)/4, (2+18)/4
    close(run("linear", None, [a, b], [{"weight": 1}, {"weight": 3}], normalize=False), T(10, 20))
    close(run("linear", None, [a], [{"weight": 2}]), a)  # a single model
    out = run("linear", None, [T(1, 2, dtype=torch.bfloat16), T(3, 4, dtype=torch.bfloat16)],
              [{"weight": 0.5}, {"weight": 0.5}])
    assert out.dtype == torch.bfloat16 and torch.equal(out, T(2, 3, dtype=torch.bfloat16))


def test_slerp_golden():
    v0, v1 = T(1, 0), T(0, 1)
    close(run("slerp", v0, [v1], t=0.5), T(R, R))  # theta = pi/2: sin(pi/4)/sin(pi/2) each
    close(run("slerp", v0, [v1], t=1 / 3), T(math.cos(math.pi / 6), math.sin(math.pi / 6)))
    assert torch.equal(run("slerp", v0, [v1], t=0.0), v0)
    assert torch.equal(run("slerp", v0, [v1], t=1.0), v1)
    # collinear (|cos| > 0.9995): linear interpolation 0.75*[1,2] + 0.25*[2,4]
    close(run("slerp", T(1, 2), [T(2, 4)], t=0.25), T(1.25, 2.5))
    # antipodal also falls back to linear: halfway is the origin
    close(run("slerp", T(1, -2), [T(-1, 2)], t=0.5), T(0, 0))
    # bf16 in, bf16 out, computed in fp32: [R, R] rounded to bf16
    out = run("slerp", v0.bfloat16(), [v1.bfloat16()], t=0.5)
    assert out.dtype == torch.bfloat16 and torch.equal(out, T(R, R).bfloat16())


def test_task_arithmetic_golden():
    base, x1, x2 = T(1, 1, 1), T(2, 0, 1), T(1, 3, 1)  # deltas [1,-1,0] and [0,2,0]
    pm = [{"weight": 1.0}, {"weight": 0.5}]
    close(run("task_arithmetic", base, [x1, x2], pm), T(2, 1, 1))  # 1 + [1,-1,0] + 0.5*[0,2,0]
    close(run("task_arithmetic", base, [x1, x2], pm, **{"lambda": 2.0}), T(3, 1, 1))
    close(run("task_arithmetic", base, [x1, x2], pm, normalize=True), T(1 + 1 / 1.5, 1, 1))
    assert torch.equal(run("task_arithmetic", base, []), base)  # no model besides the base


def test_ties_golden():
    base = torch.zeros(4)
    x1, x2 = T(3, -1, 2, -4), T(-1, 2, 1, 5)
    # density 0.5 (k=2): x1 -> [3,0,0,-4], x2 -> [0,2,0,5]; weights 1,2 -> [3,0,0,-4], [0,4,0,10]
    # elected signs of the sum [3,4,0,6]: + + + +; agreeing: x1 at 0, x2 at 1 and 3
    pm = [{"weight": 1, "density": 0.5}, {"weight": 2, "density": 0.5}]
    close(run("ties", base, [x1, x2], pm, normalize=False), T(3, 4, 0, 10))
    close(run("ties", base, [x1, x2], pm), T(3, 2, 0, 5))  # divided by the agreeing weights [1,2,1(0),2]
    # density 1: no trim; sum [2,1,3,1] all +; agreeing x1 {0,2}, x2 {1,2,3}; divisor [1,1,2,1]
    pm1 = [{"weight": 1, "density": 1.0}, {"weight": 1, "density": 1.0}]
    close(run("ties", base, [x1, x2], pm1), T(3, 2, 1.5, 5))
    # density 0: everything trimmed, the base comes back
    pm0 = [{"weight": 1, "density": 0.0}, {"weight": 1, "density": 0.0}]
    assert torch.equal(run("ties", base + 1, [x1, x2], pm0), base + 1)
    # all-zero deltas: divisor 0 counts as 1, result is the base
    assert torch.equal(run("ties", x1, [x1.clone(), x1.clone()], pm), x1)
    # exactly opposite deltas: the sum is 0, elected sign is +, only the positive one agrees
    close(run("ties", T(0), [T(1), T(-1)], [{"weight": 1}, {"weight": 1}]), T(1))


def test_magnitude_ties_in_magnitude():
    d = T(1, -1, 1, 2, -1)
    # k = int(0.4 * 5) = 2: 2 is kept, one of the three 1s; index tie-break keeps the first
    assert sp.magnitude_mask(d, 0.4, "index").tolist() == [True, False, False, True, False]
    # mergekit tie-break: exactly the set torch.argsort(|d|, descending=True)[:2] keeps
    expected = torch.zeros(5, dtype=torch.bool)
    expected[torch.argsort(d.abs(), descending=True)[:2]] = True
    assert torch.equal(sp.magnitude_mask(d, 0.4, "mergekit"), expected)
    # a positive density keeps at least one entry: int(0.1 * 5) = 0 -> 1
    assert sp.magnitude_mask(T(1, -3, 2, 0, 0.5), 0.1).tolist() == [False, True, False, False, False]


def test_breadcrumbs_golden():
    d = T(-1, 2, -3, 4, -5, 6, -7, 8, -9, 10)
    # density 0.5 -> 5 kept; gamma 0.1 -> the single largest (10) dropped; so |d| ranks 5..9 survive
    out = run("breadcrumbs", torch.zeros(10), [d], [{"weight": 1, "density": 0.5, "gamma": 0.1}])
    close(out, T(0, 0, 0, 0, -5, 6, -7, 8, -9, 0))
    out = run("breadcrumbs", torch.zeros(10), [d], [{"weight": 1, "density": 0.5, "gamma": 0.0}])
    close(out, T(0, 0, 0, 0, 0, 6, -7, 8, -9, 10))  # gamma 0 is plain top-k
    # the outlier cut shrinks to keep the density: density 0.95 -> 9 kept, so gamma 0.2 drops 1, not 2
    out = run("breadcrumbs", torch.zeros(10), [d], [{"weight": 2, "density": 0.95, "gamma": 0.2}])
    close(out, 2 * T(-1, 2, -3, 4, -5, 6, -7, 8, -9, 0))


def test_breadcrumbs_ties_golden():
    base = torch.zeros(4)
    # gamma 0.25 drops the largest |.|, density 0.5 keeps the next 2:
    # x1 = [1,-2,3,4] -> [0,-2,3,0]; x2 = [0.5,1,-3,9] -> [0,1,-3,0]
    # sum [0,-1,0,0] -> elected + - + +; x1 agrees at 1 and 2, x2 nowhere -> [0,-2,3,0]
    x1, x2 = T(1, -2, 3, 4), T(0.5, 1, -3, 9)
    pm = [{"weight": 1, "density": 0.5, "gamma": 0.25}, {"weight": 1, "density": 0.5, "gamma": 0.25}]
    close(run("breadcrumbs_ties", base, [x1, x2], pm), T(0, -2, 3, 0))


def test_dare_edge_cases():
    base, x = T(1, 1, 1, 1), T(2, 3, -1, 1)
    # density 1: nothing dropped, DARE-linear is task arithmetic
    close(run("dare_linear", base, [x], [{"weight": 0.5, "density": 1.0}]), T(1.5, 2, 0, 1))
    # density 0: everything dropped
    assert torch.equal(run("dare_ties", base, [x], [{"weight": 1, "density": 0.0}]), base)
    # inverse_p rescale: survivors are exactly delta / density = 2 / 0.5 = 4
    delta = torch.full((10_000,), 2.0)
    out = run("dare_linear", torch.zeros(10_000), [delta], [{"weight": 1, "density": 0.5}],
              rescale_mode="inverse_p")
    assert set(out.unique().tolist()) == {0.0, 4.0}
    assert 4_700 < int((out == 4).sum()) < 5_300  # Binomial(10000, 0.5): +-6 sigma
    # l1 rescale (mergekit): the L1 norm of the delta is preserved
    out = run("dare_linear", torch.zeros(10_000), [torch.linspace(-1, 1, 10_000)], [{"weight": 1, "density": 0.3}])
    torch.testing.assert_close(out.abs().sum(), torch.linspace(-1, 1, 10_000).abs().sum(), rtol=1e-5, atol=0)


def test_della_probabilities_golden():
    # |d| ranks 1,3,2 -> normalised 0, 1, 0.5 -> p = 0.4 + 0.2 * [0, 1, 0.5]
    p = sp.della_probs(T(0.1, -0.3, 0.2), density=0.5, epsilon=0.1)
    close(p, T(0.4, 0.6, 0.5).unsqueeze(0))
    # 2-D: per row
    p = sp.della_probs(T(3, 1, 2, -1, -3, -2).view(2, 3), density=0.5, epsilon=0.2)
    close(p, T(0.7, 0.3, 0.5, 0.3, 0.7, 0.5).view(2, 3))
    with pytest.raises(ConfigError, match="epsilon"):
        run("della", torch.zeros(4), [T(1, 2, 3, 4)], [{"weight": 1, "density": 0.1, "epsilon": 0.2}])
    base, x = T(1, 1), T(2, -1)
    close(run("della", base, [x], [{"weight": 1, "density": 1.0}]), x)  # density 1: no drop, own sign


def test_sce_golden():
    # d = [[1,2],[3,-2]]; elected + +; agree [[T,T],[T,F]]; w = mean(d^2) / sum = [2.5, 6.5] / 9
    # entry 0: (1*2.5 + 3*6.5) / 9 = 22/9; entry 1: (2*2.5/9) / (2.5/9) = 2
    close(run("sce", torch.zeros(2), [T(1, 2), T(3, -2)]), T(22 / 9, 2))
    assert torch.equal(run("sce", T(5, 5), []), T(5, 5))


def test_model_stock_golden():
    base = torch.zeros(2)
    close(run("model_stock", base, [T(1, 0), T(0, 1)]), T(0, 0))  # orthogonal: cos 0 -> t 0 -> base
    close(run("model_stock", base, [T(1, 1), T(1, 1)]), T(1, 1))  # cos 1 -> t = 2/2 = 1 -> average
    c = R  # cos([1,0],[1,1])
    t = 2 * c / (1 + c)
    close(run("model_stock", base, [T(1, 0), T(1, 1)]), T(t * 1.0, t * 0.5))


def test_nearswap_golden():
    # |diff| = [0.05, 1, 2]; w = clamp(0.1 / diff, 0, 1) = [1, 0.1, 0.05]
    close(run("nearswap", torch.zeros(3), [T(0.05, 1.0, -2.0)], t=0.1), T(0.05, 0.1, -0.1))


def test_nuslerp_multislerp_karcher_golden():
    close(run("nuslerp", None, [T(1, 0), T(0, 1)], [{"weight": 1}, {"weight": 1}]), T(R, R))
    close(run("nuslerp", T(1, 1), [T(2, 1), T(1, 2)], [{"weight": 1}, {"weight": 1}]), T(1 + R, 1 + R))
    # weight 1:3 -> t = 0.75 -> [cos(3pi/8), sin(3pi/8)]
    close(run("nuslerp", None, [T(1, 0), T(0, 1)], [{"weight": 1}, {"weight": 3}]),
          T(math.cos(3 * math.pi / 8), math.sin(3 * math.pi / 8)))
    close(run("multislerp", None, [T(1, 0), T(0, 1)], [{"weight": 1}, {"weight": 1}]), T(R, R), tol=1e-6)
    close(run("multislerp", None, [T(3, 4)], [{"weight": 1}]), T(3, 4))  # single model unchanged
    close(run("karcher", None, [T(2, 0), T(0, 2)]), T(2 * R, 2 * R), tol=1e-5)
    # mean direction [0,1] (the +-x tangents cancel), scale = mean norm = 1
    close(run("karcher", None, [T(1, 0), T(0, 1), T(-1, 0)]), T(0, 1), tol=1e-5)


def test_passthrough_golden():
    assert torch.equal(run("passthrough", None, [T(1, -2)], [{"scale": 2.0}]), T(2, -4))
    assert torch.equal(run("passthrough", None, [T(1, -2)]), T(1, -2))


def test_arcee_fusion_golden():
    # 1-D: one KL for the whole vector, so importance = KL * |d| = KL * [1, 2, 3, 4, 10]; quantile indices
    # floor([0.25, 0.5, 0.75] * 4) = 1, 2, 3 -> 2 KL, 3 KL, 4 KL; fence 3 KL + 1.5 (4 KL - 2 KL) = 6 KL: only 10 passes
    base, x = T(1, 1, 1, 1, 1), T(2, -1, 4, -3, 11)
    assert torch.equal(run("arcee_fusion", base, [x]), T(1, 1, 1, 1, 11))
    # softmax ignores a constant shift: row 0 moves by 5 everywhere, KL 0, importance 0 however large the move.
    # Importance [0, 0, 0, a, 2a, 9a]: indices floor(q * 5) = 1, 2, 3 -> 0, 0, a; fence 1.5a keeps 2a and 9a
    base, x = torch.zeros(2, 3), T(5, 5, 5, 1, 2, 9).view(2, 3)
    assert torch.equal(run("arcee_fusion", base, [x]), T(0, 0, 0, 0, 2, 9).view(2, 3))
    # no change at all: importance 0 everywhere, fence 0, every entry kept: the result is the (unchanged) model
    assert torch.equal(run("arcee_fusion", x, [x.clone()]), x)
    # bf16 in, bf16 out (the mask is float32, as in mergekit: the result is rounded once)
    out = run("arcee_fusion", base.bfloat16(), [x.bfloat16()])
    assert out.dtype == torch.bfloat16 and torch.equal(out, T(0, 0, 0, 0, 2, 9, dtype=torch.bfloat16).view(2, 3))


def test_ram_golden():
    # |d| > epsilon (1e-5) marks a change: x1 changes entries 0 and 2, x2 only entry 0 (1e-6 counts as unchanged).
    # entry 0, changed by both: their mean (1 + 3) / 2; entry 2, by x1 alone: its whole delta
    base, x1, x2 = torch.zeros(4), T(1, 0, 2, 0), T(3, 0, 0, 1e-6)
    assert torch.equal(run("ram", base, [x1, x2]), T(2, 0, 2, 0))
    assert torch.equal(run("ram", base + 1, [x1 + 1, x2 + 1]), T(3, 1, 3, 1))
    # epsilon 1.5: x1's change of 1 no longer counts, entry 0 is x2's alone
    assert torch.equal(run("ram", base, [x1, x2], epsilon=1.5), T(3, 0, 2, 0))
    assert torch.equal(run("ram", base, []), base)  # no model besides the base


def test_ramplus_tl_golden():
    base, x1, x2 = torch.zeros(4), T(1, 0, 2, 0), T(3, 0, 0, 1e-6)
    # x1 changes 1 entry with x2 (entry 0) and 1 alone (entry 2): rho = 1/1; x2 changes none alone: rho = 1/1e-5.
    # lambda = 1 + r min(rho, alpha): x1's lone entry 2 is scaled by 1 + 0.5 * 1 = 1.5; shared entry 0 is the mean
    close(run("ramplus_tl", base, [x1, x2], r=0.5, alpha=1.0), T(2, 0, 3, 0))
    close(run("ramplus_tl", base, [x1, x2]), T(2, 0, 2 * (1 + 0.1 * 0.2), 0))  # defaults r 0.1, alpha 0.2
    assert torch.equal(run("ramplus_tl", base, [x1, x2], r=0.0), run("ram", base, [x1, x2]))  # r = 0 is RAM
    out = run("ramplus_tl", base.bfloat16(), [x1.bfloat16(), x2.bfloat16()], r=0.5, alpha=1.0)
    assert out.dtype == torch.bfloat16 and torch.equal(out, T(2, 0, 3, 0, dtype=torch.bfloat16))


def test_registry_and_errors():
    assert set(METHODS) == {"linear", "slerp", "nuslerp", "multislerp", "karcher", "task_arithmetic", "ties",
                            "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties", "della", "della_linear",
                            "sce", "model_stock", "nearswap", "passthrough", "arcee_fusion", "ram", "ramplus_tl"}
    with pytest.raises(ConfigError, match="^merge_method: unknown merge method 'tiez'; choose one of .*ties"):
        get_method("tiez")
    with pytest.raises(ConfigError, match="'weight' is required"):
        run("ties", torch.zeros(2), [T(1, 2)], [{"density": 0.5}])
    with pytest.raises(ConfigError, match="unknown parameter 'densty'"):
        run("ties", torch.zeros(2), [T(1, 2)], [{"weight": 1, "densty": 0.5}])
    with pytest.raises(ConfigError, match="needs base_model"):
        run("slerp", None, [T(1, 2)], t=0.5)
    with pytest.raises(ConfigError, match="takes 1..1 models"):
        run("slerp", T(0, 1), [T(1, 2), T(2, 1)], t=0.5)
    assert get_method("ties").param("density").default == 1.0
    assert get_method("della").param("epsilon").default == 0.15
    assert get_method("breadcrumbs").param("gamma").default == 0.01
    assert get_method("ties").param("normalize").default is True
    assert get_method("dare_ties").param("rescale").default is True and get_method("dare_ties").random
    assert get_method("ramplus_tl").param("r").default == 0.1 and get_method("ramplus_tl").param("alpha").default == 0.2
    assert get_method("ram").param("epsilon").default == 1e-5 and not get_method("arcee_fusion").params
    with pytest.raises(ConfigError, match="takes 1..1 models"):
        run("arcee_fusion", T(0, 1), [T(1, 2), T(2, 1)])


# ------------------------------------------------------------------------------------------- mergekit parity
MK_CASES = {
    "linear": ({"weight": [0.3, 0.5, 0.9]}, {}),
    "task_arithmetic": ({"weight": [0.3, -0.5, 0.9]}, {"lambda": 0.7}),
    "ties": ({"weight": [0.3, 0.5, 0.9], "density": [0.3, 0.5, 0.01]}, {}),
    "ties_rescale": ({"weight": [0.3, 0.5, 0.9], "density": [0.3, 0.5, 0.7]}, {"rescale": True, "lambda": 1.3}),
    "breadcrumbs": ({"weight": [0.3, 0.5, 0.9], "density": [0.3, 0.5, 0.9], "gamma": [0.05, 0.0, 0.3]}, {}),
    "breadcrumbs_ties": ({"weight": [0.3, 0.5, 0.9], "density": [0.3, 0.5, 0.7]}, {"normalize": True}),
    "dare_ties": ({"weight": [0.3, 0.5, 0.9], "density": [0.3, 0.5, 0.7]}, {}),
    "dare_linear": ({"weight": [0.3, 0.5, 0.9], "density": [0.3, 1.0, 0.7]}, {"rescale": False}),
    "della": ({"weight": [0.3, 0.5, 0.9], "density": [0.3, 0.5, 0.7], "epsilon": [0.1, 0.2, 0.15]}, {}),
    "della_linear": ({"weight": [0.3, 0.5, 0.9], "density": [0.3, 0.5, 0.7]}, {}),
    "slerp": ({}, {"t": 0.3}),
    "nearswap": ({}, {"t": 0.05}),
    "nuslerp": ({"weight": [0.3, 0.6]}, {}),
    "nuslerp_rows": ({"weight": [0.3, 0.6]}, {"nuslerp_flatten": False, "nuslerp_row_wise": True}),
    "multislerp": ({"weight": [0.3, 0.5, 0.9]}, {}),
    "karcher": ({}, {}),
    "sce": ({}, {"select_topk": 0.5}),
    "model_stock": ({}, {}),
    "model_stock_filter": ({}, {"filter_wise": True}),
    "passthrough": ({"scale": [0.5]}, {}),
    "arcee_fusion": ({}, {}),
    "ram": ({}, {"epsilon": 0.05}),  # |delta| ~ 0.1: a mix of unchanged, lone and shared entries
    "ram_defaults": ({}, {}),
    "ramplus_tl": ({}, {"r": 0.5, "alpha": 0.3, "epsilon": 0.05}),
    "ramplus_tl_defaults": ({}, {}),
}
N_MODELS = {"slerp": 1, "nearswap": 1, "nuslerp": 2, "nuslerp_rows": 2, "passthrough": 1, "arcee_fusion": 1}
# mergekit 0.1.5's kernels that finish bf16/fp16 inputs in float32 (a float32 mask / scale) and return float32;
# safemerge returns the input dtype: mergekit's float32 result rounded once (its file holds that cast too when
# out_dtype is set)
FLOAT32_RESULT = {"arcee_fusion", "ramplus_tl"}


def _inputs(shape, dtype, n, quantize: bool):
    g = torch.Generator().manual_seed(1234)
    base = torch.randn(shape, generator=g)
    xs = [base + 0.1 * torch.randn(shape, generator=g) for _ in range(n)]
    if quantize:  # coarse values: many exact ties in |delta|, including at the pruning cut
        base = base.round(decimals=1)
        xs = [x.round(decimals=1) for x in xs]
    return base.to(dtype), [x.to(dtype) for x in xs]


def _mergekit(name, base, xs, per, glob, seed):
    from mergekit.merge_methods import merge_tensors

    spec = METHODS[name]
    if spec.base_policy == "ignored" or base is None:
        inputs, base_index, params = xs, None, {**glob, **per}
    else:
        inputs, base_index = [base, *xs], 0
        params = {**glob, **{k: {i + 1: v for i, v in enumerate(vals)} for k, vals in per.items()}}
    torch.manual_seed(seed)
    return merge_tensors(inputs, name, parameters=params, base_index=base_index)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("quantize", [False, True], ids=["smooth", "ties"])
@pytest.mark.parametrize("case", sorted(MK_CASES))
def test_parity_with_mergekit(case, quantize, dtype):
    name = case.split("_rows")[0].split("_filter")[0].split("_defaults")[0].replace("ties_rescale", "ties")
    per, glob = MK_CASES[case]
    n = N_MODELS.get(case, 3)
    base, xs = _inputs((48, 80), dtype, n, quantize)
    if name in ("della", "della_linear") and "epsilon" not in per:
        per = {**per, "epsilon": [0.15] * n}
    spec = METHODS[name]
    b = None if spec.base_policy == "ignored" else base
    per_model = [{k: v[i] for k, v in per.items()} for i in range(n)]
    ours_glob = {**glob, "tie_break": "mergekit"} if name.startswith("della") else glob  # mergekit's tie ranks
    ours = spec.apply(b, xs, per_model, ours_glob, torch.Generator().manual_seed(7))
    theirs = _mergekit(name, b, xs, per, glob, seed=7)
    if name in FLOAT32_RESULT and dtype != torch.float32:
        assert theirs.dtype == torch.float32
        theirs = theirs.to(dtype)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert torch.equal(ours, theirs), (ours.float() - theirs.float()).abs().max()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ties", "breadcrumbs_ties", "dare_ties", "della", "slerp", "linear"])
def test_parity_with_mergekit_large(name):
    """Tensors above the direct-selection size use sampled O(n) selection; slerp spans several chunks."""
    per = {"slerp": {}, "linear": {"weight": [0.7, 0.4]}}.get(name, {"weight": [0.7, 0.4], "density": [0.2, 0.6]})
    glob = {"t": 0.6} if name == "slerp" else {}
    n = 1 if name == "slerp" else 2
    for quantize in (False, True):
        base, xs = _inputs((700, 600), torch.float32, n, quantize)
        spec = METHODS[name]
        b = None if spec.base_policy == "ignored" else base
        ours_glob = glob
        if name == "della":
            per = {**per, "epsilon": [0.1, 0.1]}
            ours_glob = {**glob, "tie_break": "mergekit"}  # mergekit's tie ranks (quantized inputs tie)
        per_model = [{k: v[i] for k, v in per.items()} for i in range(n)]
        ours = spec.apply(b, xs, per_model, ours_glob, torch.Generator().manual_seed(3))
        theirs = _mergekit(name, b, xs, per, glob, seed=3)
        assert torch.equal(ours, theirs), (name, quantize)


def test_kth_smallest_sampled_path():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(600_000, generator=g).abs()
    for rank in (0, 1, 17, 300_000, 599_998, 599_999):
        assert sp.kth_smallest(w, rank) == torch.kthvalue(w, rank + 1).values
    w = torch.randint(0, 7, (600_000,), generator=g).float()  # heavy ties
    assert sp.kth_smallest(w, 123_456) == torch.kthvalue(w, 123_457).values
