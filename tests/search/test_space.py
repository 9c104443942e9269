"""Search spaces: validation against the method registry, decoding to mergekit-loadable configs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safemerge.errors import ConfigError
from safemerge.merge.methods import get_method
from safemerge.search.space import build_space, with_paths
from safemerge.search.spec import SearchSpec


def spec(**over) -> SearchSpec:
    raw = {"pool": [{"name": "aligned", "model": "/m/aligned"}, {"name": "expert", "model": "/m/expert"}],
           "base_model": "/m/base", "method": "ties", "space": {"params": ["weight", "density"]},
           "objective": {"safety": "s.jsonl", "domain": "d.jsonl"}}
    raw.update(over)
    return SearchSpec.model_validate(raw)


def test_per_model_genes_and_decode():
    space = build_space(spec())
    assert space.labels() == ["aligned.weight[0]", "expert.weight[0]", "aligned.density[0]", "expert.density[0]"]
    cfg = space.decode([0.0, 1.0, 0.5, 1.0])
    assert cfg["merge_method"] == "ties" and cfg["base_model"] == "__base__"
    assert cfg["models"][0] == {"model": "aligned", "parameters": {"weight": 0.0, "density": 0.525}}
    assert cfg["models"][1]["parameters"] == {"weight": 1.0, "density": 1.0}


def test_layer_groups_become_gradient_lists():
    space = build_space(spec(space={"params": ["weight"], "layer_groups": 3, "model_fixed": {"density": 0.5}}))
    assert space.dim == 6
    cfg = space.decode([0.0, 0.5, 1.0, 0.2, 0.2, 0.2])
    assert cfg["models"][0]["parameters"] == {"density": 0.5, "weight": [0.0, 0.5, 1.0]}


def test_slerp_base_in_pool_is_not_listed_and_t_is_global():
    s = spec(base_model="aligned", method="slerp", space={"params": ["t"], "layer_groups": 2})
    space = build_space(s)
    assert space.inputs == ("expert",) and space.labels() == ["t[0]", "t[1]"]
    cfg = space.decode([0.25, 0.75])
    assert cfg["base_model"] == "aligned" and cfg["models"] == [{"model": "expert"}]
    assert cfg["parameters"] == {"t": [0.25, 0.75]}


@pytest.mark.parametrize("over, needle", [
    ({"space": {"params": ["t"]}}, "has no parameter 't'"),
    ({"method": "slerp", "base_model": "aligned", "space": {"params": ["density"]}}, "has no parameter 'density'"),
    ({"method": "slerp", "space": {"params": ["t"]}}, "merges 1..1 non-base models"),
    ({"method": "nope"}, "unknown merge method 'nope'"),
    ({"base_model": None}, "needs a base model"),
    ({"space": {"params": ["density"]}}, "needs 'weight'"),
    ({"space": {"params": ["weight"], "fixed": {"bogus": 1}}}, "no parameter(s) ['bogus']"),
    ({"space": {"params": ["weight"], "model_fixed": {"weight": 1}}}, "both searched and fixed"),
    # the merge registry's ranges, checked when the spec is loaded (not after the pool is)
    ({"space": {"params": ["weight", "density"], "bounds": {"density": [0.0, 1.5]}}},
     "space.bounds.density: [0, 1.5] leaves the range [0, 1]"),
    ({"space": {"params": ["weight"], "model_fixed": {"density": 1.7}}},
     "space.model_fixed.density must be a number in [0, 1], got 1.7"),
    ({"space": {"params": ["weight", "density"], "fixed": {"lambda": "big"}}}, "'big' is not a valid float"),
])
def test_invalid_spaces_fail_in_one_line(over, needle):
    with pytest.raises(ConfigError) as err:
        build_space(spec(**over))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_space_reads_the_merge_registry():
    """The search has no method table of its own: a method's parameters, whether they are per model, and its
    base policy come from its one registry entry (here a method added after the search was written)."""
    ram = get_method("ramplus_tl")
    space = build_space(spec(method="ramplus_tl", space={"params": ["r", "alpha"], "fixed": {"epsilon": 1e-4}}))
    assert space.labels() == ["r[0]", "alpha[0]"] and ram.needs_base and space.inputs == ("aligned", "expert")
    assert space.decode([0.5, 1.0])["parameters"] == {"epsilon": 1e-4, "r": 0.5, "alpha": 1.0}
    with pytest.raises(ConfigError, match="space.fixed.epsilon must be a number > 0, got 0.0"):
        build_space(spec(method="ramplus_tl", space={"params": ["r"], "fixed": {"epsilon": 0.0}}))
    with pytest.raises(ConfigError, match="^method: unknown merge method 'tiez'.*did you mean 'ties'"):
        build_space(spec(method="tiez"))


def test_decoded_config_loads_in_safemerge_and_mergekit():
    from mergekit.config import MergeConfiguration

    from safemerge.merge import load_config

    space = build_space(spec(space={"params": ["weight", "density"], "layer_groups": 2}))
    cfg = with_paths(space.decode([0.1] * space.dim), {"aligned": "/m/a", "expert": "/m/e", "__base__": "/m/b"})
    ours = load_config(cfg)
    theirs = MergeConfiguration.model_validate(cfg)
    assert ours.base_model == "/m/b" and str(theirs.base_model.model.path) == "/m/b"
    assert [m.model for m in ours.models] == ["/m/a", "/m/e"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-0.5, 1.5, allow_nan=False), min_size=4, max_size=4))
def test_decode_stays_in_bounds_and_round_trips(x):
    space = build_space(spec(space={"params": ["weight", "density"], "bounds": {"weight": [-1.0, 2.0]}}))
    values = space.decode_values(x)
    for g, v in zip(space.genes, values):
        assert g.low <= v <= g.high
    again = space.decode_values(space.encode_values(dict(zip(space.labels(), values))))
    assert again == pytest.approx(values, abs=2e-6)
