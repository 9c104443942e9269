"""Each adapter of `safemerge data prepare` on a small real file with its dataset's exact schema: the records it
makes, and its bad rows counted by reason (never dropped silently)."""

from __future__ import annotations

from pathlib import Path

import pytest

import prepare_fixtures as fx
from safemerge.data.prepare.build import load_records
from safemerge.data.prepare.spec import PrepareSpec

SIX = list(fx.LANGS)


def _load(root: Path, adapter: str, path: Path, **src):
    spec = PrepareSpec.model_validate({"languages": src.pop("languages", SIX),
                                       "sources": {"s": {"adapter": adapter, "path": str(path), **src}},
                                       "outputs": {"o": {"type": "prompts", "kind": "harmful", "from": ["s"]}}})
    return load_records("s", spec.sources["s"], spec, root)


def test_aya_redteaming(tmp_path):
    recs, rep = _load(tmp_path, "aya_redteaming", fx.aya_redteaming(tmp_path))
    assert rep.rows_read == 8 * 4 + 2 and rep.records == 24
    assert dict(rep.bad) == {"empty_text:prompt": 1, "missing_column:language": 1}
    assert rep.bad_at["empty_text:prompt"][0].endswith("aya_eng.jsonl:5")
    assert dict(rep.filtered) == {"other_language:sr": 4, "other_language:tl": 4}
    assert dict(rep.by_language) == {lang: 4 for lang in SIX}
    r = next(r for r in recs if r["lang"] == "ru")
    assert r["harmful"] is True and r["prompt"].startswith("redteam вопрос") and r["category"] == "Hate Speech"
    assert r["id"].startswith("s/ru/") and r["source"] == "s"
    two = next(r for r in recs if r["category"].count(";"))
    assert two["category"] == "Hate Speech; Discrimination & Injustice"  # the JSON list of harm categories
    only_local = _load(tmp_path, "aya_redteaming", tmp_path / "raw" / "aya_redteaming",
                       where={"global_or_local": "local"})[1]
    assert only_local.records == 12 and only_local.filtered["where"] == 18


def test_dolly_and_the_aya_dolly_sets(tmp_path):
    recs, rep = _load(tmp_path, "dolly", fx.dolly15k(tmp_path))
    assert rep.records == 12 and dict(rep.bad) == {"missing_column:response": 1}
    assert {r["lang"] for r in recs} == {"en"} and all(r["harmful"] is False for r in recs)
    closed = next(r for r in recs if r["category"] == "closed_qa")
    assert closed["prompt"] == "dolly instruction 1\n\nsome context" and closed["completion"] == "dolly response 1"
    recs, rep = _load(tmp_path, "aya_dolly", fx.aya_dolly(tmp_path))
    assert rep.records == 25 and dict(rep.filtered) == {"other_language:sr": 5}  # ISO 639-3 codes: fra, arb, ...
    assert sorted(rep.by_language) == ["ar", "es", "fr", "hi", "ru"]
    assert all(r["completion"] is None for r in recs)  # human-edited Dolly has no targets
    assert recs[0]["id"] == "s/fr/0"


def test_beavertails_is_safe_and_categories(tmp_path):
    recs, rep = _load(tmp_path, "beavertails", fx.beavertails(tmp_path))
    assert rep.rows_read == 11 and rep.records == 9
    assert dict(rep.bad) == {"missing_column:response": 1, "bad_value:is_safe": 1}
    unsafe = [r for r in recs if r["safe"] is False]
    assert len(unsafe) == 4 and all(r["harmful"] is True for r in unsafe)
    assert [r["category"] for r in unsafe] == ["animal abuse", "child abuse", "controversial topics and politics",
                                               "discrimination and stereotypes"]
    assert all(r["harmful"] is None and r["category"] == "" for r in recs if r["safe"])


def test_xstest_safe_and_contrast_types(tmp_path):
    recs, rep = _load(tmp_path, "xstest", fx.xstest(tmp_path))
    assert rep.records == 5 and dict(rep.bad) == {"empty_text:prompt": 1}
    assert [(r["id"], r["harmful"], r["category"]) for r in recs] == [
        ("s/en/1", False, "homonyms"), ("s/en/2", False, "homonyms"), ("s/en/3", False, "definitions"),
        ("s/en/26", True, "contrast_homonyms"), ("s/en/27", True, "contrast_homonyms")]


def test_ultrafeedback_binarized_chat_messages(tmp_path):
    fx.ultrafeedback(tmp_path)
    recs, rep = _load(tmp_path, "ultrafeedback", tmp_path / "raw" / "ultrafeedback_binarized",
                      files="data/train_prefs-*.parquet")
    assert rep.records == 6 and not rep.bad
    r = recs[0]
    assert (r["id"], r["prompt"], r["chosen"], r["rejected"], r["completion"]) == (
        "s/en/pid0000", "ultrafeedback prompt 0", "good answer 0", "bad answer 0", "good answer 0")
    recs, rep = _load(tmp_path, "ultrafeedback", fx.ultrafeedback_translated(tmp_path))
    assert dict(rep.by_language) == {lang: 6 for lang in SIX[1:]}  # the row's own `lang` column
    recs, rep = _load(tmp_path, "ultrafeedback", tmp_path / "raw" / "ultrafeedback_binarized", lang="French",
                      files="data/*.parquet")
    assert dict(rep.by_language) == {"fr": 6}  # a translated copy without a language column: lang: on the source


def test_polyguardprompts_labels(tmp_path):
    recs, rep = _load(tmp_path, "polyguardprompts", fx.polyguardprompts(tmp_path))
    assert rep.rows_read == 32 and rep.records == 30
    assert dict(rep.bad) == {"bad_value:prompt_harm_label": 1} and dict(rep.filtered) == {"other_language:cs": 1}
    refused = [r for r in recs if r["refusal"]]
    assert len(refused) == 12 and all(r["safe"] is True and r["harmful"] is True for r in refused)
    complied = [r for r in recs if r["refusal"] is False]
    assert len(complied) == 12 and all(r["safe"] is False for r in complied)
    prompt_only = [r for r in recs if r["completion"] is None]
    assert len(prompt_only) == 6 and all(r["harmful"] is False and r["refusal"] is None for r in prompt_only)
    assert {r["lang"] for r in recs} == set(SIX)  # "English", "Arabic", ... -> codes


def test_multijail_language_columns(tmp_path):
    recs, rep = _load(tmp_path, "multijail", fx.multijail(tmp_path))
    assert [(r["id"], r["lang"]) for r in recs] == [("s/en/0", "en"), ("s/en/1", "en"), ("s/ar/1", "ar"),
                                                   ("s/en/2", "en"), ("s/ar/2", "ar")]
    assert dict(rep.bad) == {"empty_text:ar": 1}
    assert rep.notes == ["no column for language(s) fr, es, ru, hi (MultiJail has en, zh, it, vi, ar, ko, th, bn, "
                         "sw, jv)"]
    assert recs[0]["category"] == "Violence & incitement" and recs[0]["harmful"] is True
    recs, _ = _load(tmp_path, "multijail", fx.multijail(tmp_path), languages=["zh", "it"])
    assert sorted({r["lang"] for r in recs}) == ["it", "zh"]


def test_columns_adapter_maps_any_table(tmp_path):
    path = fx.write_jsonl(tmp_path / "t.jsonl", [
        {"question": "q1", "answer": "a1", "language": "fr", "is_refusal": "true"},
        {"question": "q2", "answer": "a2", "language": "xx-unknown"},
        {"question": "q3", "answer": "", "language": "fr"},
        {"answer": "a4", "language": "fr"}])
    recs, rep = _load(tmp_path, "columns", path, columns={"prompt": "question", "completion": "answer",
                                                          "lang": "language"}, fixed={"harmful": True})
    assert [(r["prompt"], r["completion"], r["harmful"], r["lang"]) for r in recs] == [("q1", "a1", True, "fr")]
    assert dict(rep.bad) == {"unknown_language:xx-unknown": 1, "empty_text:answer": 1,
                             "missing_column:question": 1}


@pytest.mark.parametrize("adapter,writer", [
    ("aya_redteaming", fx.aya_redteaming), ("dolly", fx.dolly15k), ("beavertails", fx.beavertails),
    ("xstest", fx.xstest), ("polyguardprompts", fx.polyguardprompts), ("multijail", fx.multijail)])
def test_a_row_without_the_columns_is_a_bad_row(tmp_path, adapter, writer):
    writer(tmp_path)
    path = fx.write_jsonl(tmp_path / "other.jsonl", [{"unrelated": "column"}])
    recs, rep = _load(tmp_path, adapter, path)
    assert recs == [] and rep.rows_read == 1 and sum(rep.bad.values()) == 1
    assert next(iter(rep.bad)).startswith("missing_column:")
