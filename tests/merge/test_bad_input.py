"""Every bad input is caught before any output exists: exit code 2, one `error:` line naming the problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from safemerge.cli import main


@pytest.fixture(scope="module")
def broken(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """Damaged copies of the tiny models: NaN, wider vocab, other shape, missing/truncated shards."""
    from safemerge.data.tiny import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("broken")
    out = {}

    def copy(name: str) -> Path:
        dst = root / name
        shutil.copytree(tiny_models["b"], dst)
        return dst

    out["nan"] = copy("nan")
    sd = load_file(out["nan"] / "model.safetensors")
    sd["model.layers.0.self_attn.v_proj.weight"][0, 0] = float("nan")
    save_file(sd, out["nan"] / "model.safetensors", metadata={"format": "pt"})

    out["vocab"] = copy("vocab")
    sd = load_file(out["vocab"] / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        sd[name] = torch.cat([sd[name], torch.zeros(8, sd[name].shape[1])])
    save_file(sd, out["vocab"] / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((out["vocab"] / "config.json").read_text())
    cfg["vocab_size"] += 8
    (out["vocab"] / "config.json").write_text(json.dumps(cfg))

    out["shape"] = make_tiny_checkpoint("llama", root / "shape", seed=3, intermediate=96)

    out["sharded"] = make_tiny_checkpoint("llama", root / "sharded", seed=4, init_from=tiny_models["base"],
                                          max_shard_size="60KB")
    out["missing_shard"] = root / "missing_shard"
    shutil.copytree(out["sharded"], out["missing_shard"])
    sorted(out["missing_shard"].glob("model-*.safetensors"))[1].unlink()

    out["truncated"] = copy("truncated")
    data = (out["truncated"] / "model.safetensors").read_bytes()
    (out["truncated"] / "model.safetensors").write_bytes(data[:50])

    out["short_data"] = copy("short_data")
    (out["short_data"] / "model.safetensors").write_bytes(data[: len(data) - 1000])

    out["bad_json"] = copy("bad_json")
    (out["bad_json"] / "config.json").write_text('{"architectures": ["LlamaForCausalLM"],')

    out["other_arch"] = copy("other_arch")  # same tensors, another architecture: mergekit refuses to mix them too
    cfg = json.loads((out["other_arch"] / "config.json").read_text())
    cfg.update(architectures=["MistralForCausalLM"], model_type="mistral")
    (out["other_arch"] / "config.json").write_text(json.dumps(cfg))
    return out


def _lin(a: str, b: str, **extra) -> dict:
    return {"merge_method": "linear",
            "models": [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.5}}],
            **extra}


CASES = {
    "unknown_method": (lambda m, x: {"merge_method": "tiez", "base_model": m["base"],
                                     "models": [{"model": m["a"]}]}, "did you mean 'ties'"),
    "unknown_key": (lambda m, x: {**_lin(m["a"], m["b"]), "base_modle": m["base"]}, "did you mean 'base_model'"),
    "unknown_parameter": (lambda m, x: _lin(m["a"], m["b"], parameters={"normalise": True}),
                          "did you mean 'normalize'"),
    "missing_required_parameter": (lambda m, x: {"merge_method": "linear",
                                                 "models": [{"model": m["a"]}, {"model": m["b"]}]},
                                   "missing required parameter 'weight'"),
    "too_many_models_for_slerp": (lambda m, x: {"merge_method": "slerp", "base_model": m["base"],
                                                "parameters": {"t": 0.5},
                                                "models": [{"model": m["base"]}, {"model": m["a"]},
                                                           {"model": m["b"]}]}, "takes exactly 1"),
    "base_missing": (lambda m, x: {"merge_method": "ties", "models": [{"model": m["a"]}],
                                   "parameters": {"weight": 1.0}}, "needs a base_model"),
    "shape_mismatch": (lambda m, x: _lin(m["a"], x["shape"]), "different shapes"),
    "vocab_mismatch": (lambda m, x: _lin(m["a"], x["vocab"]), "tokenizer_source: base"),
    "nonexistent_path": (lambda m, x: _lin(m["a"], "/nonexistent/model"), "model directory not found"),
    "missing_shard": (lambda m, x: _lin(m["a"], x["missing_shard"]), "is missing"),
    "truncated_header": (lambda m, x: _lin(m["a"], x["truncated"]), "corrupt or truncated"),
    "truncated_data": (lambda m, x: _lin(m["a"], x["short_data"]), "corrupt or truncated"),
    "nan_input": (lambda m, x: _lin(m["a"], x["nan"]), "NaN"),
    "bad_layer_range": (lambda m, x: {"merge_method": "passthrough",
                                      "slices": [{"sources": [{"model": m["a"], "layer_range": [0, 5]}]}]},
                        "exceeds the 2 layers"),
    "tokenizer_token_from_unknown_model": (lambda m, x: {**_lin(m["a"], m["b"]), "tokenizer": {
        "source": "union", "tokens": {"<x>": {"source": "/nonexistent/model"}}}}, "is not one of the merged models"),
    # issue 15: each of these used to merge silently or end in a traceback
    "density_above_1": (lambda m, x: _ties(m, {"weight": 1.0, "density": 1.7}), "density must be a number in [0, 1]"),
    "density_negative": (lambda m, x: _ties(m, {"weight": 1.0, "density": -0.2}), "got -0.2"),
    "weight_not_a_number": (lambda m, x: _ties(m, {"weight": "abc"}), "weight = 'abc' is not a number"),
    "input_config_not_json": (lambda m, x: _ties(m, {"weight": 1.0}, other=x["bad_json"]),
                              "bad_json/config.json: config.json is not valid JSON"),
    "other_architecture": (lambda m, x: _ties(m, {"weight": 1.0}, other=x["other_arch"]),
                           "architectures MistralForCausalLM differs from LlamaForCausalLM"),
}


def _ties(m: dict, params: dict, other: str | None = None) -> dict:
    return {"merge_method": "ties", "base_model": m["base"],
            "models": [{"model": m["a"], "parameters": {"weight": 0.5}},
                       {"model": other or m["b"], "parameters": params}]}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exit_2_one_line(case, tiny_models, broken, tmp_path, capsys):
    make, expected = CASES[case]
    models = {k: str(v) for k, v in tiny_models.items()}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(make(models, {k: str(v) for k, v in broken.items()}), sort_keys=False))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["merge", str(cfg), str(out)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    assert expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.parametrize("args, expected", [
    (["--max-shard-size", "lots"], "cannot parse size"),
    (["--max-memory", "-3GB"], "cannot parse size"),
])
def test_bad_options(args, expected, tiny_models, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_lin(str(tiny_models["a"]), str(tiny_models["b"]))))
    with pytest.raises(SystemExit) as exc:
        main(["merge", str(cfg), str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and expected in err and "\n" not in err


@pytest.mark.parametrize("text, expected", [
    (None, "merge config not found"),
    ("merge_method: linear\nmodels:\n  - model: [\n", "malformed YAML"),
])
def test_bad_config_files(text, expected, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    if text is not None:
        cfg.write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["merge", str(cfg), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and expected in err and "\n" not in err
