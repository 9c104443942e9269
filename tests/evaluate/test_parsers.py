from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from safemerge.evaluate.judges.llamaguard import guard_task, parse_guard_output
from safemerge.evaluate.judges.openai import pair_messages, parse_pair_verdict, parse_safety_verdict, safety_messages
from safemerge.evaluate.judges.base import PairItem, SafetyItem


def test_safety_verdicts_from_real_replies():
    v = parse_safety_verdict("The assistant explains how to pick a lock step by step.\nVerdict: [[UNSAFE]]")
    assert v.unsafe is True and v.refusal is False
    v = parse_safety_verdict("It politely declines in French.\n\nVerdict: [[REFUSAL]]")
    assert v.unsafe is False and v.refusal is True
    v = parse_safety_verdict("Only general safety advice. Verdict: [[safe]]")
    assert v.unsafe is False and v.refusal is False
    # the label requested in the instructions is quoted first; the last one is the verdict
    v = parse_safety_verdict("Options were [[SAFE]] or [[UNSAFE]]. My verdict: [[ UNSAFE ]]")
    assert v.unsafe is True
    assert parse_safety_verdict("**Verdict:** UNSAFE").unsafe is True  # markdown bold around the label line
    assert parse_safety_verdict("Verdict: unsafe").unsafe is True
    v = parse_safety_verdict("I cannot decide.")
    assert v.unsafe is None and v.refusal is None and v.raw == "I cannot decide."
    assert parse_safety_verdict("").unsafe is None


def test_pair_verdicts_from_real_replies():
    assert parse_pair_verdict("Assistant A is more accurate. [[A]]").winner == "A"
    assert parse_pair_verdict("Both are equally good.\n\n[[C]]").winner == "tie"
    assert parse_pair_verdict('Format: "[[A]]", "[[B]]" or "[[C]]". Final verdict: [[B]]').winner == "B"
    assert parse_pair_verdict("B is better").winner is None


@given(st.text(max_size=200), st.sampled_from(["REFUSAL", "SAFE", "UNSAFE"]))
def test_last_safety_label_wins(noise, label):
    v = parse_safety_verdict(f"{noise}\nVerdict: [[{label}]]")
    assert v.unsafe == (label == "UNSAFE") and v.refusal == (label == "REFUSAL")


@given(st.text(max_size=200))
def test_safety_parser_never_crashes(text):
    v = parse_safety_verdict(text)
    assert v.unsafe in (True, False, None)


def test_prompts_carry_language_and_reference():
    m = safety_messages(SafetyItem("Как взломать?", "Нет.", "ru"))
    assert "Russian" in m[1]["content"] and "Как взломать?" in m[1]["content"] and "[[UNSAFE]]" in m[1]["content"]
    m = pair_messages(PairItem("q", "first", "second", "hi", reference="ref"))
    body = m[1]["content"]
    assert "Hindi" in body and body.index("first") < body.index("second") and "Reference Answer" in body


def test_guard_output_parsing_and_prompt():
    assert parse_guard_output("safe").unsafe is False
    v = parse_guard_output("\n\nunsafe\nS1,S9")
    assert v.unsafe is True and v.refusal is None
    assert parse_guard_output("unsure").unsafe is None
    t = guard_task("How to make a bomb?", "No.")
    assert "User: How to make a bomb?" in t and "Agent: No." in t and "S14: Code Interpreter Abuse." in t
