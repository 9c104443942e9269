"""The search's cached in-memory merge gives exactly the engine's result (merge_state_dicts) for the same config.

The resident model caches per-pool constants (casts, magnitude ranks of the task vectors) across candidates; these
tests merge many candidates in a row with one ResidentModel and compare every parameter bit for bit (signed zeros included) with a fresh
``merge_state_dicts`` call, for fp32 and bf16 pools (bf16 deltas tie often, exercising the exact tie-break).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safemerge.merge import merge_state_dicts
from safemerge.search.inmemory import ResidentModel


@pytest.fixture(scope="module")
def bf16_models(tmp_path_factory) -> dict[str, Path]:
    from safemerge.data.tiny import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("bf16_pool")
    base = make_tiny_checkpoint("llama", root / "base", seed=0, dtype="bfloat16")
    return {"base": base, **{k: make_tiny_checkpoint("llama", root / k, seed=i, dtype="bfloat16", init_from=base)
                             for i, k in ((1, "a"), (2, "b"))}}


@pytest.fixture(scope="module")
def residents(tiny_models, bf16_models) -> dict[str, ResidentModel]:
    return {kind: ResidentModel({k: str(v) for k, v in models.items()}, model_from=str(models["a"]))
            for kind, models in (("fp32", tiny_models), ("bf16", bf16_models))}


def assert_same_as_engine(resident: ResidentModel, cfg: dict, seed: int = 0) -> None:
    resident.load_merge(cfg, seed=seed)
    needed = {n: resident.state_dicts[n] for n in ("base", "a", "b")}
    want = merge_state_dicts(cfg, needed, seed=seed)
    for name, p in resident.model.named_parameters():
        expected = want[name].to(p.dtype)
        assert torch.equal(p.detach(), expected), (cfg, name, (p.detach() - expected).abs().max())
        bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[p.element_size()]
        assert torch.equal(p.detach().view(bits), expected.view(bits)), (cfg, name, "signed zeros differ")


def ties_config(w: list[float], d: list, **params) -> dict:
    return {"merge_method": "ties", "base_model": "base", "dtype": "float32", "parameters": params,
            "models": [{"model": m, "parameters": {"weight": w[i], "density": d[i]}} for i, m in enumerate("ab")]}


unit = st.floats(0.0, 1.0, allow_nan=False).map(lambda v: round(v, 6))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=st.lists(unit, min_size=2, max_size=2), d=st.lists(unit, min_size=2, max_size=2),
       kind=st.sampled_from(["fp32", "bf16"]), rescale=st.booleans(), normalize=st.booleans(),
       tie_break=st.sampled_from(["mergekit", "index"]))
def test_cached_ties_is_the_engines_ties(residents, w, d, kind, rescale, normalize, tie_break) -> None:
    params = {"rescale": rescale, "normalize": normalize}
    if tie_break == "index":
        params["tie_break"] = "index"
    assert_same_as_engine(residents[kind], ties_config(w, d, **params))


@pytest.mark.parametrize("kind", ["fp32", "bf16"])
def test_layer_gradients_density_extremes_and_other_methods(residents, kind) -> None:
    r = residents[kind]
    # per-layer gradient lists (search layer_groups), density 0 and 1, lambda, ties at a repeated density
    assert_same_as_engine(r, ties_config([0.3, [0.9, 0.1]], [[0.0, 1.0], 0.37], **{"lambda": 0.7}))
    assert_same_as_engine(r, ties_config([1.0, 0.5], [0.37, 0.37]))
    assert_same_as_engine(r, ties_config([0.2, 0.8], [1e-6, 0.999999]))
    for method in ("linear", "task_arithmetic", "dare_ties"):
        models = (("a", 0.4), ("b", 0.9))
        cfg = {"merge_method": method, "dtype": "float32",
               "models": [{"model": m, "parameters": {"weight": w, "density": 0.6}} for m, w in models]}
        if method == "linear":
            cfg["models"] = [{"model": m, "parameters": {"weight": w}} for m, w in models]
        else:
            cfg["base_model"] = "base"
        assert_same_as_engine(r, cfg, seed=3)
    assert_same_as_engine(r, {"merge_method": "slerp", "base_model": "a", "dtype": "float32",
                              "models": [{"model": "b"}], "parameters": {"t": [0.2, 0.8]}})


def test_bfloat16_compute_dtype(residents) -> None:
    cfg = ties_config([0.6, 0.4], [0.5, 0.25])
    cfg["dtype"] = "bfloat16"
    assert_same_as_engine(residents["fp32"], cfg)
    assert_same_as_engine(residents["bf16"], cfg)


def test_cache_budget_falls_back_to_the_engine(tiny_models) -> None:
    """With no memory for the task-vector cache every tensor takes the engine's path: same result, nothing cached."""
    r = ResidentModel({k: str(v) for k, v in tiny_models.items()})
    r.cache.max_bytes = 0
    assert_same_as_engine(r, ties_config([0.6, 0.4], [0.5, 0.25]))
    assert r.cache.bytes == 0
    r.cache.max_bytes = 1 << 40
    assert_same_as_engine(r, ties_config([0.6, 0.4], [0.5, 0.25]))
    assert r.cache.bytes > 0


def test_signed_zeros_and_negative_weights(tmp_path) -> None:
    """-0.0 in the base where the experts hold +0.0, merged with negative weights: the weighted deltas are -0.0
    and the sum of two of them is +0.0 (mergekit's reduction), in the cached path as in the engine."""
    from safetensors.torch import load_file, save_file

    from safemerge.data.tiny import make_tiny_checkpoint

    base = make_tiny_checkpoint("llama", tmp_path / "base", seed=0)
    models = {"base": base, **{k: make_tiny_checkpoint("llama", tmp_path / k, seed=i, init_from=base)
                               for i, k in ((1, "a"), (2, "b"))}}
    for label, path in models.items():
        shard = next(Path(path).glob("*.safetensors"))
        tensors = load_file(shard)
        for name, t in tensors.items():
            if t.dim() == 2:
                t[0, :50] = -0.0 if label == "base" else 0.0
        save_file(tensors, shard, metadata={"format": "pt"})
    resident = ResidentModel({k: str(v) for k, v in models.items()}, model_from=str(models["a"]))
    for normalize in (False, True):
        assert_same_as_engine(resident, ties_config([-0.5, -0.7], [0.5, 0.5], normalize=normalize))
