"""LoRA adapters in, a LoRA adapter out (``output: lora``, issue 19 item 2), on real PEFT adapters of a tiny Llama.

References are the merges of the full weights ``W + s B A``: linear / task_arithmetic must match to float tolerance
(rank concatenation is exact), TIES / DARE with a full ``lora_rank`` must equal the merge of the full deltas, and the
truncation error must shrink as the rank grows. Every output is loaded with PEFT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from safemerge.errors import SafemergeError
from safemerge.merge import merge, merge_state_dicts

ADAPTERS = {  # name: LoraConfig kwargs (different ranks, scales and targets; rsLoRA; an embedding LoRA)
    "a1": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "embed_tokens"]),
    "a2": dict(r=2, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "down_proj"]),
    "a3": dict(r=3, lora_alpha=3, target_modules=["q_proj", "v_proj"], alpha_pattern={"v_proj": 6}),
}


def _make_adapter(base: Path, out: Path, seed: int, **kwargs: Any) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **kwargs))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_models, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora-merge")
    out = {"base": Path(tiny_models["base"])}
    for i, (name, kwargs) in enumerate(ADAPTERS.items(), start=1):
        out[name] = _make_adapter(out["base"], root / name, seed=i, **kwargs)
    out["saver"] = _make_adapter(out["base"], root / "saver", seed=9, r=2, lora_alpha=2,
                                 target_modules=["o_proj"], modules_to_save=["lm_head"])
    return out


def _ref(ad: dict[str, Path], name: str) -> str:
    return f"{ad['base']}+{ad[name]}"


def _peft_weights(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """The base with the adapter loaded by PEFT and merged in (PEFT's own reading of our files)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter))
    return {k: v.detach().clone() for k, v in model.merge_and_unload().state_dict().items()}


def _full_reference(cfg: dict, ad: dict[str, Path], seed: int = 0) -> dict[str, torch.Tensor]:
    """The same recipe merged in memory on the full float64 weights ``W + s B A`` (the full deltas)."""
    from safemerge.merge.io import open_source

    refs = {m["model"] for m in cfg["models"]} | ({cfg["base_model"]} if "base_model" in cfg else set())
    sds = {}
    for ref in refs:
        src = open_source(ref)
        get = (lambda n, s=src: s.get_exact(n, torch.float64)) if hasattr(src, "get_exact") else \
            (lambda n, s=src: s.get(n).double())
        sds[ref] = {n: get(n) for n in src.infos()}
    full = {k: v for k, v in cfg.items() if k not in ("output", "lora_rank")}
    return merge_state_dicts({**full, "dtype": "float64"}, sds, seed=seed)


def _close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], atol: float) -> None:
    for name, w in want.items():
        torch.testing.assert_close(got[name].double(), w.double(), rtol=0, atol=atol, msg=name)


def _lora_cfg(method: str, models: list[tuple[str, dict]], base: str | None = None, **extra: Any) -> dict:
    cfg = {"merge_method": method, "output": "lora",
           "models": [{"model": m, "parameters": p} for m, p in models], **extra}
    if base is not None:
        cfg["base_model"] = base
    return cfg


@pytest.mark.parametrize("method", ["linear", "task_arithmetic"])
def test_exact_methods_concatenate_ranks(method, adapters, tmp_path):
    ad = adapters
    models = [(_ref(ad, "a1"), {"weight": 0.3}), (_ref(ad, "a2"), {"weight": 0.5}),
              (_ref(ad, "a3"), {"weight": [0.2, 0.9]})]  # a gradient: per-layer coefficients
    extra = {"base_model": str(ad["base"]), "parameters": {"lambda": 0.8, "normalize": True}} \
        if method == "task_arithmetic" else {}
    cfg = _lora_cfg(method, models, **extra)
    out = merge(cfg, tmp_path / "out")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["target_modules"] == ["down_proj", "embed_tokens", "q_proj",
                                                                          "v_proj"]
    report = json.loads((out / "lora_merge.json").read_text())
    assert report["exact"] and report["overall_relative_error"] == 0.0
    ranks = {m: v["rank"] for m, v in report["modules"].items()}
    assert ranks["model.layers.0.self_attn.q_proj"] == 4 + 2 + 3 and ranks["model.layers.0.mlp.down_proj"] == 2
    assert ranks["model.embed_tokens"] == 4
    got = _peft_weights(ad["base"], out)
    _close(got, _full_reference(cfg, ad), atol=2e-6)
    engine = load_file(merge({k: v for k, v in cfg.items() if k != "output"}, tmp_path / "full")
                       / "model.safetensors")
    _close(got, engine, atol=2e-6)  # the ordinary streaming merge of base+adapter inputs agrees too


def test_linear_without_normalize_must_sum_to_one(adapters, tmp_path):
    ad = adapters
    cfg = _lora_cfg("linear", [(_ref(ad, "a1"), {"weight": 0.7}), (_ref(ad, "a2"), {"weight": 0.7})],
                    parameters={"normalize": False})
    with pytest.raises(SafemergeError, match="coefficients sum to 1.4, not 1"):
        merge(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    cfg["models"][1]["parameters"]["weight"] = 0.3  # sums to 1: base + 0.7 D1 + 0.3 D2
    out = merge(cfg, tmp_path / "out")
    _close(_peft_weights(ad["base"], out), _full_reference(cfg, ad), atol=2e-6)


@pytest.mark.parametrize("method, params", [
    ("ties", {"weight": 0.6, "density": 0.5}),
    ("dare_ties", {"weight": 0.6, "density": 0.7}),
    ("breadcrumbs", {"weight": 0.6, "density": 0.8, "gamma": 0.05}),
])
def test_svd_methods_at_full_rank_equal_the_full_delta_merge(method, params, adapters, tmp_path):
    ad = adapters
    cfg = _lora_cfg(method, [(_ref(ad, "a1"), params), (_ref(ad, "a2"), params), (_ref(ad, "a3"), params)],
                    base=str(ad["base"]), lora_rank=128)
    out = merge(cfg, tmp_path / "out", seed=3)
    report = json.loads((out / "lora_merge.json").read_text())
    assert not report["exact"] and report["overall_relative_error"] < 1e-5
    _close(_peft_weights(ad["base"], out), _full_reference(cfg, ad, seed=3), atol=1e-5)


def test_truncation_error_decreases_with_rank_and_is_reported(adapters, tmp_path, capsys):
    from safemerge.cli import main

    ad = adapters
    errors = []
    want = _full_reference(_lora_cfg("ties", [(_ref(ad, "a1"), {"weight": 1.0, "density": 0.4}),
                                              (_ref(ad, "a3"), {"weight": 1.0, "density": 0.4})],
                                     base=str(ad["base"])), ad)
    base = load_file(str(ad["base"] / "model.safetensors"))
    for rank in (1, 2, 4, 8, 16):
        cfg = _lora_cfg("ties", [(_ref(ad, "a1"), {"weight": 1.0, "density": 0.4}),
                                 (_ref(ad, "a3"), {"weight": 1.0, "density": 0.4})],
                        base=str(ad["base"]), lora_rank=rank)
        path = tmp_path / f"r{rank}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        with pytest.raises(SystemExit) as exc:
            main(["merge", str(path), str(tmp_path / f"r{rank}")])
        assert exc.value.code in (0, None)
        printed = capsys.readouterr().out
        report = json.loads((tmp_path / f"r{rank}" / "lora_merge.json").read_text())
        assert f"relative reconstruction error {report['overall_relative_error']:.4g}" in printed
        assert report["worst_module"] in printed and report["max_rank"] == rank
        errors.append(report["overall_relative_error"])
        # the reported per-module error is the error of the written adapter against the full delta merge
        got = _peft_weights(ad["base"], tmp_path / f"r{rank}")
        name = "model.layers.1.self_attn.q_proj.weight"
        d = want[name] - base[name].double()
        rel = float(torch.linalg.matrix_norm(got[name].double() - want[name]) / torch.linalg.matrix_norm(d))
        assert rel == pytest.approx(report["modules"]["model.layers.1.self_attn.q_proj"]["relative_error"],
                                    rel=1e-3, abs=1e-6)
        card = (tmp_path / f"r{rank}" / "README.md").read_text()
        assert "library_name: peft" in card and f"{report['overall_relative_error']:.4g}" in card
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_exact_method_truncated_to_lora_rank_is_the_best_approximation(adapters, tmp_path):
    ad = adapters
    models = [(_ref(ad, "a1"), {"weight": 0.5}), (_ref(ad, "a3"), {"weight": 0.5})]
    exact = merge(_lora_cfg("linear", models), tmp_path / "exact")
    cut = merge(_lora_cfg("linear", models, lora_rank=2), tmp_path / "cut")
    name = "model.layers.0.self_attn.q_proj"
    tensors = load_file(str(exact / "adapter_model.safetensors"))
    key = f"base_model.model.{name}"
    d = tensors[f"{key}.lora_B.weight"].double() @ tensors[f"{key}.lora_A.weight"].double()
    s = torch.linalg.svdvals(d)
    best = float(s[2:].square().sum().sqrt() / s.square().sum().sqrt())
    report = json.loads((cut / "lora_merge.json").read_text())
    assert report["modules"][name]["rank"] == 2 and not report["exact"]
    assert report["modules"][name]["relative_error"] == pytest.approx(best, rel=1e-6)
    small = load_file(str(cut / "adapter_model.safetensors"))
    approx = small[f"{key}.lora_B.weight"].double() @ small[f"{key}.lora_A.weight"].double()
    assert float(torch.linalg.matrix_norm(d - approx) / torch.linalg.matrix_norm(d)) == pytest.approx(best, rel=1e-5)


def test_a_method_that_is_linear_for_these_parameters_is_exact(adapters, tmp_path):
    """TIES of one adapter at density 1 keeps the delta as is: linear, so concatenated exactly, no lora_rank."""
    ad = adapters
    cfg = _lora_cfg("ties", [(_ref(ad, "a1"), {"weight": 0.5, "density": 1.0})], base=str(ad["base"]))
    out = merge(cfg, tmp_path / "out")
    assert json.loads((out / "lora_merge.json").read_text())["exact"]
    _close(_peft_weights(ad["base"], out), _full_reference(cfg, ad), atol=2e-6)


def test_modules_to_save_are_merged_in_full(adapters, tmp_path):
    ad = adapters
    cfg = _lora_cfg("task_arithmetic", [(_ref(ad, "saver"), {"weight": 0.5}), (_ref(ad, "a1"), {"weight": 0.5})],
                    base=str(ad["base"]))
    out = merge(cfg, tmp_path / "out")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["lm_head"] and "lm_head" not in config["target_modules"]
    _close(_peft_weights(ad["base"], out), _full_reference(cfg, ad), atol=2e-6)


@pytest.mark.parametrize("change, message", [
    ({"merge_method": "ties", "parameters": {"density": 0.5}}, "needs lora_rank"),
    ({"lora_rank": 0}, "lora_rank must be a positive"),
    ({"output": None, "lora_rank": 4}, "lora_rank needs 'output: lora'"),
    ({"tokenizer_source": "base"}, "cannot change the vocabulary"),
    ({"models": "plain"}, "one base model plus an adapter"),
    ({"slices": True}, "output: lora needs 'models:'"),
])
def test_bad_lora_output_recipes_are_one_line_errors(change, message, adapters, tiny_models, tmp_path, capsys):
    from safemerge.cli import main

    ad = adapters
    cfg = _lora_cfg("task_arithmetic", [(_ref(ad, "a1"), {"weight": 1.0})], base=str(ad["base"]))
    for key, value in change.items():
        if key == "models":
            cfg["models"].append({"model": str(tiny_models["a"]), "parameters": {"weight": 1.0}})
        elif key == "slices":
            cfg["slices"] = [{"sources": [{"model": m["model"], "layer_range": [0, 2]} for m in cfg.pop("models")]}]
        elif value is None:
            cfg.pop(key)
        else:
            cfg[key] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exc:
        main(["merge", str(path), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert message in err, err
    assert not (tmp_path / "out").exists()
