"""Training on the resolved device: TRL arguments for the CPU and for CUDA, the load dtype, the cache key (the
device is no part of it, a non-fp32 dtype is), and `safemerge train sft --device cpu` end to end."""

from __future__ import annotations

import json

import pytest
import torch

from safemerge.cli import main
from safemerge.train.cache import run_key
from safemerge.train.config import DPOConfig, SFTConfig, load_dtype, trl_device_args
from safemerge.train.data import load_train_data, resolve_model
from safemerge.utils.device import Placement

HAS_CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("dtype", ["auto", "float32", "bfloat16"])
@pytest.mark.parametrize("cls", [SFTConfig, DPOConfig], ids=lambda c: c.__name__)
def test_cpu_arguments_build_real_trl_configs(cls, dtype, tmp_path) -> None:
    import trl

    cfg = cls(device="cpu", dtype=dtype)
    kwargs = cfg.trl_common()
    assert kwargs["use_cpu"] and not kwargs["fp16"] and not kwargs["activation_checkpointing"]
    trl_cls = trl.SFTConfig if cls is SFTConfig else trl.DPOConfig
    args = trl_cls(output_dir=str(tmp_path), **kwargs)
    assert args.use_cpu and args.device.type == "cpu"
    assert args.bf16 is (dtype == "bfloat16") and args.fp16 is False
    assert args.activation_checkpointing is False and args.gradient_checkpointing is False
    assert load_dtype(cfg.placement()) == (torch.bfloat16 if dtype == "bfloat16" else torch.float32)


def test_cuda_arguments() -> None:
    """What a CUDA run passes to TRL (TrainingArguments refuses bf16 on a machine without a GPU, so the dict is
    checked here and the real object in test_cuda_arguments_build_real_trl_configs on a GPU)."""
    bf16 = trl_device_args(Placement("cuda", "bfloat16"))
    assert bf16 == {"use_cpu": False, "bf16": True, "fp16": False, "gradient_checkpointing": True,
                    "activation_checkpointing": True, "activation_checkpointing_kwargs": {"use_reentrant": False}}
    assert load_dtype(Placement("cuda", "bfloat16")) is torch.bfloat16
    fp16 = trl_device_args(Placement("cuda:1", "float16"))
    assert fp16["fp16"] and not fp16["bf16"] and not fp16["use_cpu"] and fp16["activation_checkpointing"]
    assert load_dtype(Placement("cuda", "float16")) is torch.float32  # AMP: the grad scaler needs fp32 weights
    tf32 = trl_device_args(Placement("cuda", "tf32"))
    assert tf32["tf32"] and not tf32["bf16"] and not tf32["fp16"]
    assert "tf32" not in bf16 and "tf32" not in trl_device_args(Placement("cpu", "float32"))
    common = SFTConfig(lr=1e-4).trl_common(Placement("cuda", "bfloat16"))
    assert common["bf16"] and not common["use_cpu"] and common["learning_rate"] == 1e-4
    assert common["report_to"] == "none" and common["seed"] == 0


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
@pytest.mark.parametrize("cls", [SFTConfig, DPOConfig], ids=lambda c: c.__name__)
def test_cuda_arguments_build_real_trl_configs(cls, tmp_path) -> None:
    import trl

    cfg = cls(device="cuda")
    args = (trl.SFTConfig if cls is SFTConfig else trl.DPOConfig)(output_dir=str(tmp_path), **cfg.trl_common())
    assert args.device.type == "cuda" and not args.use_cpu and args.activation_checkpointing
    assert args.bf16 is (cfg.placement().dtype == "bfloat16")


def test_device_is_not_in_the_cache_key_but_a_non_fp32_dtype_is(tiny_models, train_files) -> None:
    ref = resolve_model(tiny_models["base"])
    data = load_train_data(train_files["sft"], "sft")
    cpu = Placement("cpu", "float32")
    keys = {run_key("sft", ref, data, SFTConfig(**kw), cpu) for kw in ({}, {"device": "cpu"},
                                                                        {"device": "cpu", "dtype": "fp32"})}
    assert len(keys) == 1
    assert run_key("sft", ref, data, SFTConfig(device="cuda"), Placement("cuda", "float32")) in keys
    bf16 = run_key("sft", ref, data, SFTConfig(dtype="bf16"), Placement("cpu", "bfloat16"))
    assert bf16 not in keys
    assert run_key("sft", ref, data, SFTConfig(), Placement("cuda", "bfloat16")) == bf16


def _train(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as ex:
        main(argv)
    out = capsys.readouterr()
    assert ex.value.code == 0, out.err
    return out.out


@pytest.mark.slow
def test_train_sft_device_cpu_end_to_end(tiny_models, train_files, tmp_path, capsys) -> None:
    """`--device cpu` trains on the CPU in fp32, records it, and is the same run as no flag (a cache hit)."""
    from safemerge.train import train_sft

    out = tmp_path / "run"
    argv = ["train", "sft", "-m", str(tiny_models["base"]), "-d", str(train_files["sft"]), "-o", str(out),
            "--max-steps", "2", "--batch-size", "4", "--threads", "1"]
    assert "device: cpu, dtype: float32" in _train(argv + ["--device", "cpu"], capsys)
    meta = json.loads((out / "train_config.json").read_text())
    assert meta["placement"] == {"device": "cpu", "dtype": "float32", "fp32": True} and meta["steps"] == 2
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    again = train_sft(tiny_models["base"], train_files["sft"], out,
                      SFTConfig(max_steps=2, batch_size=4, threads=1))  # device auto (= cpu here): cached
    assert again == out and (out / "model.safetensors").stat().st_mtime_ns == stamp

    bf16 = tmp_path / "bf16"
    _train(["train", "sft", "-m", str(tiny_models["base"]), "-d", str(train_files["sft"]), "-o", str(bf16),
            "--max-steps", "1", "--batch-size", "4", "--threads", "1", "--device", "cpu", "--dtype", "bf16"], capsys)
    meta = json.loads((bf16 / "train_config.json").read_text())
    assert meta["placement"]["dtype"] == "bfloat16" and meta["placement"]["fp32"] is False
    assert meta["cache_key"] != json.loads((out / "train_config.json").read_text())["cache_key"]
    assert json.loads((bf16 / "config.json").read_text())["dtype"] == "bfloat16"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_train_sft_and_dpo_on_cuda(tiny_models, train_files, tmp_path) -> None:
    """A short SFT then DPO run on the GPU (bf16 where supported, activation checkpointing on, LoRA and full)."""
    import math

    from safemerge.train import LoraSettings, train_dpo, train_sft
    from safemerge.train.cache import TRAIN_CONFIG

    sft = train_sft(tiny_models["base"], train_files["sft"], tmp_path / "sft",
                    SFTConfig(device="cuda", max_steps=3, batch_size=4, lr=1e-3))
    lora = train_sft(tiny_models["base"], train_files["sft"], tmp_path / "lora",
                     SFTConfig(device="cuda", max_steps=3, batch_size=4, lr=1e-3, lora=LoraSettings(r=4)))
    dpo = train_dpo(sft, train_files["dpo"], tmp_path / "dpo", DPOConfig(device="cuda", max_steps=2, batch_size=4))
    for run in (sft, lora, dpo):
        meta = json.loads((run / TRAIN_CONFIG).read_text())
        assert meta["placement"]["device"] == "cuda" and meta["steps"] >= 2
        assert math.isfinite(meta["final_loss"])
