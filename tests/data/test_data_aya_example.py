"""examples/data_aya.yaml on fixture copies of its datasets: afterwards every file that examples/study_aya.yaml
and examples/suite_aya.yaml reference exists, and each reads with the reader that consumes it (search objective,
evaluation suite, SFT / DPO training data)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

import prepare_fixtures as fx
from safemerge.data.prepare import prepare

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILE_KEYS = ("safety_data", "domain_data", "suite", "path")


def _references(node, key=None):
    """Every string under a file key of a parsed YAML document (study spec or suite)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _references(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _references(v, key)
    elif isinstance(node, str) and key in FILE_KEYS:
        yield node


def test_data_aya_builds_everything_the_aya_study_and_suite_read(tmp_path):
    from safemerge.evaluate.suites import EvalSuite
    from safemerge.search.spec import read_examples
    from safemerge.train.data import load_train_data

    for name in ("data_aya.yaml", "study_aya.yaml", "suite_aya.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    fx.all_datasets(tmp_path)
    res = prepare(tmp_path / "data_aya.yaml")
    assert res.out_dir == tmp_path / "data"

    study = yaml.safe_load((tmp_path / "study_aya.yaml").read_text())
    refs = list(_references(study))
    assert {"data/safety_refusals.jsonl", "data/general.jsonl", "suite_aya.yaml"} <= set(refs)
    for ref in refs:
        assert (tmp_path / ref).is_file(), ref
    suite_file = tmp_path / study["eval"]["suite"]
    suite = yaml.safe_load(suite_file.read_text())
    local = [s for s in suite["sets"] if "path" in s]
    assert [s["path"] for s in local] == ["data/dolly200.jsonl"]
    for s in local:
        assert (suite_file.parent / s["path"]).is_file(), s["path"]

    # the readers that consume them
    for stage in study["stages"]:
        for key in ("safety_data", "domain_data"):
            if key in stage:
                rows = read_examples(str(tmp_path / stage[key]), need_lang=True)
                assert {r["lang"] for r in rows} == set(fx.LANGS), key
    items = EvalSuite.model_validate({**suite, "sets": local, "base_dir": str(suite_file.parent)}).load_items()
    assert {i.lang for i in items} == set(fx.LANGS) and all(i.kind == "general" for i in items)
    assert all(i.reference for i in items if i.lang == "en")  # dolly-15k answers are the English references
    out = tmp_path / "data"
    for pct in ("0", "15", "100"):
        assert load_train_data(out / f"sft_mix{pct}.jsonl", "sft").languages == sorted(fx.LANGS)
        assert load_train_data(out / f"dpo_mix{pct}.jsonl", "dpo").languages == sorted(fx.LANGS)
    for lang in fx.LANGS:
        assert load_train_data(out / f"mono15_{lang}.jsonl", "sft").languages == [lang]
    local_suite = EvalSuite.from_yaml(out / "suite_local.yaml")
    assert {s.kind for s in local_suite.sets} == {"harmful", "benign", "general"}
    assert len(local_suite.load_items()) > 40
    card = (out / "datacard.md").read_text()
    for counted in ("empty_text:prompt", "missing_column:response", "bad_value:is_safe", "empty_text:ar",
                    "bad_value:prompt_harm_label", "other_language:sr 4", "no column for language(s) fr, es, ru, hi"):
        assert counted in card, counted  # the fixtures' bad rows are reported, not dropped silently
