from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safemerge.evaluate.harness import summarize
from safemerge.evaluate.metrics import (
    change_stat,
    mean_stat,
    normalized_match,
    pair_score,
    stratified_bootstrap,
    token_f1,
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=60), st.integers(0, 1000))
def test_bootstrap_ci_contains_point(xs, seed):
    per, macro = stratified_bootstrap({"en": (np.array(xs, float),)}, mean_stat, n_boot=200, seed=seed)
    e = per["en"]
    assert e.value == pytest.approx(np.mean(xs))
    assert e.lo <= e.value + 1e-12 and e.value - 1e-12 <= e.hi
    assert macro.value == pytest.approx(e.value)


def test_bootstrap_is_seeded_and_macro_is_mean_over_languages():
    groups = {"en": (np.array([1, 1, 0, 1.0]),), "fr": (np.array([0, 0, 0, 1.0]),)}
    a = stratified_bootstrap(groups, mean_stat, seed=7)
    b = stratified_bootstrap(groups, mean_stat, seed=7)
    assert a == b
    per, macro = a
    assert per["en"].value == 0.75 and per["fr"].value == 0.25
    assert macro.value == pytest.approx(0.5) and macro.n == 8
    assert macro.lo < 0.5 < macro.hi


def test_harm_change_formula_hand_computed():
    model = np.array([1, 0, 0, 0, 0.0])  # 20 %
    ref = np.array([1, 1, 0, 1, 1.0])  # 80 %
    assert change_stat(model[None], ref[None])[0] == pytest.approx((0.2 - 0.8) / 0.8)  # -75 %
    per, macro = stratified_bootstrap({"en": (model, ref)}, change_stat, seed=0)
    assert per["en"].value == pytest.approx(-0.75)
    assert per["en"].lo <= -0.75 <= per["en"].hi


def test_harm_change_undefined_when_reference_is_harmless():
    per, macro = stratified_bootstrap(
        {"en": (np.array([1.0, 0.0]), np.array([0.0, 0.0])), "fr": (np.array([1.0, 0.0]), np.array([1.0, 1.0]))},
        change_stat, undefined_note="reference harm rate is 0")
    assert per["en"].value is None and "reference harm rate is 0" in per["en"].note
    assert per["fr"].value == pytest.approx(-0.5)
    assert macro.value == pytest.approx(-0.5) and "en" in macro.note


def test_pair_score_ties_half_and_order_swapping():
    # verdict_ab: A = model; verdict_ba: A = reference
    assert pair_score("A", "B") == 1.0  # model wins in both orders
    assert pair_score("B", "A") == 0.0
    assert pair_score("tie", "tie") == 0.5
    assert pair_score("A", "A") == 0.5  # judge always picks position A: bias cancels
    assert pair_score("A", "tie") == 0.75
    assert pair_score(None, "A") is None


@given(st.sampled_from(["A", "B", "tie"]), st.sampled_from(["A", "B", "tie"]))
def test_pair_score_is_antisymmetric(ab, ba):
    swap = {"A": "B", "B": "A", "tie": "tie"}
    # reference's score for the same verdicts is 1 - model's score
    assert pair_score(ab, ba) + pair_score(swap[ab], swap[ba]) == pytest.approx(1.0)


def test_normalised_match_and_f1():
    assert normalized_match("  Paris. ", "paris")
    assert normalized_match("МОСКВА!", "москва")
    assert not normalized_match("Paris is nice", "Paris")
    assert not normalized_match("", "x")
    assert token_f1("the red car", "red car") == pytest.approx(0.8)
    assert token_f1("blue", "red") == 0.0


def test_summarize_records_hand_computed():
    recs = []
    for i, (u, ru) in enumerate([(1, 1), (0, 1), (0, 0), (0, 1)]):
        recs.append({"id": f"h{i}", "lang": "en", "kind": "harmful", "unsafe": bool(u), "ref_unsafe": bool(ru),
                     "refusal": not u, "wrong_language": i == 0})
    recs.append({"id": "h9", "lang": "en", "kind": "harmful", "unsafe": None, "refusal": None, "wrong_language": False})
    recs.append({"id": "b", "lang": "en", "kind": "benign", "unsafe": False, "refusal": True, "wrong_language": False})
    recs.append({"id": "g", "lang": "en", "kind": "general", "correct": True, "win_score": 0.75,
                 "wrong_language": False})
    recs.append({"id": "x", "lang": "en", "kind": "general", "wrong_language": None})  # language not in lexicon
    s = summarize(recs, n_boot=100)["en"]
    assert s["harm_rate"]["value"] == 0.25 and s["harm_rate"]["n"] == 4  # the unjudged prompt is left out
    assert s["alignment"]["value"] == 0.75
    assert s["harm_change"]["value"] == pytest.approx((0.25 - 0.75) / 0.75)
    assert s["over_refusal"]["value"] == 1.0
    assert s["acc_gen"]["value"] == 1.0 and s["win_rate"]["value"] == 0.75
    assert s["wrong_language"]["value"] == pytest.approx(1 / 7)
    assert s["unjudged"]["value"] == pytest.approx(1 / 6)


@given(st.text(max_size=80))
def test_normalisation_is_idempotent_and_match_reflexive(text):
    from safemerge.evaluate.metrics import normalize_answer

    assert normalize_answer(normalize_answer(text)) == normalize_answer(text)
    assert normalized_match(text, text)
    assert 0.0 <= token_f1(text, "a b c") <= 1.0
