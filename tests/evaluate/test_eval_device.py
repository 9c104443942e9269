"""Evaluation on the resolved device: model loading in the dtype policy, batched generation, the vLLM path kept
lazy (and torn down per model), `safemerge eval --device cpu` / `serve --device cpu` end to end."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import pytest
import torch

from safemerge.cli import main
from safemerge.evaluate.generate import (
    GenerationSettings,
    _stop_ids,
    generate,
    load_model,
    release_vllm,
    vllm_available,
)
from safemerge.utils.device import Placement, resolve
from tests.netutil import free_port, wait_for

HAS_CUDA = torch.cuda.is_available()


def test_load_model_follows_the_dtype_policy(tiny_models) -> None:
    auto = load_model(tiny_models["a"])
    want = resolve("auto", "auto")
    p = next(auto.model.parameters())
    assert p.device.type == want.device.split(":")[0] and p.dtype == want.torch_dtype
    bf16 = load_model(tiny_models["a"], device="cpu", dtype="bf16")
    assert {t.dtype for t in bf16.model.parameters()} == {torch.bfloat16}
    answers = generate(bf16.model, bf16.tokenizer, ["the quick brown fox", "a b c"],
                       GenerationSettings(max_new_tokens=4, batch_size=2), progress=False)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_vllm_is_never_imported_for_the_cpu(tiny_models) -> None:
    assert vllm_available("cpu") is False
    if not HAS_CUDA:
        assert vllm_available() is False
        assert "vllm" not in sys.modules
    release_vllm({})  # nothing to tear down: only gc + the CUDA cache release run
    holder = {"llm": object()}  # an engine without llm_engine (what a failed start leaves): dropped all the same
    release_vllm(holder)
    assert holder == {}
    if not HAS_CUDA:
        assert "vllm" not in sys.modules or sys.modules["vllm"] is None


def test_stop_ids_come_from_the_model_files(tiny_models, tmp_path) -> None:
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_models["a"], d)
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [5, 7]}))
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(cfg | {"eos_token_id": 9}))
    assert _stop_ids(d) == [5, 7, 9]


def test_eval_source_is_the_directory_only_for_the_default_placement(tiny_models) -> None:
    from safemerge.evaluate.generate import LoadedModel, answer_cache_root, generator_name, model_source

    path = tiny_models["a"]
    assert model_source(path, resolve("auto", "auto")) == path  # loaded lazily by the harness (none on a cache hit)
    loaded = model_source(path, Placement("cpu", "bfloat16"))
    assert isinstance(loaded, LoadedModel) and loaded.path == path
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert generator_name(loaded) == "transformers"
    assert answer_cache_root(Placement("cpu", "float32")) is None
    assert answer_cache_root(Placement("cpu", "bfloat16")).name == "eval-bfloat16"


@pytest.mark.slow
def test_eval_cli_device_cpu(tiny_models, eval_suite, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SAFEMERGE_CACHE", str(tmp_path / "cache"))
    base = ["eval", str(tiny_models["a"]), "--suite", str(eval_suite), "--langs", "en", "--limit", "1",
            "--n-boot", "10", "--device", "cpu"]
    runs = {}
    for dtype in ("auto", "bf16"):
        with pytest.raises(SystemExit) as ex:
            main(base + ["--dtype", dtype, "--out", str(tmp_path / dtype)])
        assert ex.value.code == 0, capsys.readouterr().err
        runs[dtype] = json.loads((tmp_path / dtype / "results.json").read_text())
    assert runs["auto"]["meta"]["placement"] == {"device": "cpu", "dtype": "float32", "fp32": True,
                                                 "generator": "transformers"}
    assert runs["bf16"]["meta"]["placement"]["dtype"] == "bfloat16"
    assert runs["bf16"]["meta"]["generated"] > 0  # not served from the fp32 run's answer cache
    assert (tmp_path / "cache" / "eval-bfloat16").is_dir()


@pytest.mark.slow
def test_serve_cli_device_cpu(tiny_models) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "safemerge.cli", "serve", str(tiny_models["a"]), "--port",
                             str(port), "--name", "tiny", "--device", "cpu", "--dtype", "float32"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def chat() -> tuple[http.client.HTTPResponse, dict]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            body = json.dumps({"model": "tiny", "max_tokens": 3, "temperature": 0,
                               "messages": [{"role": "user", "content": "the quick brown fox"}]})
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp, json.loads(resp.read())

        resp, payload = wait_for(proc, chat, "server")
        assert resp.status == 200 and isinstance(payload["choices"][0]["message"]["content"], str)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "on cpu (float32)" in out


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_batched_generation_on_cuda_matches_the_cpu(tiny_models) -> None:
    prompts = [f"the quick brown fox {i}" for i in range(24)]
    settings = GenerationSettings(max_new_tokens=8, batch_size=8)
    answers = {}
    for dev in ("cpu", "cuda"):
        lm = load_model(tiny_models["a"], device=dev, dtype="float32")
        assert next(lm.model.parameters()).device.type == dev
        answers[dev] = generate(lm.model, lm.tokenizer, prompts, settings, progress=False)
    same = sum(a == b for a, b in zip(answers["cpu"], answers["cuda"]))
    assert same >= 0.9 * len(prompts), (answers["cpu"][:3], answers["cuda"][:3])
    bf16 = load_model(tiny_models["a"], device="cuda")  # auto: bf16 on Ampere+
    assert len(generate(bf16.model, bf16.tokenizer, prompts, settings, progress=False)) == len(prompts)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_vllm_answers_have_the_same_structure_and_free_the_gpu(tiny_models) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed")
    from safemerge.evaluate.generate import generate_vllm

    prompts = [f"the quick brown fox {i}" for i in range(16)]
    settings = GenerationSettings(max_new_tokens=8)
    lm = load_model(tiny_models["a"], device="cuda", dtype="bfloat16")
    hf = generate(lm.model, lm.tokenizer, prompts, settings, progress=False)
    del lm
    before = torch.cuda.mem_get_info()[0]
    for _ in range(2):  # one engine per model, torn down in between: a second engine starts
        got = generate_vllm(tiny_models["a"], prompts, settings, dtype="bfloat16",
                            engine_options={"gpu_memory_utilization": 0.3, "enforce_eager": True})
        assert len(got) == len(hf) and all(isinstance(a, str) for a in got)
    assert torch.cuda.mem_get_info()[0] >= before - (1 << 30)  # the engines' memory came back
