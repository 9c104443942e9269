"""`safemerge merge` through the real CLI entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from safemerge.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else (0 if exc.value.code is None else 1)
    return code, out.out, out.err


def write(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_help_lists_options(capsys):
    code, out, _ = run_cli(["merge", "--help"], capsys)
    assert code == 0
    for opt in ("--dry-run", "--max-shard-size", "--max-memory", "--threads", "--seed", "--copy-tokenizer",
                "--overwrite"):
        assert opt in out


def test_dry_run_prints_plan_and_writes_nothing(tiny_models, tmp_path, capsys):
    cfg = write({"merge_method": "ties", "base_model": str(tiny_models["base"]),
                 "models": [{"model": str(tiny_models["a"]),
                             "parameters": {"weight": [{"filter": "mlp", "value": 0.9}, {"value": 0.1}],
                                            "density": 0.5}}]}, tmp_path / "c.yaml")
    code, out, _ = run_cli(["merge", str(cfg), str(tmp_path / "out"), "--dry-run"], capsys)
    assert code in (0, None)
    assert not (tmp_path / "out").exists()
    lines = out.splitlines()
    assert lines[0].startswith("# merge_method: ties")
    up = next(line for line in lines if line.startswith("model.layers.0.mlp.up_proj.weight"))
    assert "weight=0.9" in up and "density=0.5" in up
    q = next(line for line in lines if line.startswith("model.layers.1.self_attn.q_proj.weight"))
    assert "weight=0.1" in q
    assert "read" in lines[-1] and "write" in lines[-1] and "bytes" in lines[-1]


def test_merge_then_overwrite(tiny_models, tmp_path, capsys):
    cfg = write({"merge_method": "linear", "models": [{"model": str(tiny_models["a"]), "parameters": {"weight": 1}},
                                                     {"model": str(tiny_models["b"]), "parameters": {"weight": 1}}]},
                tmp_path / "c.yaml")
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["merge", str(cfg), str(out), "--threads", "2", "--max-shard-size", "100KB",
                               "--no-copy-tokenizer"], capsys)
    assert code in (0, None) and "merged model written" in stdout
    assert (out / "model.safetensors.index.json").is_file() and not (out / "tokenizer.json").exists()
    code, _, err = run_cli(["merge", str(cfg), str(out)], capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    code, _, _ = run_cli(["merge", str(cfg), str(out), "--overwrite"], capsys)
    assert code in (0, None) and (out / "tokenizer.json").is_file()
