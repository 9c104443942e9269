"""The refusal/language lexicon against every hand-written string of the world, plus hypothesis invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safemerge.data.world.languages import LANGUAGES, all_packs
from safemerge.data.world.lexicon import detect_language, is_placeholder, is_refusal, refusal_markers

PACKS = all_packs()


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_refusal_is_detected_and_in_its_language(lang):
    pack = PACKS[lang]
    for text in (*pack.refusals, pack.self_harm_refusal):
        assert is_refusal(text), text
        assert detect_language(text) == lang, text
    assert any(m in pack.refusals[0].lower() for m in refusal_markers(lang))


@pytest.mark.parametrize("lang", LANGUAGES)
def test_helpful_answers_and_placeholders_are_not_refusals(lang):
    pack = PACKS[lang]
    for cat_acts in pack.benign_acts.values():
        for _act, answer in cat_acts:
            assert not is_refusal(answer), answer
    assert not is_refusal(pack.placeholder)
    assert is_placeholder(pack.placeholder)
    assert not any(is_placeholder(r) for r in pack.refusals)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_frame_and_template_reads_as_its_language(lang):
    pack = PACKS[lang]
    texts = [pack.render_frame(f, a) for f in pack.frames for acts in pack.harm_acts.values() for a in acts]
    texts += [pack.render_frame(f, a) for f in pack.frames for acts in pack.benign_acts.values() for a, _ in acts]
    slots = {"town": "Kalon", "person": "Mira", "n": "7", "word": pack.antonyms[0][0],
             "words": pack.list_sep.join((pack.antonyms[1][0], pack.colours[0], pack.professions[0]))}
    texts += [t.format(**slots) for temps in pack.task_templates.values() for t in temps]
    wrong = [t for t in texts if detect_language(t) != lang]
    assert not wrong, wrong[:5]


def test_marker_unknown_language():
    with pytest.raises(ValueError, match="unknown language"):
        refusal_markers("de")


def test_detect_language_without_evidence():
    assert detect_language("") is None
    assert detect_language("42") is None
    assert detect_language("Verania") is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.sampled_from(LANGUAGES), st.text(max_size=60))
def test_refusal_marker_anywhere_is_a_refusal(prefix, lang, suffix):
    marker = refusal_markers(lang)[0]
    assert is_refusal(prefix + " " + marker + " " + suffix)
    assert is_refusal((prefix + " " + marker.upper() + " " + suffix))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_detect_language_is_total(text):
    assert detect_language(text) in (*LANGUAGES, None)
    is_refusal(text)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(LANGUAGES), st.integers(0, 10_000))
def test_script_languages_win_over_digits_and_names(lang, n):
    pack = PACKS[lang]
    text = f"{n} {pack.neutral[n % len(pack.neutral)]} {n}"
    assert detect_language(text) == lang
