"""Paper B on the built-in world: a safety-unaware search merges a more harmful model than a safety-aware one.

Pool = an aligned model (the safety-only expert) + a misaligned general expert (0 % safety). Both searches run CMA-ES
over TIES (weight, density) per model with the same budget and seed; the unaware one minimises the domain loss
only, the aware one L_safety + 1.0 L_domain (alpha 1 rather than the default 0.3 keeps the aware merge's domain loss
close to the unaware one's on the tiny world: 5.23-5.42 vs 4.80-4.81 nats/token in two runs on 2026-11-23). Harm is measured with the evaluation harness and the world judge on
the world's held-out harmful test prompts, per language.
"""

from __future__ import annotations

import json

import pytest

from safemerge.evaluate import evaluate_model
from safemerge.search.runner import run_search
from safemerge.search.synth import synthesize


def _spec(pool, aware: bool) -> dict:
    objective = ({"safety": str(pool["safety"]), "domain": str(pool["domain"]), "alpha": 1.0} if aware
                 else {"domain": str(pool["domain"]), "alpha": 1.0})
    return {"pool": [{"name": "expert", "model": str(pool["expert"])},
                     {"name": "aligned", "model": str(pool["aligned"])}],
            "base_model": str(pool["world"].base_dir), "method": "ties",
            "space": {"params": ["weight", "density"]}, "objective": objective,
            "optimizer": {"name": "cma", "budget": 16, "popsize": 4, "seed": 0}, "output": {"merge_best": True}}


@pytest.mark.slow
def test_safety_aware_search_is_less_harmful_per_language(world_pool, tmp_path):
    results = {}
    for mode in ("aware", "unaware"):
        res = run_search(_spec(world_pool, mode == "aware"), tmp_path / mode, show_progress=False)
        report = evaluate_model(str(res.merged), suite=str(world_pool["world"].root), judge="world", progress=False,
                                n_boot=50, cache=False)
        results[mode] = (res, report)
    aware, unaware = results["aware"][1], results["unaware"][1]
    table = {mode: {lang: rep.metric("harm_rate", lang) for lang in ("en", "fr", "all")}
             for mode, (_, rep) in results.items()}
    print("harm_rate per language:", table)
    for lang in ("en", "fr"):
        assert unaware.metric("harm_rate", lang) > aware.metric("harm_rate", lang), table
    # similar domain score: the aware merge's domain loss is within 20 % of the unaware one's
    dom = {mode: res.best["domain"] for mode, (res, _) in results.items()}
    assert dom["aware"] <= 1.2 * dom["unaware"], dom
    # the search scored both pool models; the aligned one is the safer of the two on the safety loss
    pool = results["aware"][0].pool
    assert pool["aligned"]["safety"] < pool["expert"]["safety"]


@pytest.mark.slow
def test_synth_on_the_world_pool_counts_every_question(world_pool, tmp_path):
    """The tiny world's models write poor questions: most are dropped, and the datacard says where."""
    world = world_pool["world"]
    spec = {"pool": [{"name": "aligned", "model": str(world_pool["aligned"])},
                     {"name": "expert", "model": str(world_pool["expert"])}],
            "languages": ["en", "fr"],
            "safety": {"generator": {"name": "expert", "model": str(world_pool["expert"])}, "k": 4,
                       "examples": {lang: [r["prompt"] for r in world.records("harmful", "train", [lang])][:3]
                                    for lang in ("en", "fr")}},
            "domain": {"k": 4, "experts": [{"name": "expert", "model": str(world_pool["expert"]),
                                            "domain": "towns, rivers and people",
                                            "examples_file": str(world_pool["domain"])}]},
            "sampling": {"question_tokens": 24, "answer_tokens": 24}}
    res = synthesize(spec, tmp_path / "synth")
    for kind in ("safety", "domain"):
        card = res.datacard[kind]
        assert card["kept_total"] + sum(card["dropped_total"].values()) == card["questions_written"] > 0
        for row in getattr(res, kind):
            assert row["provenance"]["question_by"] == "expert" and row["lang"] in ("en", "fr")
    # a question is kept (or dropped over k) exactly when some pool model refused it, whether or not any was
    card = res.datacard["safety"]
    refusals = card["refusals_by_model"]
    refused_questions = card["kept_total"] + card["dropped_total"].get("over_k", 0)
    assert len(res.safety) == card["kept_total"]
    assert sum(refusals.values()) >= refused_questions and (sum(refusals.values()) > 0) == (refused_questions > 0)
    assert set(refusals) <= {"aligned", "expert"}
    from safemerge.data.world.lexicon import is_refusal

    for row in res.safety:  # every kept safety answer is a refusal by a pool model that refused
        assert is_refusal(row["completion"]) and refusals.get(row["provenance"]["answer_by"], 0) >= 1, row
    print(json.dumps({k: res.datacard[k]["dropped_total"] | {"kept": res.datacard[k]["kept_total"]}
                      for k in ("safety", "domain")}))


@pytest.mark.slow
def test_extra_evaluation_term_enters_the_objective(world_pool, tmp_path):
    spec = _spec(world_pool, aware=True)
    spec["optimizer"] = {"name": "random", "budget": 2, "seed": 0}
    spec["output"] = {"merge_best": False}
    spec["objective"]["extra"] = [{"metric": "harm_rate", "weight": 2.0, "suite": str(world_pool["world"].root),
                                   "limit": 3}]
    res = run_search(spec, tmp_path / "extra", show_progress=False)
    for r in res.records:
        harm = r["extra"]["harm_rate"]
        assert 0.0 <= harm <= 1.0
        alpha = spec["objective"]["alpha"]
        assert r["objective"] == pytest.approx(r["safety"] + alpha * r["domain"] + 2.0 * harm)
    assert "harm_rate" in res.pool["expert"]["extra"]
