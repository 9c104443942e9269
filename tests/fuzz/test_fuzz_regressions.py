"""Regression tests for the bugs the fuzzer found (bench/RESULTS.md, "Fuzzing"): each input below used to escape
as a traceback (an exception other than SafemergeError) or hang; now it is a one-line error naming the file/key."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fuzz_targets as F
from safemerge.errors import ConfigError, InputError, SafemergeError

NOT_UTF8 = b"name: \xff\xfe bad\n"
TOO_DEEP = b"key: " + b"[" * 5000 + b"\n"
LONG = "/tmp/" + "x" * 300  # one path component over NAME_MAX: pathlib's is_dir()/is_file() raise ENAMETOOLONG


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ---- YAML files: not UTF-8 (UnicodeDecodeError), nested too deeply (RecursionError) ----------------------------

@pytest.mark.parametrize("data, fragment", [(NOT_UTF8, "not UTF-8"), (TOO_DEEP, "nested too deeply")])
def test_merge_config_bad_text(tmp_path, data, fragment):
    from safemerge.merge.config import load_config

    (p := tmp_path / "recipe.yaml").write_bytes(data)
    with pytest.raises(SafemergeError) as info:
        load_config(p)
    assert fragment in one_line(info) and str(p) in str(info.value)


@pytest.mark.parametrize("data, fragment", [(NOT_UTF8, "not UTF-8"), (TOO_DEEP, "nested too deeply")])
def test_spec_files_bad_text(tmp_path, data, fragment):
    """study / search / synth specs and training configs share read_yaml_mapping; suites their own reader."""
    from safemerge.evaluate.suites import EvalSuite
    from safemerge.search.spec import load_spec as load_search
    from safemerge.study.spec import load_spec as load_study

    (p := tmp_path / "spec.yaml").write_bytes(data)
    for load in (load_study, load_search, EvalSuite.from_yaml):
        with pytest.raises(SafemergeError) as info:
            load(p)
        assert fragment in one_line(info) and "spec.yaml" in str(info.value)


def test_yaml_bom_is_accepted(tmp_path):
    from safemerge.utils.config import read_yaml_mapping

    (p := tmp_path / "spec.yaml").write_bytes(b"\xef\xbb\xbfname: x\n")
    assert read_yaml_mapping(p, "spec", "name") == {"name": "x"}


# ---- merge --max-shard-size / --max-memory ---------------------------------------------------------------------

@pytest.mark.parametrize("value", [".", "1.2.3GB", "1e999", "9" * 400 + "GB"])
def test_parse_size_odd_numbers(value):
    from safemerge.merge.writer import parse_size

    with pytest.raises(ConfigError, match="cannot parse size") as info:
        parse_size(value, "--max-shard-size")
    assert one_line(info).startswith("--max-shard-size")


# ---- study spec: an unhashable stage kind ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", [[1, 2], {"a": 1}])
def test_study_stage_kind_not_a_string(tmp_path, kind):
    from safemerge.study.spec import load_spec

    (p := tmp_path / "study.yaml").write_text(json.dumps({"stages": [{"kind": kind}]}))
    with pytest.raises(ConfigError, match=r"stages\[0\]\.kind: unknown stage") as info:
        load_spec(p)
    one_line(info)


# ---- synth spec: instruction templates (KeyError / ValueError in str.format) and a hang on huge k ---------------

def _synth(tmp_path, **safety):
    from safemerge.data.synth import load_synth_spec

    spec = {"pool": [{"model": "m"}], "safety": {"generator": {"model": "g"}, **safety}}
    (p := tmp_path / "synth.yaml").write_text(json.dumps(spec))
    return load_synth_spec(p)


@pytest.mark.parametrize("instruction, fragment", [
    ("Ask about {domain}", "placeholder {domain} is not allowed"),
    ("Ask in {language", "not a valid template"),
    ("{language:>999999999}", "placeholder {language:>999999999} is not allowed"),
    ("{0}", "placeholder {0} is not allowed"),
])
def test_synth_instruction_placeholders(tmp_path, instruction, fragment):
    with pytest.raises(ConfigError, match="safety.instruction") as info:
        _synth(tmp_path, instruction=instruction)
    assert fragment in one_line(info)


def test_synth_instruction_valid_and_literal_braces(tmp_path):
    from safemerge.data.synth import safety_requests

    spec = _synth(tmp_path, instruction="In {language}: {{literal}} {category}{examples}", k=2, oversample=1.0)
    assert safety_requests(spec)[0]["request"].startswith("In English: {literal} ")


@pytest.mark.parametrize("k, oversample", [(10**12, 2.0), (1000, 1e300), (1000, float("inf"))])
def test_synth_question_count_is_bounded(tmp_path, k, oversample):
    """safety_requests built ceil(k * oversample) prompts: k = 10**12 hung `synth --check`."""
    with pytest.raises(ConfigError, match="safety") as info:
        _synth(tmp_path, k=k, oversample=oversample)
    one_line(info)


# ---- checkpoints: shard index values, deeply nested index JSON ------------------------------------------------

def _index_error(tmp_path, source, index_text: str, match: str, shard_name: str | None = None) -> None:
    """A copy of ``source`` with ``index_text`` as its model.safetensors.index.json (and its one shard renamed to
    ``shard_name``) must be refused by CheckpointSource with a one-line error matching ``match``."""
    import shutil

    from safemerge.merge.io import CheckpointSource

    d = tmp_path / "m"
    shutil.copytree(source, d)
    if shard_name is not None:
        (d / "model.safetensors").rename(d / shard_name)
    (d / "model.safetensors.index.json").write_text(index_text)
    with pytest.raises(InputError, match=match) as info:
        CheckpointSource(d)
    one_line(info)


def _tensor_names(model) -> list[str]:
    from safemerge.merge.io import CheckpointSource

    return list(CheckpointSource(model).infos())


@pytest.mark.parametrize("value", [None, 1.5, ["a"], {"b": 1}, ""])
def test_shard_index_value_not_a_file_name(tmp_path, tiny_models, value):
    shard = "model-00001-of-00001.safetensors"
    wm = {n: shard for n in _tensor_names(tiny_models["a"])}
    wm[sorted(wm)[0]] = value
    _index_error(tmp_path, tiny_models["a"], json.dumps({"weight_map": wm}), "not a shard file name", shard)


def test_shard_index_file_name_too_long(tmp_path, tiny_models):
    """A weight_map naming a shard file longer than NAME_MAX (found by bench/fuzz.py, safetensors)."""
    wm = {n: "x" * 300 + ".safetensors" for n in _tensor_names(tiny_models["a"])}
    _index_error(tmp_path, tiny_models["a"], json.dumps({"weight_map": wm}),
                 "shard listed in model.safetensors.index.json is missing")


def test_shard_index_nested_too_deeply(tmp_path, tiny_models):
    _index_error(tmp_path, tiny_models["a"], "[" * 100000, "shard index is not valid JSON")


# ---- GGUF: general.alignment of another type / zero ------------------------------------------------------------

@pytest.mark.parametrize("vtype, payload", [
    (6, struct.pack("<f", float("inf"))),          # float32 inf: int() raised OverflowError
    (9, struct.pack("<IQ", 4, 1) + struct.pack("<I", 32)),  # an array: int() raised TypeError
    (4, struct.pack("<I", 0)),                     # 0: ZeroDivisionError
    (4, struct.pack("<I", 48)),                    # not a power of two (llama.cpp refuses it too)
    (6, struct.pack("<f", 32.0)),                  # a float, even a whole one
])
def test_gguf_alignment_of_odd_type(workspace, vtype, payload):
    from safemerge.utils.gguf import read_header

    ctx = F._gguf_setup(workspace)
    kv = F._gguf_string("general.alignment") + struct.pack("<I", vtype) + payload
    (p := workspace.scratch("gguf") / "odd.gguf").write_bytes(F.gguf_with_kvs(ctx, [kv]))
    with pytest.raises(InputError, match="general.alignment is .* not a power of two") as info:
        read_header(p)
    one_line(info)


def test_gguf_alignment_valid_kv_still_reads(workspace):
    from safemerge.utils.gguf import read_header

    ctx = F._gguf_setup(workspace)
    kv = F._gguf_string("general.alignment") + struct.pack("<II", 4, 32)
    (p := workspace.scratch("gguf") / "ok.gguf").write_bytes(F.gguf_with_kvs(ctx, [kv]))
    assert read_header(p).metadata["general.alignment"] == 32


# ---- JSONL data files --------------------------------------------------------------------------------------------

def _readers(path):
    from safemerge.data.synth import _read_prompts
    from safemerge.evaluate.suites import EvalSuite
    from safemerge.search.spec import read_examples
    from safemerge.train.data import load_train_data

    return {
        "train": lambda: load_train_data(path, "sft"),
        "objective": lambda: read_examples(str(path)),
        "suite": lambda: EvalSuite(name="s", sets=[{"name": "s", "kind": "general", "path": str(path)}]).load_items(),
        "synth": lambda: _read_prompts(str(path)),
    }


@pytest.mark.parametrize("data, fragment", [
    (b'{"prompt": "a", "completion": "b", "lang": "en"}\n\xff\n', "not UTF-8"),   # UnicodeDecodeError
    (b'{"prompt": "a", "completion": "b", "lang": "en"}\n' + b"[" * 100000 + b"\n", "JSON"),  # RecursionError
])
def test_jsonl_readers_bad_bytes(tmp_path, data, fragment):
    (p := tmp_path / "rows.jsonl").write_bytes(data)
    for name, read in _readers(p).items():
        with pytest.raises(InputError) as info:
            read()
        assert fragment in one_line(info) and "rows.jsonl" in str(info.value), name


@pytest.mark.parametrize("line", [b"[1, 2]", b"3", b'"text"', b"null"])
def test_suite_row_not_an_object(tmp_path, line):
    (p := tmp_path / "rows.jsonl").write_bytes(b'{"prompt": "a", "lang": "en"}\n' + line + b"\n")
    with pytest.raises(InputError, match=r"rows\.jsonl:2: expected a JSON object") as info:
        _readers(p)["suite"]()
    one_line(info)


@pytest.mark.parametrize("choices", [1.5, 3, "ab", {"a": 1}, []])
def test_suite_choices_not_a_list(tmp_path, choices):
    row = {"prompt": "q", "lang": "en", "choices": choices, "answer": 0}
    (p := tmp_path / "rows.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(InputError, match="must be a non-empty list of answers") as info:
        _readers(p)["suite"]()
    one_line(info)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12), min_size=1, max_size=4))
def test_jsonl_valid_records_with_any_text_are_read(tmp_path_factory, texts):
    """str.splitlines() split lines at U+2028 / U+0085 / ..., which a JSON string may hold raw (ensure_ascii=False):
    a valid file was refused as 'not valid JSON'. Now every reader splits at newlines only."""
    d = tmp_path_factory.mktemp("rows")
    rows = [{"prompt": t + "\u2028\u0085\x1c?", "completion": t + "!", "lang": "en", "id": str(i)}
            for i, t in enumerate(texts)]
    (p := d / "rows.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                       encoding="utf-8")
    readers = _readers(p)
    assert [r["prompt"] for r in readers["objective"]()] == [r["prompt"] for r in rows]
    assert [r["prompt"] for r in readers["synth"]()] == [r["prompt"] for r in rows]
    assert [it.prompt for it in readers["suite"]()] == [r["prompt"] for r in rows]
    assert len(readers["train"]().rows) == len(rows)


def test_jsonl_bom_is_accepted(tmp_path):
    (p := tmp_path / "rows.jsonl").write_bytes(b'\xef\xbb\xbf{"prompt": "a", "completion": "b", "lang": "en"}\n')
    for name, read in _readers(p).items():
        read()


# ---- a path too long for the file system (OSError ENAMETOOLONG from pathlib's predicates) ----------------------

def test_long_paths_are_one_line_errors(tmp_path, tiny_models):
    from safemerge.evaluate.suites import EvalSuite, resolve_suite
    from safemerge.merge.engine import open_plan
    from safemerge.search.runner import prepare
    from safemerge.search.spec import load_spec as load_search
    from safemerge.study.spec import load_spec as load_study
    from safemerge.study.spec import preflight
    from safemerge.train.data import load_train_data

    recipe = {"merge_method": "linear", "models": [{"model": str(tiny_models["a"]), "parameters": {"weight": 1.0}},
                                                   {"model": LONG, "parameters": {"weight": 1.0}}]}
    (merge := tmp_path / "merge.yaml").write_text(json.dumps(recipe))
    (study := tmp_path / "study.yaml").write_text(json.dumps({"world": None, "base": LONG,
                                                              "eval": {"suite": str(tmp_path / "suite.yaml")}}))
    (search := tmp_path / "search.yaml").write_text(json.dumps(
        {"pool": [{"model": LONG}, {"model": LONG + "y"}], "method": "linear", "objective": {"safety": [LONG]}}))
    calls = [lambda: open_plan(merge), lambda: preflight(load_study(study)), lambda: prepare(load_search(search)),
             lambda: EvalSuite(name="s", sets=[{"name": "s", "kind": "general", "path": LONG}]).load_items(),
             lambda: resolve_suite(LONG), lambda: load_train_data(LONG + ".jsonl", "sft"),
             lambda: open_plan(LONG + ".yaml")]
    for i, call in enumerate(calls):
        with pytest.raises(SafemergeError) as info:
            call()
        assert LONG in one_line(info), i


def test_nul_byte_in_a_model_path(tmp_path):
    """A NUL in a path made open() raise ValueError in is_gguf_path (found by bench/fuzz.py, merge_yaml)."""
    from safemerge.merge.io import open_source
    from safemerge.utils.gguf import is_gguf_path, resolve_model

    assert is_gguf_path("a\0b") is False and resolve_model("a\0b") == "a\0b"
    with pytest.raises(InputError, match="model directory not found") as info:
        open_source("\0")
    one_line(info)


def test_cli_reports_path_oserrors_in_one_line(tiny_models, capsys):
    """An OSError naming a path that no check caught (here pathlib's is_file() on a too-long --reference) is one
    line at the CLI, for every command."""
    from safemerge.cli import main

    with pytest.raises(SystemExit) as info:
        main(["eval", str(tiny_models["a"]), "--reference", LONG])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {LONG}: File name too long; check the path")
