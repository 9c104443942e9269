from __future__ import annotations

import json
import subprocess
import sys

import pytest

from safemerge.cli import main

pytestmark = pytest.mark.slow


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_eval_cli_writes_outputs(tiny_models, eval_suite, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SAFEMERGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    code, stdout, err = _run(["eval", str(tiny_models["a"]), "--suite", str(eval_suite), "--reference",
                              str(tiny_models["b"]), "--out", str(out), "--langs", "en,fr", "--limit", "2",
                              "--n-boot", "50"], capsys)
    assert code == 0, err
    assert "harm_rate" in stdout and "win_rate" in stdout and "all [95% CI]" in stdout
    res = json.loads((out / "results.json").read_text())
    assert {r["lang"] for r in res["records"]} == {"en", "fr"} and len(res["records"]) == 12
    assert all("answer_text" in r for r in res["records"])
    assert (out / "summary.md").is_file() and (out / "summary.csv").is_file()
    # the saved results can be the reference of the next run
    code, _, err = _run(["eval", str(tiny_models["b"]), "--suite", str(eval_suite), "--reference", str(out),
                         "--langs", "en,fr", "--limit", "2", "--n-boot", "50"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("args, msg", [
    (["--judge", "gpt5"], "unknown judge 'gpt5'"),
    (["--judge", "openai", "--judge-url", "http://127.0.0.1:9/v1"], "unreachable"),
    (["--judge", "llamaguard"], "--judge-model"),
    (["--suite", "nope.yaml"], "nope.yaml: suite file not found"),
    (["--reference", "/nonexistent"], "--reference is neither"),
])
def test_eval_cli_bad_input(tiny_models, eval_suite, capsys, args, msg):
    code, _, err = _run(["eval", str(tiny_models["a"]), "--suite", str(eval_suite), *args], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], err


def test_eval_cli_missing_columns(tiny_models, tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text('{"question": "hi", "lang": "en"}\n')
    (tmp_path / "s.yaml").write_text("name: x\nsets:\n  - {name: d, kind: general, path: d.jsonl}\n")
    code, _, err = _run(["eval", str(tiny_models["a"]), "--suite", str(tmp_path / "s.yaml")], capsys)
    assert code == 2 and "column 'prompt'" in err and len(err.strip().splitlines()) == 1


def test_help():
    for cmd in (["eval", "--help"], ["serve", "--help"]):
        r = subprocess.run([sys.executable, "-m", "safemerge.cli", *cmd], capture_output=True, text=True)
        assert r.returncode == 0 and "--" in r.stdout
    r = subprocess.run([sys.executable, "-m", "safemerge.cli", "serve", "/nonexistent"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ")
