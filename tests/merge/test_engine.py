"""End-to-end merges on tiny real checkpoints: loadable output, sharding, ties, slices, determinism, atomicity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from safemerge.errors import InputError
from safemerge.merge import merge, merge_state_dicts, plan_merge
from safemerge.merge.io import open_source


def tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def lin(models: dict[str, Path], **extra) -> dict:
    cfg = {"merge_method": "linear", "dtype": "float32",
           "models": [{"model": str(models["a"]), "parameters": {"weight": [0.0, 1.0]}},
                      {"model": str(models["b"]), "parameters": {"weight": 0.5}}]}
    cfg.update(extra)
    return cfg


def test_linear_gradient_loads_and_matches_formula(tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM

    out = merge(lin(tiny_models), tmp_path / "out")
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    sd = model.state_dict()
    a, b = tensors(tiny_models["a"]), tensors(tiny_models["b"])
    # 2 layers: layer 0 has t=0 (a weight 0), layer 1 has t=1 (a weight 1); embeddings/norm/head take t=0
    assert torch.equal(sd["model.layers.0.mlp.up_proj.weight"], b["model.layers.0.mlp.up_proj.weight"])
    n = "model.layers.1.self_attn.q_proj.weight"
    assert torch.allclose(sd[n], (a[n] + 0.5 * b[n]) / 1.5, atol=1e-6)
    assert torch.equal(sd["lm_head.weight"], b["lm_head.weight"])
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "tokenizer.json", "generation_config.json", "mergekit_config.yml", "README.md",
            "model.safetensors"} <= files
    assert all(oct(os.stat(p).st_mode & 0o777) == "0o644" for p in out.iterdir())
    assert (out / "mergekit_config.yml").read_text().startswith("merge_method: linear")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp siblings left


def test_sharded_in_and_out(tiny_models, tmp_path):
    from safemerge.data.tiny import make_tiny_checkpoint

    sharded = make_tiny_checkpoint("llama", tmp_path / "sharded", seed=5, init_from=tiny_models["base"],
                                   max_shard_size="60KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    cfg = {"merge_method": "ties", "base_model": str(tiny_models["base"]), "dtype": "float32",
           "models": [{"model": str(sharded), "parameters": {"weight": 0.7, "density": 0.5}},
                      {"model": str(tiny_models["a"]), "parameters": {"weight": 0.3, "density": 0.8}}]}
    one = merge(cfg, tmp_path / "one")
    many = merge(cfg, tmp_path / "many", max_shard_size="40KB", threads=3)
    index = json.loads((many / "model.safetensors.index.json").read_text())
    shards = sorted(many.glob("model-*.safetensors"))
    assert len(shards) > 3 and set(index["weight_map"].values()) == {p.name for p in shards}
    assert all(p.stat().st_size <= 40_000 + 2_000 for p in shards if len(load_file(p)) > 1)
    t1, t2 = tensors(one), tensors(many)
    assert t1.keys() == t2.keys() and all(torch.equal(t1[k], t2[k]) for k in t1)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in t2.values())


def test_random_method_deterministic_across_threads(tiny_models, tmp_path):
    cfg = {"merge_method": "dare_ties", "base_model": str(tiny_models["base"]),
           "models": [{"model": str(tiny_models["a"]), "parameters": {"weight": 0.5, "density": 0.3}},
                      {"model": str(tiny_models["b"]), "parameters": {"weight": 0.5, "density": [0.2, 0.9]}}]}
    r1 = tensors(merge(cfg, tmp_path / "t1", threads=1, seed=7))
    r4 = tensors(merge(cfg, tmp_path / "t4", threads=4, seed=7, max_memory="2MB"))
    other = tensors(merge(cfg, tmp_path / "s8", threads=1, seed=8))
    assert all(torch.equal(r1[k], r4[k]) for k in r1)
    assert any(not torch.equal(r1[k], other[k]) for k in r1)
    mem = merge_state_dicts(cfg | {"base_model": "base", "models": [
        {"model": "a", "parameters": {"weight": 0.5, "density": 0.3}},
        {"model": "b", "parameters": {"weight": 0.5, "density": [0.2, 0.9]}}]},
        {k: tensors(tiny_models[k]) for k in ("base", "a", "b")}, seed=7, threads=2)
    assert mem.keys() == r1.keys() and all(torch.equal(mem[k], r1[k]) for k in r1)


def test_merge_state_dicts_writes_into_out(tiny_models):
    sds = {k: tensors(tiny_models[k]) for k in ("a", "b")}
    cfg = {"merge_method": "slerp", "base_model": "a", "parameters": {"t": [0.2, 0.8]},
           "models": [{"model": "a"}, {"model": "b"}]}
    fresh = merge_state_dicts(cfg, sds)
    out = {k: torch.zeros_like(v) for k, v in sds["a"].items()}
    ptrs = {k: v.data_ptr() for k, v in out.items()}
    res = merge_state_dicts(cfg, sds, out=out)
    assert res is out and all(out[k].data_ptr() == ptrs[k] for k in out)
    assert all(torch.equal(out[k], fresh[k]) for k in fresh)


def test_max_memory_too_small_is_an_error(tiny_models, tmp_path):
    from safemerge.errors import SafemergeError

    with pytest.raises(SafemergeError, match="--max-memory"):
        merge(lin(tiny_models), tmp_path / "o", max_memory="10KB")
    assert not (tmp_path / "o").exists()


def test_nan_input_aborts_atomically(tiny_models, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_models["b"], bad)
    sd = load_file(bad / "model.safetensors")
    sd["model.layers.1.mlp.down_proj.weight"][3, 4] = float("nan")
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    cfg = lin(tiny_models)
    cfg["models"][1]["model"] = str(bad)
    with pytest.raises(InputError, match="NaN"):
        merge(cfg, tmp_path / "out", threads=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_slices_stack_layers_and_fix_config(tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM

    a, b = str(tiny_models["a"]), str(tiny_models["b"])
    cfg = {"merge_method": "passthrough", "dtype": "float32",
           "slices": [{"sources": [{"model": a, "layer_range": [0, 2]}]},
                      {"sources": [{"model": b, "layer_range": [1, 2]}]}]}
    out = merge(cfg, tmp_path / "stack")
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 3
    model = AutoModelForCausalLM.from_pretrained(out)
    assert len(model.model.layers) == 3
    got, tb = tensors(out), tensors(tiny_models["b"])
    assert torch.equal(got["model.layers.2.self_attn.o_proj.weight"], tb["model.layers.1.self_attn.o_proj.weight"])


def test_tied_embeddings_have_no_head(tmp_path):
    from transformers import AutoModelForCausalLM

    from safemerge.data.tiny import make_tiny_checkpoint

    base = make_tiny_checkpoint("qwen2", tmp_path / "qb", seed=0)
    a = make_tiny_checkpoint("qwen2", tmp_path / "qa", seed=1, init_from=base)
    assert "lm_head.weight" not in open_source(str(a)).infos()
    cfg = {"merge_method": "task_arithmetic", "base_model": str(base),
           "models": [{"model": str(a), "parameters": {"weight": 0.5}}], "out_dtype": "bfloat16"}
    out = merge(cfg, tmp_path / "qm")
    got = tensors(out)
    assert "lm_head.weight" not in got and got["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_dry_run_plan_reads_no_tensor(tiny_models):
    plan = plan_merge(lin(tiny_models))
    names = [t.name for t in plan.tasks]
    assert names[0] == "model.embed_tokens.weight" and names[-1] in ("model.norm.weight", "lm_head.weight")
    assert len(names) == len(open_source(str(tiny_models["a"])).infos())
    assert plan.bytes_read == 2 * plan.bytes_written


@pytest.mark.parametrize("arch", ["mistral", "gemma2", "cohere"])
def test_architectures_merge_and_load(arch, tmp_path):
    from transformers import AutoModelForCausalLM

    from safemerge.data.tiny import make_tiny_checkpoint

    base = make_tiny_checkpoint(arch, tmp_path / "base", seed=0)
    a = make_tiny_checkpoint(arch, tmp_path / "a", seed=1, init_from=base)
    b = make_tiny_checkpoint(arch, tmp_path / "b", seed=2, init_from=base)
    cfg = {"merge_method": "ties", "base_model": str(base), "dtype": "float32",
           "models": [{"model": str(a), "parameters": {"weight": 0.5, "density": 0.5}},
                      {"model": str(b), "parameters": {"weight": 0.5, "density": 0.5}}]}
    out = merge(cfg, tmp_path / "out", threads=2)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[1, 5, 9]])
    assert torch.isfinite(model(ids).logits).all()
    assert set(tensors(out)) == set(open_source(str(a)).infos())


def test_memory_budget_bounds_tensors_in_flight(tiny_models):
    from safemerge.merge.engine import execute, task_cost
    from safemerge.merge.io import DictSource
    from safemerge.merge.plan import build_plan

    sds = {k: tensors(tiny_models[k]) for k in ("a", "b")}
    cfg = lin({"a": "a", "b": "b"})
    from safemerge.merge import load_config

    plan = build_plan(load_config(cfg), {k: DictSource(k, v) for k, v in sds.items()})
    worst = max(task_cost(t) for t in plan.tasks)
    total = sum(task_cost(t) for t in plan.tasks)
    order: list[str] = []
    for budget in (worst, 3 * worst):
        stats: dict[str, int] = {}
        execute(plan, lambda task, t: order.append(task.name), threads=4, max_memory=budget, stats=stats)
        assert worst <= stats["peak_in_flight"] <= budget
    unbounded: dict[str, int] = {}
    execute(plan, lambda task, t: None, threads=4, stats=unbounded)
    assert unbounded["peak_in_flight"] <= total
    assert order == [t.name for t in plan.tasks] * 2  # results are emitted in plan order
