"""bench/gpu_check.sh: the prepared GPU check runs end to end on the CPU (--dry-run, tiny shapes) and reports every
part; its report replaces only its own section of bench/RESULTS.md and shows OOMs and failures."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _result(**over) -> dict:
    base = {"card": "NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04", "dry_run": False, "date": "2026-12-06 10:00",
            "python": "3.12.3", "torch": "2.11.0+cu130", "cuda": "13.0", "packages": {"trl": "1.16.0"},
            "missing": [], "plan": _module().plan(False), "total_s": 400.0,
            "tests": {"files": 6, "summary": "19 passed, 2 skipped in 50s", "failed": []},
            "build": {"status": "ok", "params": 3_212_749_824, "gib_per_model": 5.98, "build_s": 2.0, "save_s": 40.0},
            "merge": [{"method": "linear", "safemerge": {"status": "ok", "seconds": 20.0, "rss_mib": 900.0,
                                                         "gpu_mib": 2000.0},
                       "mergekit": {"status": "failed (exit 1): boom", "seconds": 3.0}, "output": "-"}],
            "train_lora": {"status": "ok", "dtype": "bfloat16", "trainable": 41_943_040, "step_s": 0.8,
                           "first_step_s": 3.0, "tokens_per_s": 5000.0, "peak_gib": 30.1},
            "train_full": {"status": "OOM", "peak_gib": 77.9},
            "search": {"status": "timeout after 60 s"},
            "generate_hf": {"status": "ok", "seconds": 30.0, "tokens_per_s": 2184.5},
            "generate_vllm": {"status": "skipped: vLLM is not installed"}}
    return base | over


def test_report_names_the_card_and_shows_failures() -> None:
    md = _module().markdown(_result(), "cuda")
    assert "Card: **NVIDIA H100 80GB HBM3" in md
    assert "| full | OOM |" in md and "77.9" in md
    assert "| linear | 20.0 | failed (exit 1): boom |" in md
    assert "search: timeout after 60 s" in md and "skipped: vLLM is not installed" in md
    assert "19 passed, 2 skipped" in md and "3,212.7 M parameters" in md


def test_results_section_is_replaced_in_place(tmp_path) -> None:
    mod = _module()
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nintro\n\n## Later section\n\ntext\n")
    mod.update_results(path, mod.markdown(_result(), "cuda"))
    first = path.read_text()
    assert first.startswith("# Results\n\nintro\n") and first.count(mod.MARK_START) == 1
    mod.update_results(path, mod.markdown(_result(card="NVIDIA H200"), "cuda"))
    second = path.read_text()
    assert second.count(mod.MARK_START) == 1 and "NVIDIA H200" in second and "H100" not in second
    assert "## Later section" in second


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path) -> None:
    results = ROOT / "bench" / "RESULTS.md"
    before = results.read_bytes()
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path / "out"),
                           "--work", str(tmp_path / "work")], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert res["dry_run"] and res["missing"] == [] and "CPU dry run" in res["card"]
    assert "skipped" in res["tests"]["summary"] and not res["tests"]["failed"]
    assert res["build"]["status"] == "ok"
    assert [r["method"] for r in res["merge"]] == ["linear", "ties", "dare_ties"]
    for row in res["merge"]:
        assert row["safemerge"]["status"] == "ok" and row["safemerge"]["rss_mib"] > 0
        assert row["mergekit"]["status"] == "ok"
    assert [res["merge"][0]["output"], res["merge"][1]["output"]] == ["bit-identical", "bit-identical"]
    for key in ("train_lora", "train_full"):
        assert res[key]["status"] == "ok" and res[key]["tokens_per_s"] > 0 and res[key]["device"] == "cpu"
    assert res["train_lora"]["trainable"] < res["train_full"]["trainable"]
    s = res["search"]
    assert s["status"] == "ok" and s["examples"] == 400 and len(s["merge_s"]) == len(s["score_s"]) == 2
    assert res["generate_hf"]["status"] == "ok" and res["generate_hf"]["answers"] == 16
    assert res["generate_vllm"]["status"].startswith("skipped")
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "--dry-run, CPU, tiny shapes" in md and "| linear |" in md and "| full | ok |" in md
    assert results.read_bytes() == before  # a dry run never writes bench/RESULTS.md
    assert not (tmp_path / "work" / "models").exists()
