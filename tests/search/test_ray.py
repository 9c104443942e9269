"""Ray workers evaluate candidates in parallel and give the same records as the in-process evaluator."""

from __future__ import annotations

import pytest
from search_helpers import make_spec

from safemerge.search.runner import run_search


@pytest.mark.slow
def test_ray_workers_match_in_process(tiny_models, objective_files, tmp_path):
    pytest.importorskip("ray")
    spec = make_spec(tiny_models, objective_files, optimizer={"name": "random", "budget": 4, "seed": 5})
    local = run_search(spec, tmp_path / "local", show_progress=False)
    remote = run_search(spec, tmp_path / "ray", show_progress=False, workers=2)
    assert [r["index"] for r in remote.records] == [0, 1, 2, 3]
    for a, b in zip(local.records, remote.records):
        assert a["values"] == b["values"]
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    assert remote.best["index"] == local.best["index"]
