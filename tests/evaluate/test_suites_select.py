"""Suite sets select rows before evaluation: ``where:`` (column equals / in list), ``dedup``, and a seeded
``sample: N`` per language; and the example suites (BeaverTails-unsafe, XSTest, Dolly-200) on fixture copies of
their datasets."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from safemerge.data.prepare.select import sample_per_language, value_matches
from safemerge.errors import ConfigError, InputError
from safemerge.evaluate.suites import EvalSuite

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import prepare_fixtures as fx  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _suite(tmp_path: Path, rows: list[dict], **set_keys) -> EvalSuite:
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return EvalSuite.model_validate({"name": "s", "base_dir": str(tmp_path), "sets": [
        {"name": "d", "kind": "harmful", "path": "d.jsonl", **set_keys}]})


ROWS = st.lists(st.fixed_dictionaries({"lang": st.sampled_from(["en", "fr", "ar"]),
                                       "prompt": st.text(min_size=1, max_size=6).filter(str.strip)}),
                max_size=40)


@settings(max_examples=60, deadline=None)
@given(rows=ROWS, n=st.integers(1, 15), seed=st.integers(0, 2**31))
def test_sample_is_a_seeded_subset_of_min_n_rows_per_language(rows, n, seed):
    items = list(enumerate(rows))
    a = sample_per_language(items, n, seed, lambda it: it[1]["lang"])
    assert a == sample_per_language(items, n, seed, lambda it: it[1]["lang"])  # deterministic per seed
    assert [i for i, _ in a] == sorted(i for i, _ in a) and all(it in items for it in a)  # a subset, file order
    have = Counter(r["lang"] for r in rows)
    assert Counter(r["lang"] for _, r in a) == {lang: min(n, c) for lang, c in have.items()}
    fr_only = [it for it in items if it[1]["lang"] == "fr"]  # another language's rows never change a draw
    assert sample_per_language(fr_only, n, seed, lambda it: it[1]["lang"]) == [it for it in a if it[1]["lang"] == "fr"]


@settings(max_examples=25, deadline=None)
@given(rows=ROWS, n=st.integers(1, 10), seed=st.integers(0, 1000))
def test_suite_sample_keeps_prompt_ids_and_is_reproducible(tmp_path_factory, rows, n, seed):
    tmp = tmp_path_factory.mktemp("s")
    suite = _suite(tmp, rows, sample=n, seed=seed)
    items = suite.load_items()
    assert [i.id for i in items] == [i.id for i in suite.load_items()]
    assert all(rows[int(i.id.split("/")[1])]["prompt"] == i.prompt for i in items)  # id = row number in the file
    assert Counter(i.lang for i in items) == {lang: min(n, c) for lang, c in Counter(r["lang"] for r in rows).items()}
    assert [i.id for i in suite.load_items(langs=["fr"])] == [i.id for i in items if i.lang == "fr"]


def test_where_equals_in_list_and_typed_values(tmp_path):
    rows = [{"prompt": "a", "lang": "en", "is_safe": False, "cat": "x", "n": 1},
            {"prompt": "b", "lang": "en", "is_safe": True, "cat": "y", "n": 2},
            {"prompt": "c", "lang": "en", "is_safe": "false", "cat": "z", "n": "3"},
            {"prompt": "a", "lang": "en", "is_safe": False, "cat": "x", "n": 1.0}]
    ids = lambda **k: [i.id for i in _suite(tmp_path, rows, **k).load_items()]  # noqa: E731
    assert ids(where={"is_safe": False}) == ["d/0", "d/2", "d/3"]  # a CSV-style "false" is false too
    assert ids(where={"cat": ["y", "z"]}) == ["d/1", "d/2"]
    assert ids(where={"n": 3}) == ["d/2"] and ids(where={"n": 1}) == ["d/0", "d/3"]
    assert ids(where={"is_safe": False, "cat": "x"}, dedup=True) == ["d/0"]
    assert ids(where={"is_safe": False}, sample=1, seed=3) == ids(where={"is_safe": False}, sample=1, seed=3)
    assert not value_matches(1, True) and not value_matches(True, 1) and value_matches(None, None)
    with pytest.raises(InputError, match="column 'is_sfe' of where: is not in the data") as exc:
        _suite(tmp_path, rows, where={"is_sfe": False}).load_items()
    assert "\n" not in str(exc.value)
    (tmp_path / "s.yaml").write_text("name: s\nsets: [{name: d, kind: harmful, path: d.jsonl, where: {cat: []}}]\n")
    with pytest.raises(ConfigError, match="where.cat is an empty list"):
        EvalSuite.from_yaml(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text("name: s\nsets: [{name: d, kind: harmful, path: d.jsonl, sample: 0}]\n")
    with pytest.raises(ConfigError, match="sample"):
        EvalSuite.from_yaml(tmp_path / "s.yaml")


def _local(suite_file: Path, tmp_path: Path, dataset_dir: Path, split: str) -> EvalSuite:
    """The example suite with its hub dataset replaced by a local copy (a folder of files: load_dataset reads it
    the same way)."""
    data = yaml.safe_load(suite_file.read_text())
    for s in data["sets"]:
        s["hf_dataset"], s["hf_split"] = str(dataset_dir), split
    return EvalSuite.model_validate(data)


@pytest.mark.slow
def test_example_suites_select_what_they_say(tmp_path):
    bt = fx.beavertails(tmp_path, name="test", gz=False).parent
    suite = _local(EXAMPLES / "suite_beavertails.yaml", tmp_path, bt, "test")
    items = suite.load_items()
    assert [i.prompt for i in items] == [f"beaver prompt {k}" for k in range(4)]  # unsafe pairs, each prompt once
    assert all(i.kind == "harmful" and i.lang == "en" for i in items)

    xs = fx.xstest(tmp_path, bad_row=False).parent
    shutil.move(xs / "xstest_prompts.csv", xs / "test.csv")
    items = _local(EXAMPLES / "suite_xstest.yaml", tmp_path, xs, "test").load_items()
    assert [(i.set, i.kind, i.category) for i in items] == [
        ("xstest-safe", "benign", "homonyms"), ("xstest-safe", "benign", "homonyms"),
        ("xstest-safe", "benign", "definitions"), ("xstest-unsafe", "harmful", "contrast_homonyms"),
        ("xstest-unsafe", "harmful", "contrast_homonyms")]
    assert items[0].id == "xstest-safe/1"

    rows = [{"instruction": f"q{i}", "context": "", "response": f"r{i}",
             "category": ["open_qa", "closed_qa", "brainstorming", "creative_writing"][i % 4]} for i in range(400)]
    dolly = tmp_path / "dolly"
    fx.write_jsonl(dolly / "train.jsonl", rows)
    suite = _local(EXAMPLES / "suite_dolly200.yaml", tmp_path, dolly, "train")
    items = suite.load_items()
    assert len(items) == 200 and all(i.category != "closed_qa" and i.reference for i in items)
    assert [i.id for i in items] == [i.id for i in _local(EXAMPLES / "suite_dolly200.yaml", tmp_path, dolly,
                                                           "train").load_items()]
    assert len({i.id for i in items}) == 200
