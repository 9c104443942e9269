"""`safemerge data prepare`: reading each source format, building the outputs (mixtures, DPO pairs, per-language
splits, evaluation sets and suites), the datacard, and one-line errors with nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

import prepare_fixtures as fx
from safemerge.data.prepare import prepare
from safemerge.data.prepare.spec import load_prepare_spec
from safemerge.errors import ConfigError, InputError

SIX = list(fx.LANGS)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _spec(sources: dict, outputs: dict, languages=None) -> dict:
    return {"languages": languages or SIX, "seed": 0, "sources": sources, "outputs": outputs}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Specs given as mappings resolve relative paths against the working directory: the test's folder."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture()
def general_safety(tmp_path):
    """General rows (UltraFeedback, 6 per language: the English parquet and the translated copy) and safe
    refusals (PolyGuardPrompts, 2 per language)."""
    fx.ultrafeedback(tmp_path)
    fx.ultrafeedback_translated(tmp_path)
    fx.polyguardprompts(tmp_path)
    return {"uf": {"adapter": "ultrafeedback", "path": "raw/ultrafeedback_binarized"},
            "uft": {"adapter": "ultrafeedback", "path": "raw/ultrafeedback_translated.jsonl"},
            "pg": {"adapter": "polyguardprompts", "path": "raw/PolyGuardPrompts"}}


# ---------------------------------------------------------------------------------------------------- sources


def test_source_formats_jsonl_json_csv_parquet_gz_and_save_to_disk(tmp_path):
    import datasets

    rows = [{"prompt": f"p{i}", "completion": f"c{i}", "lang": "fr"} for i in range(3)]
    fx.write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "a.json").write_text(json.dumps(rows))
    fx.write_csv(tmp_path / "a.csv", ["prompt", "completion", "lang"], [list(r.values()) for r in rows])
    fx.write_parquet(tmp_path / "a.parquet", rows)
    fx.write_jsonl(tmp_path / "gz" / "a.jsonl.gz", rows, gz=True)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "disk"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows[:1])}
                         ).save_to_disk(str(tmp_path / "diskdict"))
    paths = {"jsonl": "a.jsonl", "json": "a.json", "csv": "a.csv", "parquet": "a.parquet", "gz": "gz",
             "disk": "disk"}
    sources = {k: {"adapter": "columns", "path": str(tmp_path / p)} for k, p in paths.items()}
    sources["dd"] = {"adapter": "columns", "path": str(tmp_path / "diskdict"), "split": "test"}
    outputs = {k: {"type": "sft", "from": [k]} for k in sources}
    res = prepare(_spec(sources, outputs, ["fr"]), tmp_path / "out")
    for k in paths:
        assert [(r["prompt"], r["completion"], r["lang"]) for r in _read(tmp_path / "out" / f"{k}.jsonl")] == \
            [(f"p{i}", f"c{i}", "fr") for i in range(3)], k
    assert len(_read(tmp_path / "out" / "dd.jsonl")) == 1
    assert res.datacard["sources"]["csv"]["rows_read"] == 3
    del sources["dd"]["split"]
    with pytest.raises(InputError, match="has splits test, train; set 'split'"):
        prepare(_spec(sources, outputs, ["fr"]), tmp_path / "out2")


def test_broken_lines_are_bad_rows_with_their_line_numbers(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"prompt": "p", "completion": "c", "lang": "en"}\n{not json\n[1, 2]\n'
                                      '{"prompt": "", "completion": "c", "lang": "en"}\n')
    res = prepare(_spec({"s": {"adapter": "columns", "path": str(tmp_path / "a.jsonl")}},
                        {"o": {"type": "sft", "from": ["s"]}}, ["en"]) | {"out": str(tmp_path / "out")})
    card = res.datacard["sources"]["s"]
    assert card["rows_read"] == 4 and card["records"] == 1 and card["bad_total"] == 3
    assert card["bad"] == {"empty_text:prompt": 1, "invalid_json": 1, "not_an_object": 1}
    assert card["bad_examples"]["invalid_json"] == [f"{tmp_path / 'a.jsonl'}:2"]
    md = (tmp_path / "out" / "datacard.md").read_text()
    assert "bad rows, invalid_json: 1" in md and "a.jsonl:2" in md


@pytest.mark.parametrize("src,message", [
    ({"adapter": "columns", "path": "nowhere.jsonl"}, "not found; download the dataset there"),
    ({"adapter": "columns", "path": "latin1.jsonl"}, "is not UTF-8 text"),
    ({"adapter": "columns", "path": "bad.parquet"}, "cannot read this Parquet file"),
    ({"adapter": "columns", "path": "emptydir"}, "no .jsonl, .json, .csv, .parquet files in"),
    ({"adapter": "columns", "hub": "CohereForAI/aya_redteaming", "split": "english"},
     "offline .*huggingface-cli download CohereForAI/aya_redteaming --repo-type dataset"),
])
def test_unreadable_sources_are_one_line_errors(tmp_path, src, message):
    (tmp_path / "latin1.jsonl").write_bytes('{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "emptydir").mkdir()
    spec = _spec({"s": src}, {"o": {"type": "sft", "from": ["s"]}}) | {"out": "out"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(InputError, match=message) as exc:
        prepare(tmp_path / "spec.yaml")
    assert "\n" not in str(exc.value) and str(exc.value).startswith("sources.s: ")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------- outputs


def test_mixtures_hold_the_safety_fraction_per_language(tmp_path, general_safety):
    spec = _spec(general_safety, {
        "general": {"type": "sft", "from": ["uf", "uft"]},
        "safety": {"type": "sft", "from": ["pg"], "where": {"harmful": True, "refusal": True, "safe": True}},
        "mix": {"type": "mixture", "general": ["general"], "safety": ["safety"], "fractions": [0, 0.5, 1],
                "per_language": True},
        "capped": {"type": "mixture", "general": ["general"], "safety": ["safety"], "fractions": [0.25],
                   "examples_per_language": 4}})
    res = prepare(spec, tmp_path / "out")
    out = tmp_path / "out"
    for pct_, n_safe in (("0", 0), ("50", 3), ("100", 6)):
        rows = _read(out / f"mix{pct_}.jsonl")
        assert Counter(r["lang"] for r in rows) == {lang: 6 for lang in SIX}  # fixed budget: the general pool
        for lang in SIX:
            mine = [r for r in rows if r["lang"] == lang]
            assert sum(r["kind"] == "safety" for r in mine) == n_safe, (pct_, lang)
            assert _read(out / f"mix{pct_}_{lang}.jsonl") == mine  # the monolingual split is the language slice
        assert len({r["id"] for r in rows}) == len(rows)  # cycled pools get suffixed ids
    assert all(r["source"] == "pg" for r in _read(out / "mix100.jsonl"))
    capped = _read(out / "capped25.jsonl")
    assert Counter(r["lang"] for r in capped) == {lang: 4 for lang in SIX}
    assert Counter(r["kind"] for r in capped) == {"general": 18, "safety": 6}
    first = {f: (out / f).read_bytes() for f in res.files}
    prepare(spec, out)  # rerun over its own output: identical bytes (seeded; no timestamps)
    assert {f: (out / f).read_bytes() for f in res.files} == first
    card = json.loads((out / "datacard.json").read_text())
    assert card["outputs"]["safety"]["dropped"] == {"no_completion": 6, "where": 12}
    assert card["outputs"]["mix"]["files"]["mix50.jsonl"]["by_language"] == {lang: 6 for lang in sorted(SIX)}


def test_mixture_without_safety_rows_in_a_language_is_an_error(tmp_path, general_safety):
    spec = _spec(general_safety, {
        "general": {"type": "sft", "from": ["uf", "uft"]},
        "safety": {"type": "sft", "from": ["pg"], "where": {"refusal": True, "lang": ["en", "fr"]}},
        "mix": {"type": "mixture", "general": ["general"], "safety": ["safety"]}})
    with pytest.raises(InputError, match="outputs.mix: no safety rows in language 'es' for the 15 % mixture"):
        prepare(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dpo_pairs_given_and_by_prompt(tmp_path):
    fx.ultrafeedback(tmp_path)
    fx.beavertails(tmp_path)
    spec = _spec({"uf": {"adapter": "ultrafeedback", "path": "raw/ultrafeedback_binarized"},
                  "bt": {"adapter": "beavertails", "path": "raw/BeaverTails"}},
                 {"given": {"type": "dpo", "from": ["uf"]},
                  "pairs": {"type": "dpo", "pairs": "by_prompt", "from": ["bt"]},
                  "unsafe": {"type": "prompts", "kind": "harmful", "from": ["bt"], "where": {"harmful": True}}},
                 ["en"]) | {"out": str(tmp_path / "out")}
    res = prepare(spec)
    given = _read(tmp_path / "out" / "given.jsonl")
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in given][:1] == [
        ("ultrafeedback prompt 0", "good answer 0", "bad answer 0")]
    pairs = _read(tmp_path / "out" / "pairs.jsonl")
    assert [(r["prompt"], r["chosen"], r["rejected"], r["category"]) for r in pairs] == [
        (f"beaver prompt {i}", f"safe answer {i}", f"unsafe answer {i}", c) for i, c in enumerate(
            ["animal abuse", "child abuse", "controversial topics and politics", "discrimination and stereotypes"])]
    assert res.datacard["outputs"]["pairs"]["dropped"] == {"no_pair": 1}  # prompt 4 has no unsafe answer
    unsafe = _read(tmp_path / "out" / "unsafe.jsonl")
    assert [r["prompt"] for r in unsafe] == [f"beaver prompt {i}" for i in range(4)]
    assert all("completion" not in r for r in unsafe)  # harmful eval prompts carry no (unsafe) answers


def test_prompts_sample_dedup_and_per_language_files(tmp_path):
    rows = [{"prompt": f"q{i % 9}", "completion": f"a{i}", "lang": lang} for lang in ("en", "fr") for i in range(12)]
    fx.write_jsonl(tmp_path / "g.jsonl", rows)
    outputs = {"all": {"type": "prompts", "kind": "general", "from": ["g"]},
               "five": {"type": "prompts", "kind": "general", "from": ["g"], "sample": 5, "per_language": True}}
    spec = _spec({"g": {"adapter": "columns", "path": str(tmp_path / "g.jsonl")}}, outputs, ["en", "fr"])
    res = prepare(spec, tmp_path / "a")
    every = _read(tmp_path / "a" / "all.jsonl")
    assert len(every) == 18 and res.datacard["outputs"]["all"]["dropped"] == {"duplicate_prompt": 6}
    assert every[0] == {"id": "g/en/0", "lang": "en", "prompt": "q0", "category": "", "source": "g",
                        "completion": "a0"}
    five = _read(tmp_path / "a" / "five.jsonl")
    assert Counter(r["lang"] for r in five) == {"en": 5, "fr": 5}
    assert all(r in every for r in five)  # a subset, in file order
    assert [r["id"] for r in five] == sorted((r["id"] for r in five), key=lambda i: (i.split("/")[1],
                                                                                  int(i.split("/")[2])))
    assert _read(tmp_path / "a" / "five_fr.jsonl") == [r for r in five if r["lang"] == "fr"]
    again = prepare(spec, tmp_path / "b")
    assert again.files["five.jsonl"] == res.files["five.jsonl"]
    other = prepare(spec | {"seed": 1}, tmp_path / "c")
    assert other.files["five.jsonl"] != res.files["five.jsonl"]


def test_suite_output_is_a_loadable_eval_suite(tmp_path):
    from safemerge.evaluate.suites import EvalSuite

    fx.xstest(tmp_path)
    fx.dolly15k(tmp_path)
    spec = _spec({"x": {"adapter": "xstest", "path": "raw/xstest/xstest_prompts.csv"},
                  "d": {"adapter": "dolly", "path": "raw/databricks-dolly-15k/databricks-dolly-15k.jsonl"}},
                 {"benign": {"type": "prompts", "kind": "benign", "from": ["x"], "where": {"harmful": False}},
                  "general": {"type": "prompts", "kind": "general", "from": ["d"], "sample": 3, "seed": 7},
                  "suite": {"type": "suite", "sets": ["benign", "general"], "max_new_tokens": 32}},
                 ["en"]) | {"out": "out"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    prepare(tmp_path / "spec.yaml")
    suite = EvalSuite.from_yaml(tmp_path / "out" / "suite.yaml")
    items = suite.load_items()
    assert suite.max_new_tokens == 32 and [i.kind for i in items] == ["benign"] * 3 + ["general"] * 3
    assert items[0].id == "benign/x/en/1" and items[0].category == "homonyms"
    assert all(i.reference and i.reference.startswith("dolly response") for i in items[3:])


# ---------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("mutate,message", [
    (lambda s: s["sources"]["a"].update(adapter="nope"), "unknown adapter 'nope'"),
    (lambda s: s["outputs"]["o"].update({"from": ["zzz"]}), "outputs.o.from: 'zzz' is not a source"),
    (lambda s: s["outputs"]["o"].update(where={"is_safe": False}), "'is_safe' is not a record field"),
    (lambda s: s["outputs"].update(m={"type": "mixture", "general": ["later"], "safety": ["o"]}),
     "outputs.m.general: 'later' is not an earlier sft output"),
    (lambda s: s["outputs"].update(p={"type": "suite", "sets": ["o"]}), "'o' is not an earlier prompts output"),
    (lambda s: s.update(languages=["en", "klingon"]), "unknown language 'klingon'"),
    (lambda s: s["sources"]["a"].update(hub="x/y"), "give exactly one of path"),
    (lambda s: s["sources"]["a"].update(columns={"prompt": "q"}, adapter="dolly"), "columns is the mapping"),
    (lambda s: s["outputs"].update(datacard={"type": "sft", "from": ["a"]}), "would overwrite the datacard"),
    (lambda s: s["outputs"].update({"o.": {"type": "sft", "from": ["a"]}}), None),
    (lambda s: s["outputs"].update(mix={"type": "mixture", "general": ["o"], "safety": ["o"], "fractions": [2]}),
     "fraction 2.0 must be between 0 and 1"),
])
def test_spec_errors_name_the_key(tmp_path, mutate, message):
    spec = _spec({"a": {"adapter": "columns", "path": "a.jsonl"}}, {"o": {"type": "sft", "from": ["a"]}})
    mutate(spec)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    if message is None:  # a valid variant: the mutation is allowed
        load_prepare_spec(tmp_path / "s.yaml")
        return
    with pytest.raises(ConfigError, match=message) as exc:
        load_prepare_spec(tmp_path / "s.yaml")
    assert str(exc.value).startswith(f"{tmp_path / 's.yaml'}: ") and "\n" not in str(exc.value)


def test_output_folder_is_only_replaced_when_it_is_ours(tmp_path):
    fx.write_jsonl(tmp_path / "raw" / "a.jsonl", [{"prompt": "p", "completion": "c", "lang": "en"}])
    spec = _spec({"a": {"adapter": "columns", "path": str(tmp_path / "raw" / "a.jsonl")}},
                 {"o": {"type": "sft", "from": ["a"]}}, ["en"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="was not written by `safemerge data prepare`"):
        prepare(spec, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="lies inside the output folder"):
        prepare(spec, tmp_path / "raw")
    prepare(spec, tmp_path / "ours")
    prepare(spec, tmp_path / "ours")  # an earlier prepare output is replaced
    assert sorted(os.listdir(tmp_path / "ours")) == ["datacard.json", "datacard.md", "o.jsonl"]
    with pytest.raises(InputError, match="no output folder: pass --out DIR"):
        prepare(spec)


def test_an_output_without_rows_names_the_counts_and_writes_nothing(tmp_path):
    fx.xstest(tmp_path)
    spec = _spec({"x": {"adapter": "xstest", "path": "raw/xstest/xstest_prompts.csv"}},
                 {"ok": {"type": "prompts", "kind": "benign", "from": ["x"]},
                  "none": {"type": "sft", "from": ["x"]}}, ["en"]) | {"out": "out"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(InputError, match=r"outputs.none: no records left \(dropped: no_completion 5; x: 6 rows "
                                         r"read, 5 records, bad: empty_text:prompt 1\)"):
        prepare(tmp_path / "s.yaml")
    assert not (tmp_path / "out").exists()


def test_cli_prepare_check_and_one_line_errors(tmp_path):
    fx.xstest(tmp_path)
    spec = _spec({"x": {"adapter": "xstest", "path": "raw/xstest/xstest_prompts.csv"}},
                 {"xs": {"type": "prompts", "kind": "benign", "from": ["x"], "where": {"harmful": False}}},
                 ["en"]) | {"out": "out"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    exe = [sys.executable, "-m", "safemerge.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    def run(*args):
        return subprocess.run([*exe, "data", "prepare", *args], capture_output=True, text=True, env=env, timeout=120)

    r = run(str(tmp_path / "s.yaml"), "--check")
    assert r.returncode == 0 and "output xs (prompts): xs.jsonl" in r.stdout and not (tmp_path / "out").exists()
    r = run(str(tmp_path / "s.yaml"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "source x: 5 records of 6 rows; bad rows 1 (empty_text:prompt 1)" in r.stdout
    assert f"wrote {tmp_path / 'out' / 'xs.jsonl'}: 3 rows" in r.stdout
    (tmp_path / "bad.yaml").write_text("sources: {x: {adapter: xstest}}\noutputs: {}\n")
    r = run(str(tmp_path / "bad.yaml"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "sources.x: Value error, give exactly one of path" in r.stderr
