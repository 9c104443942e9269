"""Where candidates are scored (`--device` / `--dtype`): recorded in the search's files, resumed only in the same
dtype, bf16 scoring close to fp32 but marked as not fp32, and each Ray worker's share of the cluster's GPUs."""

from __future__ import annotations

import json

import pytest
import torch

from safemerge.errors import ConfigError, InputError
from safemerge.search.parallel import LocalEvaluator, worker_gpus
from safemerge.search.runner import prepare, run_search

from search_helpers import make_spec

HAS_CUDA = torch.cuda.is_available()
RANDOM3 = {"name": "random", "budget": 3, "seed": 0}


def test_scoring_is_recorded_and_resumed_only_in_its_dtype(tiny_models, objective_files, tmp_path) -> None:
    spec = make_spec(tiny_models, objective_files, optimizer=RANDOM3)
    out = tmp_path / "s"
    part = run_search(spec, out, show_progress=False, stop_after=1, device="cpu")
    assert len(part.records) == 1
    state = json.loads((out / "state.json").read_text())
    assert state["scoring"] == {"device": "cpu", "dtype": "float32", "fp32": True}
    with pytest.raises(InputError, match="scored in float32 and would now be scored in bfloat16; resume it with "
                                         "--dtype float32"):
        run_search(spec, out, show_progress=False, resume=True, device="cpu", dtype="bf16")
    done = run_search(spec, out, show_progress=False, resume=True)  # defaults: auto (= the CPU here), float32
    assert len(done.records) == 3
    result = json.loads((out / "result.json").read_text())
    assert result["scoring"]["dtype"] == "float32" and result["scoring"]["fp32"] is True


def test_bf16_scoring_is_close_to_fp32_and_marked(tiny_models, objective_files) -> None:
    prep = prepare(make_spec(tiny_models, objective_files))
    fp32 = LocalEvaluator(prep.spec, prep.safety, prep.domain, "cpu", "float32")
    bf16 = LocalEvaluator(prep.spec, prep.safety, prep.domain, "cpu", "bfloat16")
    assert fp32.scoring()["fp32"] and not bf16.scoring()["fp32"]
    assert {p.dtype for p in bf16.resident.model.parameters()} == {torch.bfloat16}
    cfg = {"merge_method": "ties", "base_model": "__base__", "dtype": "float32",
           "models": [{"model": "a", "parameters": {"weight": 0.6, "density": 0.5}},
                      {"model": "b", "parameters": {"weight": 0.4, "density": 0.7}}]}
    (a, _), = fp32.evaluate([(0, cfg, 1)])
    (b, _), = bf16.evaluate([(0, cfg, 1)])
    for part in ("safety", "domain"):
        assert b[part]["all"] == pytest.approx(a[part]["all"], abs=0.05)
        assert b[part]["all"] != a[part]["all"]  # bf16 is not fp32: the record says so


def test_worker_gpu_shares() -> None:
    assert worker_gpus("cpu", 8, 2) == 0.0
    assert worker_gpus("auto", 0, 2) == 0.0
    assert worker_gpus("auto", 1, 4) == 0.25  # four workers share one GPU
    assert worker_gpus("cuda", 4, 2) == 1.0  # at most one GPU each
    with pytest.raises(ConfigError, match="--device cuda: the Ray cluster at 10.0.0.1:6379 has no GPU"):
        worker_gpus("cuda", 0, 2, "10.0.0.1:6379")


@pytest.mark.slow
def test_search_cli_device_cpu(tiny_models, objective_files, tmp_path, capsys) -> None:
    import yaml

    from safemerge.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(make_spec(tiny_models, objective_files, optimizer=RANDOM3)))
    with pytest.raises(SystemExit) as ex:
        main(["search", str(spec), "--out", str(tmp_path / "o"), "--device", "cpu", "--quiet"])
    out = capsys.readouterr()
    assert ex.value.code in (0, None), out.err
    assert "scored on cpu in float32" in out.out
    assert json.loads((tmp_path / "o" / "result.json").read_text())["scoring"]["device"] == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_cuda_scoring_fp32_matches_the_cpu_and_bf16_is_marked(tiny_models, objective_files) -> None:
    prep = prepare(make_spec(tiny_models, objective_files))
    cfg = {"merge_method": "linear", "dtype": "float32",
           "models": [{"model": "a", "parameters": {"weight": 0.6}}, {"model": "b", "parameters": {"weight": 0.4}}]}
    got = {}
    for dev, dtype in (("cpu", "float32"), ("cuda", "float32"), ("cuda", "bfloat16"), ("cuda", "tf32")):
        ev = LocalEvaluator(prep.spec, prep.safety, prep.domain, dev, dtype)
        assert ev.scoring()["fp32"] is (dtype == "float32")
        assert next(ev.resident.model.parameters()).device.type == dev
        got[dev, dtype] = ev.evaluate([(0, cfg, 0)])[0][0]
    for key in (("cuda", "float32"), ("cuda", "tf32"), ("cuda", "bfloat16")):
        tol = 1e-4 if key[1] == "float32" else 0.05
        for part in ("safety", "domain"):
            assert got[key][part]["all"] == pytest.approx(got["cpu", "float32"][part]["all"], abs=tol), key
