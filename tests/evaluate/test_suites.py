from __future__ import annotations

import json

import pytest

from safemerge.errors import ConfigError, InputError
from safemerge.evaluate.suites import EvalSuite


@pytest.mark.slow
def test_hf_dataset_with_column_mapping(tmp_path):
    """A Dolly-style dataset (instruction/response/language columns) loaded through `datasets`."""
    ds = tmp_path / "dolly"
    ds.mkdir()
    rows = [{"instruction": f"q{i}", "response": f"r{i}", "language": ["en", "fr"][i % 2], "uid": i} for i in range(6)]
    (ds / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s.yaml").write_text(
        "name: dolly\nmax_new_tokens: 16\nsets:\n"
        f"  - {{name: dolly, kind: general, hf_dataset: {ds}, hf_split: test, limit: 2,\n"
        "     columns: {prompt: instruction, reference: response, lang: language, id: uid}}\n")
    suite = EvalSuite.from_yaml(tmp_path / "s.yaml")
    items = suite.load_items()
    assert [(i.id, i.lang, i.prompt, i.reference) for i in items] == [
        ("dolly/0", "en", "q0", "r0"), ("dolly/1", "fr", "q1", "r1"), ("dolly/2", "en", "q2", "r2"),
        ("dolly/3", "fr", "q3", "r3")]
    assert [i.lang for i in suite.load_items(langs=["fr"], limit=1)] == ["fr"]
    (tmp_path / "s3.yaml").write_text("name: x\nsets: [{name: d, kind: general, hf_dataset: /no/such/ds}]\n")
    with pytest.raises(InputError, match="cannot load"):
        EvalSuite.from_yaml(tmp_path / "s3.yaml").load_items()


def test_constant_language_and_validation(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "choices": ["a", "b"], "answer": 5}\n')
    (tmp_path / "s.yaml").write_text("name: x\nsets:\n  - {name: d, kind: general, path: d.jsonl, lang: hi}\n")
    with pytest.raises(InputError, match="answer 5 is not a valid index"):
        EvalSuite.from_yaml(tmp_path / "s.yaml").load_items()
    (tmp_path / "s2.yaml").write_text("name: x\nsets:\n  - {name: d, kind: general, path: d.jsonl, "
                                      "hf_dataset: x}\n")
    with pytest.raises(ConfigError, match="exactly one of path or hf_dataset"):
        EvalSuite.from_yaml(tmp_path / "s2.yaml")
    (tmp_path / "s4.yaml").write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        EvalSuite.from_yaml(tmp_path / "s4.yaml")
