"""Merge recipes whose models are .gguf files: tensors dequantized one at a time while the merge streams."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from gguf_helpers import smollm2_or_skip, write_tiny_gguf
from safetensors.torch import load_file

from safemerge.cli import main
from safemerge.merge.engine import merge
from safemerge.utils.gguf import convert


def _lin(a, b, wa=1.0, wb=0.0, **extra) -> dict:
    return {"merge_method": "linear", "models": [{"model": str(a), "parameters": {"weight": wa}},
                                                 {"model": str(b), "parameters": {"weight": wb}}], **extra}


def _dirs(root):
    return {p.relative_to(root) for p in root.rglob("*") if p.is_dir()}


@pytest.fixture(scope="module")
def gguf_and_converted(tiny_gguf, tmp_path_factory):
    """A GGUF of its own (Q5_0: no other test caches this content) and its float32 conversion."""
    root = tmp_path_factory.mktemp("merge_gguf")
    g = write_tiny_gguf(tiny_gguf["hf"], root / "tiny-q5.gguf", "Q5_0")
    return g, convert(g, root / "converted")


def test_linear_1_0_gguf_equals_converted_bit_for_bit(gguf_and_converted, private_cache, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    g, conv = gguf_and_converted
    before = _dirs(private_cache)
    out = merge(_lin(g, conv), tmp_path / "merged")
    a, b = load_file(out / "model.safetensors"), load_file(conv / "model.safetensors")
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == torch.float32 and torch.equal(a[k].view(torch.int32), b[k].view(torch.int32)), k
    # streamed: the merge wrote no converted copy of the GGUF (only its small config/tokenizer files dir)
    new = _dirs(private_cache) - before
    leaves = {p for p in new if not any(q != p and q.is_relative_to(p) for q in new)}
    assert all(p.name == "files" for p in leaves), new
    assert not any(list((private_cache / p).glob("*.safetensors")) for p in new)
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["architectures"] == ["LlamaForCausalLM"]
    assert (out / "generation_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and model.config.vocab_size == 320


def test_tokenizer_source_from_a_gguf_base(gguf_and_converted, tmp_path):
    """The GGUF's tokenizer (from its cached files dir) drives vocabulary alignment. transformers' byte-level GGUF
    tokenizer adds '<|endoftext|>' when the file lacks it (321 tokens for 320 rows), so the output gains that row."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    g, conv = gguf_and_converted
    out = merge(_lin(g, conv, base_model=str(g), tokenizer_source="base"), tmp_path / "merged")
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert model.config.vocab_size == len(tok) == 321
    a, b = load_file(out / "model.safetensors"), load_file(conv / "model.safetensors")
    for k in a:
        assert torch.equal(a[k][: b[k].shape[0]].view(torch.int32), b[k].view(torch.int32)), k


def test_lora_adapter_over_a_gguf_base(gguf_and_converted, tmp_path):
    """`model.gguf+adapter` applies the adapter on the dequantized tensors: same output as over the converted dir."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    g, conv = gguf_and_converted
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(conv, dtype=torch.float32),
                                LoraConfig(r=2, lora_alpha=8, target_modules=["q_proj", "k_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    peft_model.save_pretrained(tmp_path / "adapter")
    outs = [merge({"merge_method": "linear", "models": [{"model": f"{m}+{tmp_path / 'adapter'}",
                                                          "parameters": {"weight": 1.0}}]}, tmp_path / name)
            for m, name in ((g, "from_gguf"), (conv, "from_dir"))]
    a, b = (load_file(o / "model.safetensors") for o in outs)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.layers.0.self_attn.q_proj.weight"],
                           load_file(conv / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"])


def test_gguf_and_dir_mixed_weights(gguf_and_converted, tiny_gguf, tmp_path):
    """A 50/50 merge of the GGUF and the original checkpoint is the mean of the dequantized and original tensors."""
    g, conv = gguf_and_converted
    out = merge(_lin(g, tiny_gguf["hf"], 0.5, 0.5), tmp_path / "m")
    a, c, h = (load_file(p / "model.safetensors") for p in (out, conv, tiny_gguf["hf"]))
    for k in a:
        assert torch.allclose(a[k], (c[k] + h[k]) / 2, atol=1e-6), k


def test_merge_cli_dry_run_and_bad_gguf(gguf_and_converted, tmp_path, capsys):
    g, conv = gguf_and_converted
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_lin(g, conv)))
    with pytest.raises(SystemExit) as exc:
        main(["merge", str(cfg), str(tmp_path / "out"), "--dry-run"])
    out = capsys.readouterr().out
    assert exc.value.code in (0, None)
    assert "model.layers.1.self_attn.q_proj.weight [64, 64] float32" in out
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(g.read_bytes()[:-500])
    cfg.write_text(yaml.safe_dump(_lin(bad, conv)))
    with pytest.raises(SystemExit) as exc:
        main(["merge", str(cfg), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err and err.startswith("error: ") and "truncated GGUF" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "cut.gguf"]


@pytest.mark.slow
def test_smollm2_merge_streams_bit_exact(tmp_path):
    """The real SmolLM2 Q4_1 file: a linear 1/0 merge with its conversion reproduces the conversion bit for bit."""
    real = smollm2_or_skip()
    conv = convert(real, tmp_path / "conv")
    out = merge(_lin(real, conv), tmp_path / "merged", threads=2)
    a, b = load_file(out / "model.safetensors"), load_file(conv / "model.safetensors")
    assert set(a) == set(b) and "lm_head.weight" not in a  # tied embeddings stay tied
    assert all(torch.equal(a[k].view(torch.int32), b[k].view(torch.int32)) for k in a)
