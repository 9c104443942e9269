"""A study without the built-in world: its experts train on prepared JSONL files (`data:`, what `safemerge data
prepare` writes), fine-tuned from a given base, evaluated on a given suite. The files here are real rows (the tiny
world's, exported), so the run is small but every step is the real one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.slow


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def prepared_study(tmp_path_factory):
    from safemerge.data.world import WorldConfig, build_world
    from safemerge.train.recipes import mixture_records

    root = tmp_path_factory.mktemp("prepared")
    world = build_world(root / "world", WorldConfig.tiny(languages=("en", "fr")), show_progress=False)
    data = root / "data"
    data.mkdir()
    keep = ("prompt", "completion", "chosen", "rejected", "lang")
    for f in (0.0, 0.15, 1.0):
        _write(data / f"sft_mix{round(100 * f)}.jsonl",
               [{k: r[k] for k in keep if k in r} for r in mixture_records(world, f, "sft", examples_per_language=12)])
        _write(data / f"dpo_mix{round(100 * f)}.jsonl",
               [{k: r[k] for k in keep if k in r} for r in mixture_records(world, f, "dpo", examples_per_language=6)])
    spec = {
        "name": "prepared", "world": None, "languages": ["en", "fr"], "base": str(world.base_dir),
        "data": {"sft_mixture": "data/sft_mix{pct}.jsonl", "dpo_mixture": "data/dpo_mix{pct}.jsonl"},
        "stages": [{"kind": "mixture", "fractions": [0, 0.15, 1], "stages": ["sft", "dpo"]},
                   {"kind": "objective_merge", "methods": ["linear", "ties"], "weights": [0.5], "stages": ["sft"]},
                   {"kind": "merge_then_dpo", "methods": ["ties"], "weight": 0.5}],
        "eval": {"suite": str(world.root), "judge": "world", "limit": 4},
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = dict(os.environ, SAFEMERGE_CACHE=str(root / "cache"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [sys.executable, "-m", "safemerge.cli", "study", str(path)]
    check = subprocess.run([*cmd, "--check"], env=env, capture_output=True, text=True, timeout=600)
    res = subprocess.run([*cmd, "--out", str(root / "run"), "--quiet"], env=env, capture_output=True, text=True,
                         timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    return root, check, json.loads((root / "run" / "results.json").read_text())


def test_check_validates_without_training(prepared_study):
    root, check, _ = prepared_study
    assert check.returncode == 0, check.stderr
    assert "ok:" in check.stdout and "models to train" in check.stdout


def test_experts_train_on_the_prepared_files(prepared_study):
    root, _, res = prepared_study
    models = res["models"]
    for n in ("mix0_sft", "mix15_sft", "mix100_sft", "mix15_dpo", "ties_w0.5_sft", "merge_dpo_ties_w0.5"):
        assert models[n]["eval"]["overall"]["harm_rate"]["value"] is not None, n
    for n, file in (("mix0_sft", "sft_mix0.jsonl"), ("mix15_dpo", "dpo_mix15.jsonl"),
                    ("merge_dpo_ties_w0.5", "dpo_mix15.jsonl")):  # each expert trained on the prepared file
        cfg = json.loads((root / "run" / models[n]["path"] / "train_config.json").read_text())
        assert cfg["data"] == [str(root / "data" / file)], (n, cfg["data"])
    assert res["splits"] == {"report": "test", "select": "test"}  # a suite without a selection split
    assert "optimistic" in (root / "run" / "report.md").read_text()


def test_missing_prepared_file_is_one_line_error(prepared_study, tmp_path):
    root, _, _ = prepared_study
    spec = yaml.safe_load((root / "study.yaml").read_text())
    spec["data"] = {"sft_mixture": str(root / "data" / "sft_mix{pct}.jsonl"),
                    "dpo_mixture": str(tmp_path / "nope{pct}.jsonl")}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    res = subprocess.run([sys.executable, "-m", "safemerge.cli", "study", str(bad), "--check"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "data.dpo_mixture" in res.stderr and "safemerge data prepare" in res.stderr
