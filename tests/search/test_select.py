"""``optimizer.select``: paper B's grid search keeps the configuration with the best domain score; ours keeps the
lowest objective loss by default. Selection only picks among evaluated candidates."""

from __future__ import annotations

import json

import pytest

from safemerge.errors import ConfigError
from safemerge.search.runner import run_search, select_key
from safemerge.search.spec import load_spec

from search_helpers import make_spec


def _rec(i, loss, domain, feasible=True, **extra):
    return {"index": i, "loss": loss, "domain": domain, "feasible": feasible, "extra": extra}


def test_select_keys():
    recs = [_rec(0, 1.0, 3.0, acc_mc=0.2, harm_rate=0.5), _rec(1, 2.0, 1.0, acc_mc=0.9, harm_rate=0.1),
            _rec(2, 1.5, 2.0, acc_mc=0.5, harm_rate=0.0), _rec(3, 0.1, 0.1, False, acc_mc=1.0, harm_rate=0.0)]
    best = {s: min(recs, key=select_key(s))["index"] for s in ("loss", "domain", "acc_mc", "harm_rate")}
    assert best == {"loss": 0, "domain": 1, "acc_mc": 1, "harm_rate": 2}  # infeasible #3 never wins


def test_select_must_name_a_measured_metric(tiny_models, objective_files):
    spec = make_spec(tiny_models, objective_files, optimizer={"name": "grid", "select": "acc_mc"})
    with pytest.raises(ConfigError, match="optimizer.select: 'acc_mc' is neither loss, domain nor the metric of an "
                                          "objective.extra term; add {metric: acc_mc, weight: 0}"):
        load_spec(spec)
    spec["objective"]["extra"] = [{"metric": "acc_mc", "weight": 0.0}]
    assert load_spec(spec).optimizer.select == "acc_mc"
    spec = make_spec(tiny_models, objective_files, optimizer={"name": "grid", "select": "domain"})
    spec["objective"].pop("domain")
    with pytest.raises(ConfigError, match="select: domain needs objective.domain files"):
        load_spec(spec)


@pytest.mark.slow
def test_grid_search_selected_by_domain_loss(tiny_models, objective_files, tmp_path):
    """The same grid, judged two ways: lowest objective (ours) vs lowest domain loss (paper B's domain score);
    switching ``select`` on a finished search re-picks without evaluating again."""
    grid = {"name": "grid", "budget": 4, "grid": {"weight": [0.25, 1.0], "density": [1.0]}}
    spec = make_spec(tiny_models, objective_files, optimizer=grid)
    res = run_search(spec, tmp_path / "g", show_progress=False)
    assert len(res.records) == 4
    assert res.best["index"] == min(res.records, key=lambda r: (r["loss"], r["index"]))["index"]
    by_domain = make_spec(tiny_models, objective_files, optimizer={**grid, "select": "domain"})
    again = run_search(by_domain, tmp_path / "g", show_progress=False, resume=True)
    assert [r["loss"] for r in again.records] == [r["loss"] for r in res.records]  # nothing evaluated again
    assert again.best["index"] == min(res.records, key=lambda r: (r["domain"], r["loss"]))["index"]
    assert again.best["index"] != res.best["index"]  # on these tiny models the two rules disagree
    assert json.loads((tmp_path / "g" / "result.json").read_text())["select"] == "domain"
