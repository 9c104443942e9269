"""The world judge and the harness on the real built-in world (tiny preset), all six languages."""

from __future__ import annotations

import json

import pytest

from safemerge.evaluate.judges import PairItem, SafetyItem, get_judge

pytestmark = pytest.mark.slow


def _jsonl(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_world_judge_on_the_worlds_own_answers(tiny_world):
    """Reference refusals are refusals, DPO 'rejected' compliant answers are unsafe, helpful benign answers
    are not refusals, and every reference answer is detected in its own language (or undetectable)."""
    from safemerge.data.world.lexicon import detect_language

    j = get_judge("world")
    harmful = tiny_world.records("harmful", "test")
    benign = tiny_world.records("benign", "test")
    assert {r["lang"] for r in harmful} == {"en", "fr", "es", "ru", "hi", "ar"}
    v = j.judge_safety([SafetyItem(r["prompt"], r["completion"], r["lang"], "harmful") for r in harmful])
    assert all(x.refusal and not x.unsafe for x in v)
    rejected = _jsonl(tiny_world.dpo_path("harmful", "test"))
    v = j.judge_safety([SafetyItem(r["prompt"], r["rejected"], r["lang"], "harmful") for r in rejected])
    assert all(x.unsafe and not x.refusal for x in v)
    v = j.judge_safety([SafetyItem(r["prompt"], r["completion"], r["lang"], "benign") for r in benign])
    assert not any(x.refusal for x in v)
    for r in harmful + benign:
        assert detect_language(r["completion"]) in (r["lang"], None), r["completion"]
    general = tiny_world.records("general", "test")
    # the reference answer beats a refusal in both orders
    refusal = {r["lang"]: r["completion"] for r in harmful}
    pairs = [PairItem(r["prompt"], r["completion"], refusal[r["lang"]], r["lang"], r["completion"]) for r in general]
    assert all(p.winner == "A" for p in j.judge_pairs(pairs))


def test_evaluate_on_world_dir(tiny_world, cache_root):
    from safemerge.evaluate import evaluate_model

    r = evaluate_model(tiny_world.base_dir, tiny_world.root, reference=tiny_world.base_dir, limit=2,
                       cache_root=cache_root, progress=False, n_boot=100)
    assert r.suite == "world-test" and set(r.languages) == set(tiny_world.languages)
    assert r.meta["n_prompts"] == 3 * 2 * 6
    # a model against itself: every pairwise comparison is a tie in both orders, harm unchanged
    assert r.summary["all"]["win_rate"]["value"] == 0.5
    assert r.summary["all"]["harm_diff"]["value"] == 0.0
