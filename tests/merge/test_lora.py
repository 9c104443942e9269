"""LoRA/PEFT adapters as merge inputs (``path+adapter``) against peft's own merge_and_unload."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from safemerge.errors import InputError
from safemerge.merge import merge


@pytest.fixture(scope="module", params=[False, True], ids=["lora", "rslora"])
def adapter(request, tiny_models, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A real PEFT adapter on the tiny base (random non-zero B) and peft's merged reference weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapter")
    model = AutoModelForCausalLM.from_pretrained(tiny_models["base"], dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                     use_rslora=request.param, alpha_pattern={"down_proj": 4}, rank_pattern={"down_proj": 2})
    peft_model = get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    peft_model.save_pretrained(root / "adapter")
    merged = peft_model.merge_and_unload()
    return root / "adapter", {k: v.detach().clone() for k, v in merged.state_dict().items()}


def test_lora_input_matches_peft_merge_and_unload(adapter, tiny_models, tmp_path):
    adapter_dir, reference = adapter
    cfg = {"merge_method": "linear", "dtype": "float32",
           "models": [{"model": f"{tiny_models['base']}+{adapter_dir}", "parameters": {"weight": 1.0}}]}
    out = merge(cfg, tmp_path / "out")
    got = load_file(out / "model.safetensors")
    changed = [k for k in got if "q_proj" in k or "v_proj" in k or "down_proj" in k]
    assert len(changed) == 6
    for name, tensor in got.items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-5, atol=1e-6, msg=name)
    base = load_file(Path(tiny_models["base"]) / "model.safetensors")
    assert not torch.equal(got[changed[0]], base[changed[0]])


def test_adapter_for_another_model_is_rejected(adapter, tmp_path):
    from safemerge.data.tiny import make_tiny_checkpoint

    adapter_dir, _ = adapter
    other = make_tiny_checkpoint("llama", tmp_path / "other", seed=1, hidden=32)
    cfg = {"merge_method": "linear", "models": [{"model": f"{other}+{adapter_dir}", "parameters": {"weight": 1.0}}]}
    with pytest.raises(InputError, match="is the adapter for this base model"):
        merge(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
