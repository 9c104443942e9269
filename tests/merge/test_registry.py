"""The method registry ``METHODS`` is the only place a merge method's facts live (issue 14, item 1).

Adding a method is one pure function plus one ``MethodSpec`` entry: the engine, the plan, the search and the model
card read every fact (base policy, parameters, randomness, magnitude sorting, labels) from the entry.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

import safemerge
from safemerge.errors import ConfigError
from safemerge.merge.card import model_card
from safemerge.merge.config import load_config
from safemerge.merge.engine import task_cost
from safemerge.merge.methods import METHODS, MethodSpec, get_method, method_names
from safemerge.merge.plan import build_plan
from safemerge.merge.sources import DictSource

PACKAGE = Path(safemerge.__file__).parent
CONSUMERS = sorted(p for folder in ("merge", "search") for p in (PACKAGE / folder).glob("*.py")
                   if p.name != "methods.py")


def _hard_coded_method_facts(path: Path) -> list[str]:
    """Collections of two or more method names, and comparisons with a method name, in one source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Compare):
            items = [node.left, *node.comparators]
        else:
            continue
        names = [n.value for n in items if isinstance(n, ast.Constant) and n.value in METHODS]
        if len(names) >= (1 if isinstance(node, ast.Compare) else 2):
            found.append(f"{path.name}:{node.lineno}: {names}")
    return found


def test_no_method_facts_outside_the_registry():
    assert len(CONSUMERS) > 10
    problems = [p for path in CONSUMERS for p in _hard_coded_method_facts(path)]
    assert not problems, "method facts hard-coded outside METHODS:\n" + "\n".join(problems)


def test_the_scan_sees_a_hard_coded_method_set(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('SORTING = {"ties", "della"}\nif m == "slerp":\n    pass\nLABELS = {"ram": "RAM", "ties": "T"}\n')
    assert len(_hard_coded_method_facts(bad)) == 3


@pytest.mark.parametrize("name", list(METHODS))
def test_each_entry_matches_its_function(name):
    """The entry's parameters are exactly what the function takes; ``random``/``takes_ranks`` match its
    ``generator``/``ranked`` arguments; every entry has a label, a summary and a formula in the docstring."""
    spec = METHODS[name]
    assert spec.name == name and spec.label and spec.summary and inspect.getdoc(spec.fn)
    sig = inspect.signature(spec.fn).parameters
    kw = {n for n, p in sig.items() if p.kind is p.KEYWORD_ONLY}
    extra_ok = any(p.kind is p.VAR_KEYWORD for p in sig.values())
    wanted = {"lambda_" if p.name == "lambda" else p.name for p in spec.params}
    assert kw - {"generator", "ranked"} <= wanted, "function keywords the registry does not know"
    assert extra_ok or wanted <= kw, "registry parameters the function does not take"
    assert spec.random == ("generator" in kw) and spec.takes_ranks == ("ranked" in kw)
    assert spec.base_policy in ("required", "optional", "ignored")
    assert spec.needs_base == (spec.base_policy == "required")
    assert not (spec.base_policy == "ignored" and spec.task_vectors)


def test_one_lookup_with_a_one_line_error():
    assert get_method("ties") is METHODS["ties"] and method_names() == tuple(METHODS)
    with pytest.raises(ConfigError) as exc:
        get_method("dare-ties", where="stages[2].methods")
    msg = str(exc.value)
    assert msg.startswith("stages[2].methods: unknown merge method 'dare-ties'; choose one of ")
    assert "(did you mean 'dare_ties'?)" in msg and "\n" not in msg
    with pytest.raises(TypeError):  # entries are keyword-only: readable, and no field can slip into another's slot
        MethodSpec("x", "X", "x", None, METHODS["ties"].fn, "required")  # type: ignore[misc]


def test_what_the_study_reads():
    """The study's method facts (takes the common base, display label, what it sets) come from the registry."""
    from safemerge.study.report.tables import method_label
    from safemerge.study.spec import PAPER_A_METHODS, check_method, uses_base
    from safemerge.study.stages import merge_config

    assert [method_label(m) for m in PAPER_A_METHODS] == ["Linear", "SLERP", "TIES", "DARE-TIES"]
    assert [m for m in PAPER_A_METHODS if uses_base(m)] == ["ties", "dare_ties"]
    assert [m for m in PAPER_A_METHODS if get_method(m).needs_base] == ["slerp", "ties", "dare_ties"]
    # another registry method with a per-model weight runs in the study, configured from its entry
    assert check_method("della", "stages[0]") == "della"
    cfg = merge_config("della", {"a": 0.7, "b": 0.3}, "base", 0.5)
    assert cfg["base_model"] == "base" and cfg["models"][0]["parameters"] == {"weight": 0.7, "density": 0.5}
    with pytest.raises(ValueError, match="neither a per-model `weight` nor a shared `t`"):
        check_method("passthrough", "stages[0]")


def _plan(method: str, n: int = 2):
    g = torch.Generator().manual_seed(0)
    sds = {k: {"w": torch.randn(8, 8, generator=g)} for k in ["base"] + [f"m{i}" for i in range(n)]}
    models = [{"model": f"m{i}", "parameters": {"weight": 1.0}} for i in range(n)]
    cfg = load_config({"merge_method": method, "base_model": "base", "models": models})
    return build_plan(cfg, {k: DictSource(k, sd) for k, sd in sds.items()})


def test_engine_reads_sorting_and_defaults_from_the_entry():
    ties, ta = _plan("ties"), _plan("task_arithmetic")
    assert METHODS["ties"].sorts_magnitudes and not METHODS["task_arithmetic"].sorts_magnitudes
    task = ties.tasks[0]
    assert task_cost(task, ties.method) > task_cost(task, ta.method) == task_cost(task)
    # the plan holds every parameter of every model, defaults filled once: what the method is called with
    assert task.per_model == ({"weight": 1.0, "density": 1.0}, {"weight": 1.0, "density": 1.0})
    assert task.global_params == {"int8_mask": False, "normalize": True, "rescale": False, "lambda": 1.0,
                                  "tie_break": "mergekit"}


def test_model_card_names_the_method_from_its_entry():
    cfg = load_config({"merge_method": "ram", "base_model": "/m/base", "models": [{"model": "/m/a"}]})
    card = model_card(cfg, "merge_method: ram\n", "out", 3, 1000)
    assert "using RAM: the task vectors' changed entries" in card
    assert "- method: [RAM](https://arxiv.org/abs/2601.13572)" in card
