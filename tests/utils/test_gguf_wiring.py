"""A .gguf file goes everywhere a model path goes: train sft/dpo --model, eval, serve, search/study/synth specs; and
the trainer's refusal to fine-tune a quantized model is one line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from safemerge.cli import main
from safemerge.errors import InputError
from tests.netutil import free_port


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _is_converted(path, cache) -> bool:
    p = Path(path)
    return p.is_relative_to(cache) and (p / "config.json").is_file() and (p / "model.safetensors").is_file()


def _sft_rows(n: int = 8) -> list[dict]:
    return [{"lang": "en", "prompt": f"what is {i} plus 1", "completion": f"it is {i + 1}"} for i in range(n)]


def test_search_spec_resolves_gguf_pool_and_base(tiny_gguf, private_cache, tmp_path):
    from safemerge.search.spec import check_pool_architectures, load_spec

    (tmp_path / "s.jsonl").write_text("")
    spec = load_spec({"pool": [{"model": str(tiny_gguf["Q8_0"])}, {"name": "plain", "model": str(tiny_gguf["hf"])}],
                      "base_model": str(tiny_gguf["Q4_1"]), "method": "ties",
                      "objective": {"safety": str(tmp_path / "s.jsonl"), "domain": str(tmp_path / "s.jsonl")}})
    assert spec.names() == ["tiny-Q8_0.gguf", "plain"]  # the default name is the file's, not the cache dir's
    assert _is_converted(spec.pool[0].model, private_cache) and spec.pool[1].model == str(tiny_gguf["hf"])
    assert _is_converted(spec.base_model, private_cache)
    assert check_pool_architectures(spec) == 2
    with pytest.raises(InputError, match="safemerge convert"):
        load_spec({"pool": [{"model": str(tiny_gguf["quantized_dir"])}, {"model": str(tiny_gguf["hf"])}],
                   "method": "linear", "objective": {"safety": "s.jsonl", "domain": "s.jsonl"}})


def test_study_spec_resolves_gguf_base_and_models(tiny_gguf, private_cache, tmp_path):
    from safemerge.study.spec import load_spec

    (tmp_path / "s.yaml").write_text("name: s\nsets: []\n")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"world": None, "base": str(tiny_gguf["Q8_0"]),
                                         "models": {"g": str(tiny_gguf["F16"])}, "eval": {"suite": "s.yaml"}}))
    spec = load_spec(spec_file)
    assert _is_converted(spec.base, private_cache) and _is_converted(spec.models["g"], private_cache)
    assert isinstance(spec.base, Path)
    with pytest.raises(InputError, match="GGUF file not found"):
        spec_file.write_text(yaml.safe_dump({"world": None, "base": str(tmp_path / "nope.gguf"),
                                             "eval": {"suite": "s.yaml"}}))
        load_spec(spec_file)


def test_synth_spec_resolves_gguf_and_keeps_its_label(tiny_gguf, private_cache):
    from safemerge.data.synth import load_synth_spec

    spec = load_synth_spec({"pool": [{"model": str(tiny_gguf["Q8_0"])}, {"model": str(tiny_gguf["hf"])}],
                            "languages": ["en"], "safety": {"generator": {"model": str(tiny_gguf["Q8_0"])}, "k": 2,
                                                             "categories": ["theft"]}})
    assert _is_converted(spec.pool[0].model, private_cache) and spec.pool[0].label() == "tiny-Q8_0.gguf"
    assert spec.pool[1].label() == "hf"


def test_train_sft_and_dpo_from_gguf(tiny_gguf, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _sft_rows()))
    out = tmp_path / "sft"
    code, stdout, err = _run(["train", "sft", "--model", str(tiny_gguf["Q8_0"]), "--data", str(data), "--out",
                              str(out), "--max-steps", "1", "--threads", "1"], capsys)
    assert code in (0, None), err
    meta = json.loads((out / "train_config.json").read_text())
    assert meta["steps"] == 1 and "gguf" in meta["model"]  # trained from the converted (cached) dir
    pref = tmp_path / "p.jsonl"
    pref.write_text("".join(json.dumps({"prompt": r["prompt"], "chosen": r["completion"], "rejected": "no"}) + "\n"
                            for r in _sft_rows()))
    code, _, err = _run(["train", "dpo", "--model", str(tiny_gguf["Q4_1"]), "--data", str(pref), "--out",
                         str(tmp_path / "dpo"), "--max-steps", "1", "--threads", "1"], capsys)
    assert code in (0, None), err


def test_trainer_refusal_is_one_line(tiny_gguf, tmp_path):
    """Through the Python API (no CLI pre-check), TRL/transformers' refusal to fine-tune a model marked quantized
    becomes one InputError line naming `safemerge convert` (it was a 20-line traceback)."""
    from safemerge.train import train_sft
    from safemerge.train.config import SFTConfig

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _sft_rows()))
    with pytest.raises(InputError) as exc:
        train_sft(tiny_gguf["quantized_dir"], data, tmp_path / "out", SFTConfig(max_steps=1))
    msg = str(exc.value)
    assert "\n" not in msg and "refuses to fine-tune" in msg and "purely quantized" in msg
    assert "safemerge convert" in msg
    assert not (tmp_path / "out").exists()


def test_eval_gguf(tiny_gguf, tmp_path, capsys):
    rows = [{"id": f"g{i}", "lang": "en", "kind": "general", "category": "c", "prompt": f"say {i}",
             "completion": f"{i}"} for i in range(2)]
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s.yaml").write_text("name: t\nmax_new_tokens: 4\nsets:\n  - {name: g, kind: general, path: g.jsonl}\n")
    code, stdout, err = _run(["eval", str(tiny_gguf["Q8_0"]), "--suite", str(tmp_path / "s.yaml"), "--reference",
                              str(tiny_gguf["F16"]), "--n-boot", "10", "--out", str(tmp_path / "r")], capsys)
    assert code in (0, None), err
    assert (tmp_path / "r" / "results.json").is_file() and "acc_gen" in stdout


@pytest.mark.slow
def test_serve_gguf(tiny_gguf):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "safemerge.cli", "serve", str(tiny_gguf["Q8_0"]), "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as resp:
                    models = json.loads(resp.read())
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.time() < deadline, "server did not start"
                time.sleep(0.5)
        assert [m["id"] for m in models["data"]] == ["tiny-Q8_0"]  # the file's name, not the cache dir's
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
        assert answer["choices"][0]["message"]["role"] == "assistant"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
