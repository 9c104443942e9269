"""The one device setting (`safemerge.utils.device`): names, the dtype policy, one-line errors naming the flag,
and `--device` on every command (CUDA asked for on a machine without one is one line, exit 2)."""

from __future__ import annotations

import pytest
import torch

from safemerge.cli import main
from safemerge.errors import ConfigError
from safemerge.utils.device import (
    Placement,
    check_device_name,
    check_dtype_name,
    matmul_precision,
    release_cuda_memory,
    resolve,
    resolve_device,
    resolve_dtype,
    torch_dtype,
)

HAS_CUDA = torch.cuda.is_available()
cpu_only = pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA device (the error needs one without)")


def test_auto_is_cuda_exactly_when_torch_sees_one() -> None:
    assert resolve_device("auto") == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device(" CPU ") == "cpu"


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "cuda0", "mps", "", "cpu:0"])
def test_unknown_device_names_are_one_line(bad: str) -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_device(bad or " ", "--device")
    msg = str(exc.value)
    assert msg.startswith("--device") and "choose auto, cpu, cuda or cuda:N" in msg and "\n" not in msg


@cpu_only
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3", "CUDA"])
def test_cuda_without_cuda_is_one_line_naming_the_flag(name: str) -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_device(name, "--device")
    msg = str(exc.value)
    assert msg.startswith(f"--device {name.lower()}: torch sees no CUDA device") and "--device cpu" in msg
    assert "\n" not in msg


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_cuda_index_past_the_last_device_is_refused() -> None:
    n = torch.cuda.device_count()
    assert resolve_device(f"cuda:{n - 1}") == f"cuda:{n - 1}"
    with pytest.raises(ConfigError, match=f"only {n} CUDA device"):
        resolve_device(f"cuda:{n}")


def test_dtype_policy_on_the_cpu() -> None:
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype(None, "cpu") == "float32"
    for alias, name in (("bf16", "bfloat16"), ("FP32", "float32"), ("bfloat16", "bfloat16"), ("fp16", "float16")):
        assert check_dtype_name(alias) == name
    assert resolve_dtype("bf16", "cpu") == "bfloat16"  # explicit bf16 on the CPU is allowed (slow, but it runs)
    for cuda_only in ("float16", "tf32"):
        with pytest.raises(ConfigError, match=f"--dtype {cuda_only} needs a CUDA device"):
            resolve_dtype(cuda_only, "cpu")
    with pytest.raises(ConfigError, match="unknown dtype; choose auto, float32, bfloat16, float16, tf32"):
        resolve_dtype("int8", "cpu")
    assert torch_dtype("tf32") is torch.float32 and torch_dtype("bf16") is torch.bfloat16


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_dtype_policy_on_cuda() -> None:
    want = "bfloat16" if torch.cuda.get_device_capability()[0] >= 8 else "float32"
    assert resolve_dtype("auto", "cuda") == want
    assert resolve("auto", "auto") == Placement("cuda", want)
    assert resolve_dtype("tf32", "cuda") == "tf32"


def test_placement_record_marks_non_fp32_results() -> None:
    assert resolve("cpu", "auto").record() == {"device": "cpu", "dtype": "float32", "fp32": True}
    bf16 = resolve("cpu", "bf16")
    assert bf16.record() == {"device": "cpu", "dtype": "bfloat16", "fp32": False}
    assert bf16.torch_dtype is torch.bfloat16 and not bf16.cuda
    assert Placement("cuda:1", "tf32").cuda and not Placement("cuda:1", "tf32").exact_fp32


def test_check_device_name_is_syntax_only() -> None:
    assert check_device_name("CUDA:1") == "cuda:1"  # no CUDA needed: Ray workers resolve it on their node


def test_matmul_precision_restores_the_setting() -> None:
    before = torch.backends.cuda.matmul.allow_tf32
    with matmul_precision("tf32"):
        assert torch.backends.cuda.matmul.allow_tf32 is True
        with matmul_precision("float32"):
            assert torch.backends.cuda.matmul.allow_tf32 is False
        assert torch.backends.cuda.matmul.allow_tf32 is True
    assert torch.backends.cuda.matmul.allow_tf32 == before


def test_release_cuda_memory_runs_anywhere() -> None:
    release_cuda_memory()  # gc + (on CUDA) empty_cache; never imports vLLM
    import sys

    assert "vllm" not in sys.modules or HAS_CUDA


# ---- every command takes --device (and refuses CUDA it does not have, in one line) ---------------------------


def _one_line_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as ex:
        main(argv)
    err = capsys.readouterr().err
    assert ex.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as ex:
        main(argv + ["--help"])
    assert ex.value.code == 0
    return capsys.readouterr().out


COMMANDS = (["train", "sft"], ["train", "dpo"], ["train", "recipe", "mixture"], ["train", "recipe", "all"],
            ["eval"], ["serve"], ["search"], ["merge"])


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_command_documents_device(cmd, capsys) -> None:
    out = _help(cmd, capsys)
    assert "--device" in out
    if cmd != ["merge"]:  # merge's dtype is the recipe's `dtype:` (mergekit semantics)
        assert "--dtype" in out


@cpu_only
def test_cuda_flags_without_cuda_are_one_line_errors(tiny_models, tmp_path, capsys) -> None:
    import json

    model = str(tiny_models["a"])
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "completion": "hello"}) + "\n")
    cfg = tmp_path / "m.yaml"
    cfg.write_text(f"merge_method: linear\nmodels:\n  - model: {model}\n    parameters: {{weight: 1.0}}\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"pool: [{{name: a, model: {model}}}, {{name: b, model: {tiny_models['b']}}}]\nmethod: linear\n"
                    f"objective: {{domain: {data}}}\n")
    for argv in (["train", "sft", "-m", model, "-d", str(data), "-o", str(tmp_path / "t"), "--device", "cuda"],
                 ["train", "recipe", "mixture", "-o", str(tmp_path / "r"), "--device", "cuda"],
                 ["eval", model, "--device", "cuda"],
                 ["serve", model, "--device", "cuda:0"],
                 ["search", str(spec), "--out", str(tmp_path / "s"), "--device", "cuda"],
                 ["merge", str(cfg), str(tmp_path / "m"), "--device", "cuda"]):
        err = _one_line_error(argv, capsys)
        assert "--device cuda" in err and "torch sees no CUDA device" in err, (argv, err)
    assert not any((tmp_path / n).exists() for n in ("t", "r", "s", "m"))
    err = _one_line_error(["eval", model, "--device", "cpu", "--dtype", "tf32"], capsys)
    assert "--dtype tf32 needs a CUDA device" in err
    err = _one_line_error(["merge", str(cfg), str(tmp_path / "m"), "--device", "gpu"], capsys)
    assert "--device 'gpu': unknown device" in err
