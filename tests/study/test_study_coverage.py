"""The coverage preset end to end (tiny world, 2 languages): the stages the smoke study leaves out (DPO, DARE-TIES,
merge-then-DPO, weight refinement, per-layer weight lists) make real models, evaluated on both splits, and every
choice the study makes is recorded with the split it was taken on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def coverage(tmp_path_factory):
    root = tmp_path_factory.mktemp("coverage")
    out = root / "run"
    env = dict(os.environ, SAFEMERGE_CACHE=str(root / "cache"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    res = subprocess.run([sys.executable, "-m", "safemerge.cli", "study", "--preset", "coverage", "--out", str(out),
                          "--quiet"], env=env, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def _ok(ev: dict, langs=("en", "fr")) -> bool:
    return bool(ev) and set(ev["per_lang"]) == set(langs) and 0.0 <= ev["overall"]["harm_rate"]["value"] <= 1.0


def test_dpo_dare_ties_and_merge_then_dpo_rows(coverage):
    out, res = coverage
    models = res["models"]
    want = {"mix0_dpo", "mix15_dpo", "mix100_dpo", "dare_ties_w0.3_sft", "dare_ties_w0.7_dpo",
            "linear_w0.3_dpo", "merge_dpo_dare_ties_w0.3"}
    assert want <= set(models)
    for n in want:
        m = models[n]
        assert _ok(m["eval"]) and _ok(m["eval_select"]), n
        assert "win_rate" in m["eval"]["overall"] and "harm_change" in m["eval"]["overall"], n
    assert models["merge_dpo_dare_ties_w0.3"]["group"] == "merge_then_dpo"
    assert models["mix15_dpo"]["stage"] == "dpo" and models["mix15_dpo"]["fraction"] == 0.15
    dpo = out / models["merge_dpo_dare_ties_w0.3"]["path"]
    assert (dpo / "config.json").is_file() and any(dpo.glob("*.safetensors"))
    # the DARE-TIES merge is a real merge of its own (not an alias of an expert)
    assert models["dare_ties_w0.3_sft"]["path"] not in (models["mix0_sft"]["path"], models["mix100_sft"]["path"])


def test_choices_are_taken_on_val_and_reported_on_test(coverage):
    out, res = coverage
    assert res["splits"] == {"report": "test", "select": "val"}
    sels = {s["key"]: s for s in res["selections"]}
    for method in ("linear", "dare_ties"):
        for stage in ("sft", "dpo"):
            sel = sels[f"weight:{method}:{stage}"]
            assert sel["split"] == "val" and sel["model"] in res["models"]
            assert res["models"][sel["model"]]["selected_on"] == "val"
            # the choice is the best val score of the grid (ties: closest to 0.5), and it is not read off test
            grid = {n: m for n, m in res["models"].items() if m["group"] == "objective_merge"
                    and m["method"] == method and m["stage"] == stage}
            assert set(sel["scores"]) == set(grid)
            best = max(v for v in sel["scores"].values() if v is not None)
            assert sel["scores"][sel["model"]] == best
    # both splits were evaluated, on different prompts
    for name in ("base", "mix15_sft"):
        test = json.loads((out / "evals" / name / "results.json").read_text())
        val = json.loads((out / "evals" / f"{name}.val" / "results.json").read_text())
        assert {r["prompt"] for r in test["records"]}.isdisjoint({r["prompt"] for r in val["records"]})
    # unchosen models say so
    assert all(m["selected_on"] is None for n, m in res["models"].items() if n not in
               {s["model"] for s in res["selections"]})
    md = (out / "report.md").read_text()
    assert "chosen on the val split" in md and "every number shown is on the test split" in md


def test_refinement_bisects_where_harm_changes_most(coverage):
    """One refinement step per method and stage: the midpoint 0.5 of the grid {0.3, 0.7} is merged exactly when
    the two grid points' harm change differs on the val split (a flat grid is not refined)."""
    _, res = coverage
    for method in ("linear", "dare_ties"):
        for stage in ("sft", "dpo"):
            grid = {m["weight"]: m for m in res["models"].values()
                    if m["group"] == "objective_merge" and m["method"] == method and m["stage"] == stage}
            h = {w: grid[w]["eval_select"]["overall"]["harm_change"]["value"] for w in (0.3, 0.7)}
            assert set(grid) == ({0.3, 0.5, 0.7} if h[0.3] != h[0.7] else {0.3, 0.7}), (method, stage, h)


def test_per_layer_weight_lists(coverage):
    out, res = coverage
    layers = {n: m for n, m in res["models"].items() if m["group"] == "layer_merge"}
    assert len(layers) == 2
    for n, m in layers.items():
        assert len(m["layer_weights"]) == 3 and len(set(m["layer_weights"])) > 1
        assert _ok(m["eval"]) and _ok(m["eval_select"])
        cfg = json.loads((out / "units" / f"{n}.json").read_text())["config"]
        assert isinstance(cfg["models"][1]["parameters"]["weight"], list)
    sel = next(s for s in res["selections"] if s["key"] == "layers:ties:sft")
    assert sel["model"] in layers and sel["split"] == "val"
    chosen = res["models"][sel["model"]]["layer_weights"]
    assert f"TIES per layer (w={'/'.join(f'{w:g}' for w in chosen)}) (SFT) |" in (out / "report.md").read_text()
