"""Method parameters are type- and range-checked at plan time, before any tensor is read (issue 15, item 1).

The facts live in the method registry (``ParamSpec.kind/range``, ``MethodSpec.constraints``); values mergekit 0.1.5
gives a meaning (negative or > 1 weights, any lambda, SLERP t outside [0, 1]) keep it, bit for bit.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from safemerge.cli import main
from safemerge.errors import ConfigError
from safemerge.merge import merge_state_dicts
from safemerge.merge.config import load_config
from safemerge.merge.methods import METHODS, UNIT
from safemerge.merge.plan import check_parameter_values


def _cfg(method: str, model_params: dict | None = None, shared: dict | None = None, n: int = 2) -> dict:
    spec = METHODS[method]
    cfg: dict = {"merge_method": method, "models": [{"model": f"m{i}"} for i in range(n)]}
    if spec.base_policy != "ignored":
        cfg["base_model"] = "base"
    if model_params:
        cfg["models"][0]["parameters"] = model_params
    if shared:
        cfg["parameters"] = shared
    return cfg


def _check(cfg: dict) -> None:
    check_parameter_values(load_config(cfg))


# ---- every numeric parameter of every method: a type check and a range check -----------------------------------
NUMERIC = [(m, p) for m, spec in METHODS.items() for p in spec.params if p.kind in ("float", "int")]


def test_registry_covers_all_20_methods_and_defaults_are_in_range():
    assert len(METHODS) == 20
    for name, spec in METHODS.items():
        for p in spec.params:
            if p.default is not None:
                assert p.problem(p.default) is None, (name, p.name, p.default)


@pytest.mark.parametrize("method, param", NUMERIC, ids=[f"{m}.{p.name}" for m, p in NUMERIC])
def test_a_word_where_a_number_goes_names_the_key_and_model(method, param):
    params = {param.name: "abc"}
    with pytest.raises(ConfigError) as exc:
        _check(_cfg(method, model_params=params))
    msg = str(exc.value)
    assert f"models[0] (m0) parameters: {param.name} = 'abc' is not a" in msg and "\n" not in msg


@pytest.mark.parametrize("method, param", NUMERIC, ids=[f"{m}.{p.name}" for m, p in NUMERIC])
def test_nan_and_inf_are_refused(method, param):
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ConfigError, match=f"{param.name} (must be|= .* is not a whole number)"):
            _check(_cfg(method, shared={param.name: bad}))


@pytest.mark.parametrize("where", ["model", "global", "gradient", "conditional", "slice_source", "slice"])
def test_every_level_of_precedence_is_checked(where):
    bad = 1.7
    cfg = {"merge_method": "ties", "base_model": "base"}
    if where.startswith("slice"):
        src = {"model": "m0", "layer_range": [0, 2]}
        sl = {"sources": [{"model": "base", "layer_range": [0, 2]}, src]}
        if where == "slice_source":
            src["parameters"] = {"weight": 1.0, "density": bad}
            expect = "slices[0].sources[1] (m0) parameters: density"
        else:
            sl["parameters"] = {"density": [0.5, bad]}
            expect = "slices[0].parameters: density"
        cfg["slices"] = [sl]
    else:
        value = {"model": bad, "global": bad, "gradient": [0.2, 0.9, bad],
                 "conditional": [{"filter": "mlp", "value": [0.5, bad]}, {"value": 0.5}]}[where]
        cfg["models"] = [{"model": "m0", "parameters": {"weight": 1.0}}]
        if where == "global":
            cfg["parameters"] = {"density": value}
            expect = "parameters: density"
        else:
            cfg["models"][0]["parameters"]["density"] = value
            expect = "models[0] (m0) parameters: density"
    with pytest.raises(ConfigError) as exc:
        _check(cfg)
    assert expect in str(exc.value) and "got 1.7" in str(exc.value)


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_density_is_accepted_exactly_in_the_unit_interval(x):
    cfg = _cfg("ties", model_params={"weight": 1.0, "density": x})
    if math.isfinite(x) and 0 <= x <= 1:
        _check(cfg)
    else:
        with pytest.raises(ConfigError, match="density must be a number in \\[0, 1\\]"):
            _check(cfg)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-2, 3, allow_nan=False), min_size=1, max_size=6))
def test_gradient_lists_are_checked_anchor_by_anchor(anchors):
    cfg = _cfg("breadcrumbs", model_params={"weight": 1.0, "gamma": anchors})
    if all(x in UNIT for x in anchors):
        _check(cfg)
    else:
        with pytest.raises(ConfigError, match="gamma must be a number in"):
            _check(cfg)


@settings(max_examples=100, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_finite_weight_and_lambda_is_accepted(x):
    _check(_cfg("task_arithmetic", model_params={"weight": x}, shared={"lambda": x}))
    _check(_cfg("linear", model_params={"weight": x}, shared={"normalize": False}))


@pytest.mark.parametrize("method, model_params, shared, expected", [
    ("della", {"weight": 1, "density": 0.5, "epsilon": -0.1}, None, "epsilon must be a number in [0, 0.5)"),
    ("sce", None, {"select_topk": 1.5}, "select_topk must be a number in [0, 1]"),
    ("nearswap", None, {"t": -0.5}, "t must be a number >= 0"),
    ("multislerp", {"weight": 1}, {"eps": 0.0}, "eps must be a number > 0"),
    ("karcher", None, {"max_iter": 2.5}, "max_iter = 2.5 is not a whole number"),
    ("karcher", None, {"max_iter": -1}, "max_iter must be a number >= 0"),
    ("karcher", None, {"tol": -1e-5}, "tol must be a number >= 0"),
    ("ties", {"weight": 1}, {"normalize": 0.5}, "normalize = 0.5 is not a boolean"),
    ("passthrough", {"scale": "x2"}, None, "scale = 'x2' is not a number"),
    ("ties", {"weight": 1}, {"tie_break": "random"}, "tie_break must be one of"),
    ("ram", None, {"epsilon": -1e-3}, "epsilon must be a number >= 0, got -0.001"),
    ("ramplus_tl", None, {"epsilon": 0.0}, "epsilon must be a number > 0, got 0.0 (the |delta| up to which"),
    ("ramplus_tl", None, {"alpha": -0.1}, "alpha must be a number >= 0, got -0.1 (the cap on the overlap ratio"),
    ("ramplus_tl", None, {"r": -1}, "r must be a number >= 0, got -1.0"),
    ("ramplus_tl", None, {"r": "big"}, "r = 'big' is not a number"),
])
def test_range_and_type_errors(method, model_params, shared, expected):
    n = 1 if METHODS[method].max_models == 1 else 2
    with pytest.raises(ConfigError) as exc:
        _check(_cfg(method, model_params, shared, n=n))
    assert expected in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("method, shared, expected", [
    ("ramplus_tl", {"epsilon": 0.0}, "parameters: epsilon must be a number > 0, got 0.0"),
    ("ram", {"epsilon": -1.0}, "parameters: epsilon must be a number >= 0, got -1.0"),
    ("arcee_fusion", {"t": 0.5}, "parameters: unknown parameter 't' for merge_method 'arcee_fusion'"),
])
def test_new_methods_are_checked_when_the_plan_is_built(method, shared, expected):
    """mergekit 0.1.5's arcee_fusion, ram and ramplus_tl: a bad value is one line naming the key, raised by the plan
    (before any tensor is read); a good recipe merges."""
    n = METHODS[method].max_models or 2
    cfg = _cfg(method, shared=shared, n=n)
    with pytest.raises(ConfigError) as exc:
        merge_state_dicts(cfg, _sds(n))
    assert expected in str(exc.value) and "\n" not in str(exc.value)
    out = merge_state_dicts(_cfg(method, n=n), _sds(n))
    assert torch.isfinite(out["w"]).all()


# ---- joint constraints, checked on each tensor's resolved values (still before any tensor is read) -------------
def _sds(n: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    return {k: {"w": torch.randn(4, 4, generator=g)} for k in ["base"] + [f"m{i}" for i in range(n)]}


@pytest.mark.parametrize("method, per_model, shared, expected", [
    ("della", [{"weight": 1, "density": 0.1}, {"weight": 1, "density": 0.5}], None,
     "density=0.1, epsilon=0.15: DELLA needs density - epsilon > 0"),  # mergekit raises ValueError mid-merge
    ("della_linear", [{"weight": 1, "density": 0.9, "epsilon": 0.2}, {"weight": 1}], None, "density + epsilon < 1"),
    ("linear", [{"weight": 0.5}, {"weight": -0.5}], None, "sum to 0 and normalize: true"),
    ("multislerp", [{"weight": 1.0}, {"weight": -1.0}], None, "sum to 0 and normalize_weights: true"),
])
def test_joint_constraints(method, per_model, shared, expected):
    cfg = _cfg(method, shared=shared)
    for m, p in zip(cfg["models"], per_model):
        m["parameters"] = p
    with pytest.raises(ConfigError) as exc:
        merge_state_dicts(cfg, _sds())
    assert expected in str(exc.value) and "tensor w" in str(exc.value) and "\n" not in str(exc.value)


def test_zero_weight_sum_is_fine_without_normalize():
    cfg = _cfg("linear", shared={"normalize": False})
    cfg["models"][0]["parameters"] = {"weight": 0.5}
    cfg["models"][1]["parameters"] = {"weight": -0.5}
    out = merge_state_dicts(cfg, _sds())
    assert torch.isfinite(out["w"]).all()


# ---- values mergekit gives a meaning keep it, bit for bit ------------------------------------------------------
KEPT = {
    "linear_extrapolation": {"merge_method": "linear",
                             "models": [{"model": "a", "parameters": {"weight": 1.6}},
                                        {"model": "b", "parameters": {"weight": -0.6}}]},
    "task_arithmetic_negation": {"merge_method": "task_arithmetic", "base_model": "base",
                                 "parameters": {"lambda": -0.7},
                                 "models": [{"model": "a", "parameters": {"weight": 2.5}},
                                            {"model": "b", "parameters": {"weight": -1.0}}]},
    "slerp_extrapolation": {"merge_method": "slerp", "base_model": "base", "parameters": {"t": [1.3, -0.2]},
                            "models": [{"model": "base"}, {"model": "a"}]},
    "ties_density_edges": {"merge_method": "ties", "base_model": "base",
                           "models": [{"model": "a", "parameters": {"weight": 1.2, "density": 0.0}},
                                      {"model": "b", "parameters": {"weight": -0.4, "density": 1.0}}]},
}


@pytest.mark.parametrize("case", sorted(KEPT))
def test_values_mergekit_gives_a_meaning_match_mergekit(case, llama_family, merge_tools, tmp_path):
    fam = {k: str(v) for k, v in llama_family.items()}
    cfg = copy.deepcopy(KEPT[case])
    if "base_model" in cfg:
        cfg["base_model"] = fam["base"]
    for m in cfg["models"]:
        m["model"] = fam[m["model"]]
    ours = merge_tools.run_safemerge(cfg, tmp_path / "ours")
    theirs = merge_tools.run_mergekit(cfg, tmp_path / "theirs")
    problems = merge_tools.diff_report(merge_tools.read_tensors(ours), merge_tools.read_tensors(theirs))
    assert not problems, "\n".join(problems[:10])


def test_cli_errors_before_reading_any_tensor(tiny_models, tmp_path, capsys):
    """A bad value is reported even when every model path is missing: nothing was opened, let alone read."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"merge_method": "ties", "base_model": str(tmp_path / "no-base"),
                                   "models": [{"model": str(tmp_path / "no-a"),
                                               "parameters": {"weight": 1.0, "density": 1.7}}]}))
    with pytest.raises(SystemExit) as exc:
        main(["merge", str(cfg), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "density must be a number in [0, 1], got 1.7" in err and "\n" not in err
    assert not (tmp_path / "out").exists()
