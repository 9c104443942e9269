"""A suite YAML is checked when it is loaded (EvalSuite.from_yaml, hence `safemerge eval --suite`, `study --check`):
every problem that load_items would raise later, after models were loaded and answers generated, is one line at
load time. Hub sets are checked for structure only (nothing is downloaded)."""

from __future__ import annotations

import json

import pytest
import yaml

from safemerge.errors import InputError
from safemerge.evaluate.suites import EvalSuite

ROWS = [{"id": f"p{i}", "prompt": f"How do I do thing {i}?", "lang": ["en", "fr"][i % 2], "cat": ["x", "y"][i % 2],
         "choices": ["a", "b"], "answer": 0} for i in range(6)]


def _write(tmp_path, sets, rows=ROWS, name="d.jsonl"):
    (tmp_path / name).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"name": "s", "sets": sets}))
    return tmp_path / "s.yaml"


BASE = {"name": "d", "kind": "general", "path": "d.jsonl"}
PROBLEMS = {
    "missing file": ({"path": "nope.jsonl"}, ROWS, "nope.jsonl: eval set 'd' not found"),
    "prompt column": ({"columns": {"prompt": "question"}}, ROWS, "column 'question' (prompt) missing"),
    "no language": ({"columns": {"lang": "language"}}, ROWS, "no language column 'language'"),
    "where column": ({"where": {"category": "x"}}, ROWS, "column 'category' of where: is not in the data"),
    "where matches nothing": ({"where": {"cat": "z"}}, ROWS, "none of its 6 rows pass where:/sample:"),
    "empty file": ({}, [], "has no rows"),
    "bad JSON": ({}, ROWS[:2] + ["{oops"], ":3: not valid JSON"),
    "not an object": ({}, ["[1, 2]"], "expected a JSON object"),
    "answer out of range": ({}, [{**ROWS[0], "answer": 7}], "answer 7 is not a valid index"),
    "empty prompt": ({}, [{**ROWS[0], "prompt": " "}], "row 1 has an empty or non-text 'prompt'"),
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_each_problem_is_one_line_at_load_time(name, tmp_path):
    change, rows, fragment = PROBLEMS[name]
    p = _write(tmp_path, [{**BASE, **change}], rows)
    with pytest.raises(InputError) as err:
        EvalSuite.from_yaml(p)
    msg = str(err.value)
    assert "\n" not in msg and fragment in msg, msg


def test_valid_suite_loads_and_duplicate_ids_across_sets_are_caught(tmp_path):
    p = _write(tmp_path, [BASE, {**BASE, "name": "e", "where": {"cat": "x"}, "sample": 2, "seed": 1}])
    suite = EvalSuite.from_yaml(p)
    assert len(suite.load_items()) == 6 + 2  # the check changes nothing
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"name": "s", "sets": [
        BASE, {**BASE, "name": "e", "path": "e.jsonl"}]}))
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    EvalSuite.from_yaml(tmp_path / "s.yaml")  # same ids in two sets: prefixed by the set name, distinct
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"name": "s", "sets": [BASE, BASE]}))
    with pytest.raises(InputError, match="duplicate prompt id 'd/p0'"):
        EvalSuite.from_yaml(tmp_path / "s.yaml")


def test_hub_sets_are_not_downloaded_at_load_time(tmp_path):
    p = _write(tmp_path, [BASE, {"name": "hub", "kind": "harmful", "hf_dataset": "no-such-org/no-such-set",
                                 "lang": "en", "where": {"anything": 1}}])
    suite = EvalSuite.from_yaml(p)  # offline, a dataset that does not exist: still loads (structure only)
    with pytest.raises(InputError, match="cannot load"):
        suite.load_items()


def test_eval_cli_stops_on_a_bad_suite_before_generating(tmp_path, tiny_models, capsys, monkeypatch):
    from safemerge.cli import main

    monkeypatch.setenv("SAFEMERGE_CACHE", str(tmp_path / "cache"))
    p = _write(tmp_path, [{**BASE, "where": {"cat": "z"}}])
    with pytest.raises(SystemExit) as done:
        main(["eval", str(tiny_models["a"]), "--suite", str(p)])
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and "where:/sample:" in err[0]
    assert not (tmp_path / "cache" / "eval").exists()  # no answer was generated (nor cached)
