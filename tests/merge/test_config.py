"""Config parsing, gradient interpolation and parameter precedence (mergekit 0.1.5 as the oracle)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safemerge.errors import ConfigError
from safemerge.merge.config import ConditionalParameter, evaluate_setting, load_config, resolve_parameter

finite = st.floats(min_value=-10, max_value=10, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(finite, min_size=1, max_size=9), t=st.floats(min_value=0, max_value=1))
def test_gradient_matches_mergekit(values, t):
    from mergekit.config import evaluate_setting as mk_evaluate

    ours = evaluate_setting(values, "model.layers.0.mlp.up_proj.weight", t, "float")
    theirs = mk_evaluate("model.layers.0.mlp.up_proj.weight", values, t, validate=float)
    assert ours == theirs
    assert min(values) - 1e-9 <= ours <= max(values) + 1e-9


@given(values=st.lists(finite, min_size=2, max_size=6))
def test_gradient_endpoints(values):
    assert evaluate_setting(values, "x", 0.0, "float") == values[0]
    assert evaluate_setting(values, "x", 1.0, "float") == values[-1]


@settings(max_examples=40, deadline=None)
@given(filters=st.lists(st.sampled_from(["self_attn", "mlp", "norm", "q_proj", None, "*"]), min_size=1, max_size=4),
       name=st.sampled_from(["model.layers.3.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight",
                             "model.norm.weight", "lm_head.weight"]),
       t=st.floats(min_value=0, max_value=1))
def test_filters_first_match_like_mergekit(filters, name, t):
    from mergekit.config import ConditionalParameter as MkCond
    from mergekit.config import evaluate_setting as mk_evaluate

    conds = [{"filter": f, "value": [float(i), float(i) + 1]} for i, f in enumerate(filters)]
    ours = evaluate_setting([ConditionalParameter(**c) for c in conds], name, t, "float")
    theirs = mk_evaluate(name, [MkCond(**c) for c in conds], t, validate=float)
    assert ours == theirs


@given(model=st.one_of(st.none(), finite), slice_=st.one_of(st.none(), finite), glob=st.one_of(st.none(), finite))
def test_precedence_model_over_slice_over_global(model, slice_, glob):
    scopes = [None if v is None else {"weight": v} for v in (model, slice_, glob)]
    found, value = resolve_parameter("weight", scopes, "model.layers.0.mlp.up_proj.weight", 0.5, "float")
    expected = next((v for v in (model, slice_, glob) if v is not None), None)
    assert found == (expected is not None)
    assert value == expected


def test_unmatched_filter_falls_through_to_lower_scope():
    scopes = [{"weight": [{"filter": "mlp", "value": 0.9}]}, {"weight": 0.1}]
    assert resolve_parameter("weight", scopes, "model.layers.0.self_attn.q_proj.weight", 0, "float") == (True, 0.1)
    assert resolve_parameter("weight", scopes, "model.layers.0.mlp.up_proj.weight", 0, "float") == (True, 0.9)


def test_yaml_schema_roundtrip(tmp_path):
    text = """
merge_method: ties
base_model: base
models:
  - model: a
    parameters: {weight: [0, 0.3, 0.5, 0.7, 1], density: 0.5}
  - model: b+adapter
    parameters:
      weight:
        - filter: self_attn
          value: 0.5
        - value: 1
parameters: {normalize: true, int8_mask: true}
dtype: bfloat16
tokenizer_source: base
"""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.merge_method == "ties" and cfg.dtype == "bfloat16"
    assert cfg.referenced_models() == ["base", "a", "b+adapter"]
    assert cfg.tokenizer_choice == "base"
    assert isinstance(cfg.models[1].parameters["weight"][0], ConditionalParameter)
    assert load_config(cfg.to_yaml()) == cfg


@pytest.mark.parametrize("data, message", [
    ({"merge_method": "linear", "modles": [{"model": "a"}]}, "did you mean 'models'"),
    ({"merge_method": "linear", "models": [{"model": "a", "paramters": {}}]}, "did you mean 'parameters'"),
    ({"models": [{"model": "a"}]}, "missing required key 'merge_method'"),
    ({"merge_method": "linear"}, "exactly one of 'models' or 'slices'"),
    ({"merge_method": "linear", "models": [{"model": "a"}], "dtype": "float8"}, "dtype"),
    ({"merge_method": "linear", "modules": {"text": {}}}, "'modules'"),
    ({"merge_method": "linear", "slices": [{"sources": [{"model": "a", "layer_range": [0, 2]},
                                                        {"model": "b", "layer_range": [0, 3]}]}]}, "same number"),
])
def test_invalid_configs_are_one_line_errors(data, message):
    with pytest.raises(ConfigError) as exc:
        load_config(data)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("merge_method: linear\nmodels: [\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(path)


def test_model_ref_plus_in_an_existing_path_is_that_path(tmp_path):
    from safemerge.errors import ConfigError
    from safemerge.merge.config import ModelRef

    odd = tmp_path / "sft-mix15-en+fr+es"  # a folder name with '+' (e.g. written by another tool)
    odd.mkdir()
    assert ModelRef.parse(str(odd)) == ModelRef(str(odd), None)
    assert ModelRef.parse(f"{tmp_path}/base+{tmp_path}/adapter") == ModelRef(f"{tmp_path}/base", f"{tmp_path}/adapter")
    with pytest.raises(ConfigError, match="path\\+adapter_path"):
        ModelRef.parse(f"{tmp_path}/a+b+c")  # not a path and not path+adapter
