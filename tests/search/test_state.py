"""The plain-JSON search state: every optimiser resumes by replay to exactly the uninterrupted candidates.

The runner's protocol is driven here without models: ask -> (state written: pending) -> tell -> (state written:
told). The state goes through ``json.dumps``/``json.loads`` at every step, as it does on disk, and the run is cut
at every possible point (after each ask and after each tell).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safemerge.errors import InputError
from safemerge.search.optimizers import make_optimizer
from safemerge.search.space import build_space
from safemerge.search.spec import OptimizerSpec, SearchSpec
from safemerge.search.state import library_versions, load_state, new_state, restore, results_of, rng_state

OPTIMIZERS = {
    "cma": {"name": "cma", "budget": 40, "seed": 5},
    "nsga2": {"name": "nsga2", "budget": 24, "popsize": 6, "seed": 2},
    "grid": {"name": "grid", "budget": 9, "grid": {"weight": [0.25, 0.5, 1.0]}},
    "random": {"name": "random", "budget": 20, "seed": 9},
    "lm_cocktail": {"name": "lm_cocktail"},
}
POOL_LOSSES = {"a": 1.0, "b": 1.7}


def _space(params=("weight",)):
    return build_space(SearchSpec.model_validate({
        "pool": [{"name": "a", "model": "/m/a"}, {"name": "b", "model": "/m/b"}], "base_model": "/m/base",
        "method": "ties", "space": {"params": list(params)}, "objective": {"safety": "s.jsonl"}}))


def _result(x):
    """A deterministic stand-in for scoring (two objectives, one constraint); the optimiser sees only numbers."""
    s = sum((v - 0.3) ** 2 for v in x)
    return {"loss": s + 0.5 * x[0], "safety": s, "domain": 1 - x[0], "violation": max(0.0, x[-1] - 0.9)}


def _params(name):
    return ("weight",) if name in ("grid", "lm_cocktail") else ("weight", "density")


def _drive(name, path: Path, cut: int | None = None, state=None, opt=None):
    """Run the ask/tell protocol, writing the state as JSON after every ask and tell; stop after ``cut`` events.

    Returns (every candidate asked, in order; the state as stored; whether the run finished).
    """
    spec, space = OptimizerSpec(**OPTIMIZERS[name]), _space(_params(name))
    if state is None:
        state = new_state("h", name, {}, POOL_LOSSES if name == "lm_cocktail" else None)
        opt = make_optimizer(space, spec, state["cocktail"])
    asked, events = [], 0

    def save():
        path.write_text(json.dumps(state))

    while True:
        if state["pending"] is None:
            xs = opt.ask()
            if not xs:
                return asked, state, True
            start = state["told"][-1]["start"] + len(state["told"][-1]["xs"]) if state["told"] else 0
            state["pending"], state["rng"] = {"start": start, "xs": xs}, rng_state(opt)
            asked += xs
            save()
            events += 1
            if events == cut:
                return asked, json.loads(path.read_text()), False
        xs = state["pending"]["xs"]
        results = results_of([_result(x) for x in xs])
        opt.tell(xs, results)
        state["told"].append({"start": state["pending"]["start"], "xs": xs, "results": results})
        state["pending"] = None
        save()
        events += 1
        if events == cut:
            return asked, json.loads(path.read_text()), False


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_resume_from_json_asks_exactly_the_uninterrupted_candidates(name, tmp_path):
    full, _, done = _drive(name, tmp_path / "full.json")
    assert done and full
    n_events = 2 * len({json.dumps(x) for x in full}) + 1  # an upper bound on ask + tell events
    for cut in range(1, n_events):
        first, stored, finished = _drive(name, tmp_path / "state.json", cut=cut)
        if finished:
            break
        spec, space = OptimizerSpec(**OPTIMIZERS[name]), _space(_params(name))
        state = load_state(tmp_path / "state.json", "h")
        opt = restore(tmp_path / "state.json", state, space, spec)
        already = [x for b in state["told"] for x in b["xs"]] + (state["pending"]["xs"] if state["pending"] else [])
        rest, _, done = _drive(name, tmp_path / "state.json", state=state, opt=opt)
        assert done and already + rest == full, f"{name}: cut after event {cut}"


@pytest.mark.parametrize("name", ["cma", "nsga2", "random"])
def test_state_is_plain_data_with_versions_and_generator_state(name, tmp_path):
    _, stored, _ = _drive(name, tmp_path / "state.json", cut=3)
    assert stored["libraries"] == library_versions(name)
    assert stored["libraries"] and all(isinstance(v, str) for v in stored["libraries"].values())
    if name in ("cma", "random"):
        assert stored["rng"]["bit_generator"] == "PCG64"
    else:
        assert stored["rng"] is None


def test_other_library_version_that_replays_differently_is_one_line_error(tmp_path):
    _, stored, _ = _drive("nsga2", tmp_path / "state.json", cut=3)
    stored["libraries"] = {"optuna": "0.0.1"}
    stored["told"][0]["xs"][0][0] += 1e-3  # what an older optuna would have asked
    spec, space = OptimizerSpec(**OPTIMIZERS["nsga2"]), _space(_params("nsga2"))
    with pytest.raises(InputError) as err:
        restore(tmp_path / "state.json", stored, space, spec)
    msg = str(err.value)
    assert "\n" not in msg and "optuna 0.0.1" in msg and f"optuna {library_versions('nsga2')['optuna']}" in msg
    assert "pip install optuna==0.0.1" in msg


def test_other_library_version_that_replays_the_same_resumes(tmp_path):
    full, _, _ = _drive("cma", tmp_path / "full.json")
    first, stored, _ = _drive("cma", tmp_path / "state.json", cut=4)
    stored["libraries"] = {"cma": "0.0.1", "numpy": "0.0.1"}
    spec, space = OptimizerSpec(**OPTIMIZERS["cma"]), _space(_params("cma"))
    opt = restore(tmp_path / "state.json", stored, space, spec)
    assert stored["libraries"] == library_versions("cma")
    rest, _, _ = _drive("cma", tmp_path / "state.json", state=stored, opt=opt)
    assert [x for b in stored["told"][:2] for x in b["xs"]] + rest == full


def test_same_version_mismatch_and_damaged_states_are_one_line_errors(tmp_path):
    path = tmp_path / "state.json"
    _, stored, _ = _drive("random", path, cut=3)
    spec, space = OptimizerSpec(**OPTIMIZERS["random"]), _space(_params("random"))
    bad = json.loads(json.dumps(stored))
    bad["rng"]["state"]["state"] += 1
    with pytest.raises(InputError, match="does not belong to this spec"):
        restore(path, bad, space, spec)
    path.write_text(json.dumps(stored))
    with pytest.raises(InputError, match="different spec"):
        load_state(path, "other-hash")
    path.write_text('{"version": 1}')
    with pytest.raises(InputError, match="version 1 is not"):
        load_state(path, "h")
    path.write_text('{"version": 2, "spec')
    with pytest.raises(InputError, match="unreadable search state"):
        load_state(path, "h")
