"""`safemerge merge --device`: on the CPU the same bytes as the default; on a GPU (like mergekit's --cuda, still
streaming) the same tensors as the CPU for the deterministic fp32 methods, and DARE's masks drawn on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from safemerge.cli import main

HAS_CUDA = torch.cuda.is_available()


def _config(method: str, models: dict[str, Path], dtype: str = "float32") -> dict:
    entries = [{"model": str(models["a"]), "parameters": {"weight": 0.7, "density": 0.5}},
               {"model": str(models["b"]), "parameters": {"weight": 0.4, "density": 0.3}}]
    if method in ("linear", "task_arithmetic"):
        for e in entries:
            e["parameters"].pop("density")
    cfg = {"merge_method": method, "dtype": dtype, "models": entries}
    if method != "linear":
        cfg["base_model"] = str(models["base"])
    return cfg


def _cli_merge(cfg: dict, out: Path, capsys, *extra: str) -> Path:
    import yaml

    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(SystemExit) as ex:
        main(["merge", str(path), str(out), "--seed", "7", *extra])
    assert ex.value.code in (0, None), capsys.readouterr().err
    return out


def _shard_bytes(model_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(model_dir.glob("*.safetensors"))}


@pytest.mark.parametrize("method", ["linear", "ties", "dare_ties"])
def test_device_cpu_is_bit_identical_to_the_default(tiny_models, tmp_path, capsys, method) -> None:
    cfg = _config(method, tiny_models)
    default = _cli_merge(cfg, tmp_path / "default", capsys)
    cpu = _cli_merge(cfg, tmp_path / "cpu", capsys, "--device", "cpu")
    shards = _shard_bytes(default)
    assert shards and shards == _shard_bytes(cpu)
    if not HAS_CUDA:  # auto is the CPU here
        assert _shard_bytes(_cli_merge(cfg, tmp_path / "auto", capsys, "--device", "auto")) == shards


def tensors_of(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for p in sorted(Path(model_dir).glob("*.safetensors")) for k, v in load_file(str(p)).items()}


def test_engine_device_cpu_matches_no_device(tiny_models, tmp_path) -> None:
    from safemerge.merge import merge

    cfg = _config("ties", tiny_models, dtype="bfloat16")
    a = merge(cfg, tmp_path / "a", seed=3)
    b = merge(cfg, tmp_path / "b", seed=3, device="cpu", threads=2)
    ta, tb = tensors_of(a), tensors_of(b)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_cuda_with_a_lora_output_is_refused(tiny_models, tmp_path, capsys) -> None:
    import yaml

    cfg = _config("linear", tiny_models) | {"output": "lora"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(SystemExit) as ex:
        main(["merge", str(path), str(tmp_path / "o"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "output: lora recipe is factored on the CPU" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties", "dare_ties", "dare_linear"])
def test_cuda_merge_is_bit_identical_to_the_cpu(tiny_models, tmp_path, capsys, method) -> None:
    """fp32 elementwise math gives the same bits on both devices; TIES ranks entries with the GPU's argsort (only
    equal magnitudes at the density cut could differ: none in random fp32 deltas); DARE draws on the CPU."""
    cfg = _config(method, tiny_models)
    cpu = _cli_merge(cfg, tmp_path / "cpu", capsys)
    gpu = _cli_merge(cfg, tmp_path / "gpu", capsys, "--device", "cuda")
    assert _shard_bytes(cpu) == _shard_bytes(gpu)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
@pytest.mark.parametrize("method", ["linear", "task_arithmetic"])
def test_cuda_merge_matches_mergekit_cuda(tiny_models, tmp_path, capsys, method) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge
    from safetensors.torch import load_file

    cfg = _config(method, tiny_models)
    ours = _cli_merge(cfg, tmp_path / "ours", capsys, "--device", "cuda")
    theirs = tmp_path / "theirs"
    run_merge(MergeConfiguration.model_validate(cfg), str(theirs),
              MergeOptions(cuda=True, copy_tokenizer=False, quiet=True, lazy_unpickle=False))
    mine = {k: v for p in ours.glob("*.safetensors") for k, v in load_file(str(p)).items()}
    ref = {k: v for p in theirs.glob("*.safetensors") for k, v in load_file(str(p)).items()}
    assert mine.keys() == ref.keys()
    bad = [k for k in mine if not torch.equal(mine[k], ref[k])]
    assert not bad, bad[:5]
