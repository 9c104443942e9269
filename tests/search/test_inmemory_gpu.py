"""The resident model on a GPU: candidates merged on the device equal the CPU engine's merge, and scoring there gives
the CPU's losses. Skipped where torch sees no CUDA device (CI); run on a GPU machine with
``pytest -m gpu`` (every GPU test).
"""

from __future__ import annotations

import pytest
import torch

from safemerge.evaluate.loss import answer_loss, tokenize_records
from safemerge.merge import merge_state_dicts
from safemerge.search.inmemory import ResidentModel

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.fixture(scope="module")
def residents(tiny_models) -> dict[str, ResidentModel]:
    paths = {k: str(v) for k, v in tiny_models.items()}
    return {dev: ResidentModel(paths, model_from=paths["a"], device=dev) for dev in ("cpu", "cuda")}


def configs() -> list[dict]:
    models = (("a", 0.4, 0.3), ("b", 0.9, 0.7))
    out = []
    for method in ("ties", "dare_ties", "linear"):
        params = [{"weight": w} | ({"density": d} if method != "linear" else {}) for _, w, d in models]
        cfg = {"merge_method": method, "dtype": "float32",
               "models": [{"model": m, "parameters": p} for (m, _, _), p in zip(models, params)]}
        if method != "linear":
            cfg["base_model"] = "base"
        out.append(cfg)
    return out


@pytest.mark.parametrize("cfg", configs(), ids=lambda c: c["merge_method"])
def test_gpu_merge_is_the_cpu_engines_merge(residents, cfg) -> None:
    """Elementwise math is exact on both devices; TIES ranks come from the GPU's argsort, which can only differ on
    entries of equal magnitude at the density cut (none in these random fp32 deltas); DARE draws on the CPU."""
    gpu = residents["cuda"]
    gpu.load_merge(cfg, seed=3)
    want = merge_state_dicts(cfg, residents["cpu"].state_dicts, seed=3)
    for name, p in gpu.model.named_parameters():
        assert p.device.type == "cuda"
        assert torch.equal(p.detach().cpu(), want[name]), (cfg["merge_method"], name)


def test_gpu_slerp_and_scoring_match_the_cpu(residents) -> None:
    cfg = {"merge_method": "slerp", "base_model": "a", "dtype": "float32", "models": [{"model": "b"}],
           "parameters": {"t": [0.2, 0.8]}}
    losses = {}
    for dev, r in residents.items():
        r.load_merge(cfg)
        rows = [{"prompt": f"question {i}: where is the fox?", "completion": f"the fox {i} ." * (1 + i % 3)}
                for i in range(12)]
        losses[dev] = answer_loss(r.model, r.tokenizer, tokenize_records(r.tokenizer, rows), batch_size=5)
    cpu = dict(residents["cpu"].model.named_parameters())
    for name, p in residents["cuda"].model.named_parameters():  # norms/dots reduce in another order on the GPU
        torch.testing.assert_close(p.detach().cpu(), cpu[name].detach(), rtol=1e-5, atol=1e-6)
    assert losses["cuda"] == pytest.approx(losses["cpu"], abs=1e-4)
