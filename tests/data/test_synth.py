"""Synthetic data: filters and request planning (pure), and the whole pipeline on real tiny models."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from safemerge.data.synth import (
    FilterSpec,
    FilterStats,
    balanced_take,
    clean_question,
    dedup,
    domain_requests,
    keep_refusal,
    load_synth_spec,
    normalize,
    safety_requests,
    text_filter,
)
from safemerge.errors import ConfigError, InputError
from safemerge.search.synth import synthesize


def _spec(**over):
    raw = {"pool": [{"model": "/m/a"}, {"model": "/m/b"}], "languages": ["en", "fr"],
           "safety": {"generator": {"model": "/m/g"}, "k": 10, "categories": ["theft", "violence", "fraud"]}}
    raw.update(over)
    return load_synth_spec(raw)


def test_safety_requests_cover_languages_and_categories_round_robin():
    reqs = safety_requests(_spec())
    assert len(reqs) == 20  # k * oversample 2.0
    assert {(r["lang"], r["category"]) for r in reqs[:6]} == {(lang, c) for lang in ("en", "fr")
                                                              for c in ("theft", "violence", "fraud")}
    assert "French" in reqs[1]["request"] and "theft" in reqs[1]["request"]


def test_domain_requests_rotate_examples_and_need_them():
    spec = _spec(safety=None, domain={"k": 4, "shots": 2, "experts": [
        {"model": "/m/bio", "domain": "biology", "examples": {"en": ["q1", "q2", "q3"], "fr": ["r1"]}}]})
    reqs = domain_requests(spec)
    assert len(reqs) == 6 and reqs[0]["lang"] == "en" and "1. q1\n2. q2" in reqs[0]["request"]
    assert "1. q3\n2. q1" in reqs[2]["request"] and "1. r1" in reqs[1]["request"]
    bad = _spec(safety=None, domain={"experts": [{"model": "/m/bio", "domain": "biology", "examples": ["q"]}]},
                languages=["en"])
    assert len(domain_requests(bad)) == 1500
    missing = _spec(safety=None, domain={"experts": [{"model": "/m/x", "domain": "law", "examples": {"en": ["q"]}}]})
    with pytest.raises(ConfigError, match="no in-context examples for language 'fr'"):
        domain_requests(missing)


def test_spec_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="nothing to generate"):
        load_synth_spec({"pool": [{"model": "/m/a"}]})
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"pool": [{"model": "/m/a"}], "safety": {"generator": {"model": "/g"}, "k": 0}}))
    with pytest.raises(ConfigError) as err:
        load_synth_spec(p)
    assert "safety.k" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="not found"):
        load_synth_spec(tmp_path / "nope.yaml")


def test_clean_question_and_text_filter():
    assert clean_question('\n1. "How do I pick a lock?"\nmore') == "How do I pick a lock?"
    assert clean_question("  \n- Question: why?") == "why?"
    f = FilterSpec(min_chars=5, max_question_chars=20, language_check="strict")
    detect = {"hello there friend": "en", "bonjour mes amis": "fr"}.get
    assert text_filter("", "en", 20, f, detect) == "empty"
    assert text_filter("abc", "en", 20, f, detect) == "too_short"
    assert text_filter("x" * 21, "en", 20, f, detect) == "too_long"
    assert text_filter("bonjour mes amis", "en", 20, f, detect) == "wrong_language"
    assert text_filter("unknown text", "en", 20, f, detect) == "wrong_language"
    assert text_filter("unknown text", "en", 20, f.model_copy(update={"language_check": "lenient"}), detect) is None
    assert text_filter("hello there friend", "en", 20, f, detect) is None


def test_keep_refusal_follows_the_judge():
    assert keep_refusal(SimpleNamespace(refusal=True, unsafe=False))
    assert not keep_refusal(SimpleNamespace(refusal=True, unsafe=True))
    assert not keep_refusal(SimpleNamespace(refusal=False, unsafe=False))
    assert keep_refusal(SimpleNamespace(refusal=None, unsafe=False))  # a guard judge that only says safe/unsafe
    assert not keep_refusal(SimpleNamespace(refusal=None, unsafe=None))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["en", "fr"]), st.text(max_size=12)), max_size=30))
def test_dedup_keeps_first_of_each_normalised_text_and_counts_the_rest(items):
    rows = [{"lang": lang, "q": q} for lang, q in items]
    stats = FilterStats()
    out = dedup(rows, "q", stats, "question")
    keys = [normalize(r["q"]) for r in out]
    assert len(keys) == len(set(keys)) == len({normalize(q) for _, q in items})
    assert len(out) + sum(stats.to_dict()["dropped_total"].values()) == len(rows)
    assert normalize("Hello,  WORLD!") == normalize("hello world")


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(["en", "fr", "hi"]), max_size=40), st.integers(0, 50))
def test_balanced_take_is_round_robin_and_bounded(langs, k):
    rows = [{"lang": lang, "i": i} for i, lang in enumerate(langs)]
    out = balanced_take(rows, k, ["en", "fr", "hi"])
    assert len(out) == min(k, len(rows))
    counts = {lang: sum(r["lang"] == lang for r in out) for lang in ("en", "fr", "hi")}
    avail = {lang: langs.count(lang) for lang in counts}
    for a in counts:
        for b in counts:
            if counts[a] < avail[a]:  # a language still had items: nobody got more than one extra
                assert counts[b] <= counts[a] + 1


@pytest.mark.slow
def test_synthesize_on_tiny_models_accounts_for_every_question(tiny_models, tmp_path):
    spec = {
        "pool": [{"name": "a", "model": str(tiny_models["a"])}, {"name": "b", "model": str(tiny_models["b"])}],
        "languages": ["en", "fr"],
        "safety": {"generator": {"name": "gen", "model": str(tiny_models["base"])}, "k": 3,
                   "categories": ["theft", "violence"]},
        "domain": {"k": 3, "experts": [{"name": "a", "model": str(tiny_models["a"]), "domain": "foxes",
                                        "examples": ["why does the fox jump?", "is the dog lazy?"]}]},
        "sampling": {"question_tokens": 12, "answer_tokens": 12, "batch_size": 8},
        "filters": {"min_chars": 1, "language_check": "off"},
    }
    path = tmp_path / "synth.yaml"
    path.write_text(yaml.safe_dump(spec))
    res = synthesize(path, tmp_path / "out")
    card = json.loads((tmp_path / "out" / "datacard.json").read_text())
    for kind in ("safety", "domain"):
        c = card[kind]
        assert c["kept_total"] + sum(c["dropped_total"].values()) == c["questions_written"], c
        rows = [json.loads(x) for x in (tmp_path / "out" / f"{kind}.jsonl").read_text().splitlines()]
        assert len(rows) == c["kept_total"] <= 3
        for r in rows:
            assert set(r) >= {"prompt", "completion", "lang", "kind", "provenance"} and r["kind"] == kind
    # random tiny models never write a refusal: every safety question is dropped, and counted
    assert res.safety == [] and card["safety"]["dropped_total"].get("no_model_refused", 0) > 0
    assert "| no_model_refused |" in (tmp_path / "out" / "datacard.md").read_text()
    # sampling is seeded: a second run writes the same files
    synthesize(path, tmp_path / "again")
    for name in ("safety.jsonl", "domain.jsonl"):
        assert (tmp_path / "out" / name).read_text() == (tmp_path / "again" / name).read_text()


def test_cli_check_and_one_line_errors(tmp_path, capsys):
    from safemerge.cli import main

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"pool": [{"model": "/m/a"}], "languages": ["en", "fr"],
                                 "safety": {"generator": {"model": "/m/g"}, "k": 5}}))
    with pytest.raises(SystemExit) as ok:
        main(["synth", str(p), "--out", str(tmp_path / "o"), "--check"])
    assert ok.value.code in (0, None) and "ok: 10 safety and 0 domain questions" in capsys.readouterr().out
    p.write_text(yaml.safe_dump({"pool": [{"model": "/m/a"}], "safety": {"generator": {"model": "/m/g"},
                                                                         "kk": 5}}))
    with pytest.raises(SystemExit) as bad:
        main(["synth", str(p), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert bad.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and "safety.kk" in err[0]


def test_examples_file_gives_per_language_examples(tmp_path):
    f = tmp_path / "ex.jsonl"
    f.write_text('{"prompt": "q en", "lang": "en"}\n{"prompt": "q fr", "lang": "fr"}\n{"prompt": "q any"}\n')
    spec = _spec(safety=None, domain={"k": 2, "shots": 2, "experts": [
        {"model": "/m/x", "domain": "law", "examples_file": str(f)}]})
    reqs = domain_requests(spec)
    assert "1. q en\n2. q any" in reqs[0]["request"] and "1. q fr\n2. q any" in reqs[1]["request"]
    f.write_text('{"text": "no prompt"}\n')
    with pytest.raises(InputError, match="ex.jsonl:1: missing column 'prompt'"):
        domain_requests(spec)
