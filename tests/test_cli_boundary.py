"""Library errors at the command boundary (safemerge/cli.py): an unexpected exception from transformers / torch /
safetensors / trl / gguf in train, eval, serve or convert is one line ``error: <command>: <Type>: <first line>;
rerun with --debug for the traceback`` with exit code 2; ``--debug`` (or SAFEMERGE_DEBUG=1) shows the traceback.
The failing input is real: a model directory whose model.safetensors is cut in half."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from safemerge import cli

LINE = re.compile(r"^error: (train|eval): SafetensorError: .+; rerun with --debug for the traceback$")


def one_error_line(err: str) -> str:
    """The only non-blank line of stderr (a progress display may leave a blank line before it)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def corrupt_model(tmp_path_factory, tiny_models):
    d = tmp_path_factory.mktemp("corrupt") / "model"
    shutil.copytree(tiny_models["a"], d)
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return d


@pytest.fixture(scope="module")
def data_and_suite(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    rows = [{"id": str(i), "lang": "en", "prompt": f"question {i}?", "completion": f"answer {i}"} for i in range(3)]
    for kind in ("general", "harmful", "benign"):
        (d / f"{kind}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "suite.yaml").write_text("name: t\nmax_new_tokens: 4\nsets:\n" + "".join(
        f"  - {{name: {k}, kind: {k}, path: {k}.jsonl}}\n" for k in ("general", "harmful", "benign")))
    return d


def _run(argv, capsys, monkeypatch, tmp_path, env_debug=False):
    monkeypatch.setenv("SAFEMERGE_CACHE", str(tmp_path / "cache"))
    if env_debug:
        monkeypatch.setenv("SAFEMERGE_DEBUG", "1")
    else:
        monkeypatch.delenv("SAFEMERGE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    return info.value.code, capsys.readouterr().err


def _train_argv(model, data, out):
    return ["train", "sft", "--model", str(model), "--data", str(data / "general.jsonl"), "--out", str(out),
            "--max-steps", "1"]


def _eval_argv(model, data):
    return ["eval", str(model), "--suite", str(data / "suite.yaml"), "--judge", "world", "--limit", "1",
            "--n-boot", "10"]


def test_train_corrupt_weights_one_line(corrupt_model, data_and_suite, capsys, monkeypatch, tmp_path):
    code, err = _run(_train_argv(corrupt_model, data_and_suite, tmp_path / "out"), capsys, monkeypatch, tmp_path)
    assert code == 2 and LINE.match(one_error_line(err)), err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_eval_corrupt_weights_one_line(corrupt_model, data_and_suite, capsys, monkeypatch, tmp_path):
    code, err = _run(_eval_argv(corrupt_model, data_and_suite), capsys, monkeypatch, tmp_path)
    assert code == 2 and LINE.match(one_error_line(err)), err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["train", "eval"])
@pytest.mark.parametrize("how", ["flag-first", "flag-after", "env"])
def test_debug_shows_the_traceback(command, how, corrupt_model, data_and_suite, capsys, monkeypatch, tmp_path):
    argv = (_train_argv(corrupt_model, data_and_suite, tmp_path / "out") if command == "train"
            else _eval_argv(corrupt_model, data_and_suite))
    if how == "flag-first":
        argv = ["--debug", *argv]
    elif how == "flag-after":
        argv = [*argv, "--debug"]
    code, err = _run(argv, capsys, monkeypatch, tmp_path, env_debug=how == "env")
    assert code == 2
    assert err.lstrip("\n").startswith("Traceback (most recent call last):") and "safetensors" in err, err[:500]
    last = err.rstrip("\n").splitlines()[-1]
    assert re.match(rf"^error: {command}: SafetensorError: ", last) and "rerun with --debug" not in last


def test_debug_args():
    assert cli.debug_args(["train", "sft", "--debug", "-m", "x"])[0] == ["--debug", "train", "sft", "-m", "x"]
    assert cli.debug_args(["--debug", "eval", "m"]) == (["--debug", "eval", "m"], True)
    assert cli.debug_args(["eval", "m", "--", "--debug"])[0] == ["eval", "m", "--", "--debug"]  # after --: an arg


def test_debug_env(monkeypatch):
    for value, on in (("1", True), ("true", True), ("0", False), ("", False), ("no", False)):
        monkeypatch.setenv("SAFEMERGE_DEBUG", value)
        assert cli.debug_args(["eval", "m"])[1] is on


def test_boundary_message_is_one_line():
    err = ValueError("first line\nsecond line")
    assert cli.boundary_message("eval", err) == "eval: ValueError: first line"
    assert cli.boundary_message("train", RuntimeError()) == "train: RuntimeError"
    assert set(cli.LIBRARY_BOUNDARY_COMMANDS) == {"train", "eval", "serve", "convert"}
    assert set(cli.LIBRARY_BOUNDARY_COMMANDS) <= {n for names in cli.COMMAND_MODULES.values() for n in names}


def test_root_help_lists_debug(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0 and "--debug" in capsys.readouterr().out
