"""`safemerge train ...`: help everywhere, user errors as one line + exit 2, a real (tiny) run."""

from __future__ import annotations

import json

import pytest

from safemerge.cli import main

COMMANDS = (["train"], ["train", "sft"], ["train", "dpo"], ["train", "recipe"], ["train", "recipe", "mixture"],
            ["train", "recipe", "expert"], ["train", "recipe", "monolingual"], ["train", "recipe", "dpo-from"],
            ["train", "recipe", "all"])


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as ex:
        main(cmd + ["--help"])
    assert ex.value.code == 0 and "Usage" in capsys.readouterr().out


def _error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as ex:
        main(argv)
    err = capsys.readouterr().err
    assert ex.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_user_errors_are_one_line(tmp_path, train_files, tiny_models, capsys):
    base, data = str(tiny_models["base"]), str(train_files["sft"])
    assert "no config.json" in _error(["train", "sft", "-m", str(tmp_path), "-d", data, "-o", "x"], capsys)
    assert "unknown language code 'hi'" in _error(
        ["train", "sft", "-m", base, "-d", data, "-o", str(tmp_path / "o"), "--lang", "hi"], capsys)
    assert "missing column" in _error(["train", "dpo", "-m", base, "-d", data, "-o", str(tmp_path / "o")], capsys)
    assert "lr" in _error(["train", "sft", "-m", base, "-d", data, "-o", "x", "--lr", "-1"], capsys)
    assert "not a world directory" in _error(["train", "recipe", "mixture", "-w", str(tmp_path)], capsys)
    assert not (tmp_path / "o").exists()


def test_bad_config_file_is_one_line(tmp_path, train_files, tiny_models, capsys):
    argv = ["train", "sft", "-m", str(tiny_models["base"]), "-d", str(train_files["sft"]), "-o", str(tmp_path / "o")]
    assert "training config not found" in _error(argv + ["--config", str(tmp_path / "none.yaml")], capsys)
    (tmp_path / "bad.yaml").write_text("lr: [1\n")
    assert "not valid YAML" in _error(argv + ["--config", str(tmp_path / "bad.yaml")], capsys)
    (tmp_path / "list.yaml").write_text("- lr\n")
    assert "expected a mapping" in _error(argv + ["--config", str(tmp_path / "list.yaml")], capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_sft_run_with_config_file(tmp_path, train_files, tiny_models, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("lr: 0.001\nbatch_size: 4\nlora: {r: 2}\n")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as ex:
        main(["train", "sft", "-m", str(tiny_models["base"]), "-d", str(train_files["sft"]), "-o", str(out),
              "-c", str(cfg), "--max-steps", "2"])
    assert ex.value.code == 0
    stdout = capsys.readouterr().out
    meta = json.loads((out / "train_config.json").read_text())
    assert meta["config"]["lr"] == 0.001 and meta["config"]["max_steps"] == 2 and meta["config"]["lora"]["r"] == 2
    assert str(out) in stdout and "2 steps" in stdout
