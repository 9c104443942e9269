"""Optimisers: determinism, grid/cocktail/Pareto invariants (no models needed); resumption: test_state.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safemerge.errors import ConfigError
from safemerge.search.optimizers import (
    CmaOptimizer,
    GridOptimizer,
    LmCocktailOptimizer,
    NsgaOptimizer,
    cocktail_weights,
    pareto_front,
)
from safemerge.search.space import build_space
from safemerge.search.spec import OptimizerSpec, SearchSpec


def _space(params=("weight", "density"), method="ties", base="/m/base"):
    return build_space(SearchSpec.model_validate({
        "pool": [{"name": "a", "model": "/m/a"}, {"name": "b", "model": "/m/b"}], "base_model": base,
        "method": method, "space": {"params": list(params)}, "objective": {"safety": "s.jsonl"}}))


def _sphere(x):  # optimum at 0.3 in every coordinate
    return {"loss": float(sum((v - 0.3) ** 2 for v in x)), "safety": 0.0, "domain": 0.0}


def _run(opt, stop_after_gens=None):
    gens = 0
    while xs := opt.ask():
        opt.tell(xs, [_sphere(x) for x in xs])
        gens += 1
        if stop_after_gens is not None and gens == stop_after_gens:
            return opt
    return opt


def test_cma_defaults_follow_the_paper_and_converge():
    spec = OptimizerSpec(name="cma", budget=100, seed=3)
    assert spec.population(8) == 4 + math.floor(3 * math.log(8)) and spec.sigma0 == pytest.approx(1 / 6)
    opt = _run(CmaOptimizer(4, spec))
    assert opt.planned == opt.popsize * opt.done_generations <= 100
    assert np.allclose(opt.es.result.xbest[:4], 0.3, atol=0.08)


def test_cma_is_deterministic():
    spec = OptimizerSpec(name="cma", budget=60, seed=7)
    full = _run(CmaOptimizer(3, spec))
    again = _run(CmaOptimizer(3, spec))
    assert np.array_equal(full.es.result.xbest, again.es.result.xbest)
    other = _run(CmaOptimizer(3, OptimizerSpec(name="cma", budget=60, seed=8)))
    assert not np.array_equal(full.es.result.xbest, other.es.result.xbest)


def test_cma_one_gene_is_padded():
    opt = CmaOptimizer(1, OptimizerSpec(name="cma", budget=12))
    xs = opt.ask()
    assert all(len(x) == 1 and 0 <= x[0] <= 1 for x in xs)


def test_grid_is_the_paper_product():
    opt = GridOptimizer(_space(), OptimizerSpec(name="grid", budget=100))
    points = []
    while xs := opt.ask():
        points += xs
    assert len(points) == 81 == opt.planned and len({tuple(p) for p in points}) == 81
    space = _space()
    values = {tuple(space.decode_values(p)) for p in points}
    assert (0.25, 1.0, 0.5, 0.25) in values


def test_grid_over_budget_and_missing_param_are_user_errors():
    with pytest.raises(ConfigError, match="budget"):
        GridOptimizer(_space(), OptimizerSpec(name="grid", budget=10))
    with pytest.raises(ConfigError, match="no values for searched parameter"):
        GridOptimizer(_space(("t",), method="slerp", base="a"), OptimizerSpec(name="grid"))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0.0, 50.0, allow_nan=False), min_size=1, max_size=6), st.floats(0.1, 10.0))
def test_cocktail_weights_are_a_softmax_of_negative_loss(losses, t):
    w = cocktail_weights(losses, t)
    assert sum(w) == pytest.approx(1.0) and all(v >= 0 for v in w)
    for i in range(len(losses)):
        for j in range(len(losses)):
            if losses[i] < losses[j]:
                assert w[i] >= w[j]
    if len(losses) == 2:
        assert w[0] / max(w[1], 1e-300) == pytest.approx(math.exp((losses[1] - losses[0]) / t), rel=1e-6)


def test_cocktail_sets_weights_and_slerp_t():
    opt = LmCocktailOptimizer(_space(("weight",)), OptimizerSpec(name="lm_cocktail"), {"a": 1.0, "b": 2.0})
    (x,) = opt.ask()
    assert opt.ask() == []
    assert x[0] == pytest.approx(1 / (1 + math.exp(-0.2)), abs=1e-6)
    slerp = LmCocktailOptimizer(_space(("t",), method="slerp", base="a"), OptimizerSpec(name="lm_cocktail"),
                                {"a": 1.0, "b": 2.0})
    assert slerp.ask()[0][0] == pytest.approx(1 - x[0], abs=1e-6)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=25))
def test_pareto_front_is_exactly_the_non_dominated_set(points):
    front = set(pareto_front(points))
    for i, (a, b) in enumerate(points):
        dominated = any(c <= a and d <= b and (c, d) != (a, b) for c, d in points)
        assert (i in front) == (not dominated)


def test_nsga2_asks_populations_and_is_deterministic():
    def run():
        opt = NsgaOptimizer(_space(), OptimizerSpec(name="nsga2", budget=24, popsize=8, seed=1))
        seen = []
        while xs := opt.ask():
            seen += xs
            opt.tell(xs, [{"safety": x[0], "domain": 1 - x[0], "violation": 0.0} for x in xs])
        return seen

    a, b = run(), run()
    assert len(a) == 24 and a == b
    assert len({tuple(x) for x in a}) == 24
