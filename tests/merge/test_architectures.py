"""safemerge merges every supported architecture like mergekit does, and the result loads and runs.

Tiny random Llama, Qwen2, Mistral, Gemma2 and Cohere (Aya) checkpoints, sharded and unsharded, tied and untied
embeddings; TIES and SLERP; output tensors bit-identical to mergekit 0.1.5, loadable by transformers, and the
forward pass gives mergekit's logits.

mergekit 0.1.5's ``cohere.json`` requires ``q_norm``/``k_norm`` weights (Command R+), so it refuses Aya-23-style
Cohere checkpoints (``use_qk_norm=False``, the paper's base model family). For those the oracle runs on a copy of
the inputs whose ``config.json`` names an unknown architecture class, which makes mergekit infer the layout from
the tensor names (same per-tensor math; the output directory keeps ``model_type: cohere``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest


# (arch, tie_word_embeddings, max_shard_size): None = the architecture's default tying / one shard
VARIANTS = [
    ("llama", False, None),
    ("llama", True, "150KB"),
    ("qwen2", None, None),
    ("qwen2", False, "150KB"),
    ("mistral", False, "150KB"),
    ("gemma2", None, None),
    ("cohere", None, "150KB"),
]
METHODS = ("ties", "slerp")


def _config(method: str, fam: dict[str, Path]) -> dict[str, Any]:
    if method == "ties":
        return {
            "merge_method": "ties",
            "base_model": str(fam["base"]),
            "models": [
                {"model": str(fam["a"]), "parameters": {"weight": [0.3, 0.7], "density": 0.5}},
                {"model": str(fam["b"]), "parameters": {"weight": 0.5, "density": 0.8}},
            ],
            "dtype": "float32",
        }
    return {
        "merge_method": "slerp",
        "base_model": str(fam["a"]),
        "models": [{"model": str(fam["a"])}, {"model": str(fam["b"])}],
        "parameters": {"t": [{"filter": "self_attn", "value": [0.2, 0.8]}, {"value": 0.6}]},
        "dtype": "float32",
    }


def _variant_id(v: tuple[str, bool | None, str | None]) -> str:
    arch, tie, shard = v
    tied = tie or (tie is None and arch != "mistral")
    return f"{arch}-{'tied' if tied else 'untied'}-{'sharded' if shard else 'single'}"


def _mergekit_oracle(tools: Any, method: str, fam: dict[str, Path], arch: str, tmp: Path) -> Path:
    """mergekit's output for ``method`` on ``fam`` (via an architecture alias for qk-norm-free Cohere)."""
    if arch == "cohere" and not tools.output_config(fam["base"]).get("use_qk_norm"):
        alias = {}
        for name, src in fam.items():
            dst = shutil.copytree(src, tmp / "alias" / name)
            cfg = tools.output_config(dst)
            cfg["architectures"] = ["CohereNoQkNormForCausalLM"]
            (dst / "config.json").write_text(json.dumps(cfg))
            alias[name] = dst
        fam = alias
    return tools.run_mergekit(_config(method, fam), tmp / "mergekit")


def _logits(model_dir: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok("the quick brown fox . le renard brun", return_tensors="pt")["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", VARIANTS, ids=[_variant_id(v) for v in VARIANTS])
def test_architecture_merge_matches_mergekit_and_runs(variant: tuple[str, bool | None, str | None], method: str,
                                                      model_family, tmp_path: Path, merge_tools: Any) -> None:
    tools = merge_tools
    import torch

    arch, tie, shard = variant
    fam = model_family(arch, layers=2, tie=tie, shard=shard, experts=("a", "b"))
    if shard:
        assert len(list(fam["a"].glob("*.safetensors"))) > 1, "the sharded variant must really be sharded"
    config = _config(method, fam)
    theirs = _mergekit_oracle(merge_tools, method, fam, arch, tmp_path)
    ours = tools.run_safemerge(config, tmp_path / "safemerge")

    mine, ref = tools.read_tensors(ours), tools.read_tensors(theirs)
    problems = tools.diff_report(mine, ref)
    assert not problems, f"{arch}/{method}: differs from mergekit:\n" + "\n".join(problems[:20])
    cfg = tools.output_config(ours)
    base_cfg = tools.output_config(fam["base"])
    assert cfg["model_type"] == tools.output_config(theirs)["model_type"] == base_cfg["model_type"]
    assert bool(cfg.get("tie_word_embeddings")) == bool(base_cfg.get("tie_word_embeddings"))

    logits = _logits(ours)
    assert torch.isfinite(logits).all()
    assert torch.equal(logits, _logits(theirs))
    # and the merge really moved weights away from every input
    src = tools.read_tensors(fam["a"])
    assert any(not torch.equal(mine[k], src[k]) for k in mine if mine[k].ndim == 2)
