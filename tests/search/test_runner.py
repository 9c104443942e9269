"""The search loop on real tiny checkpoints: resumption, the written config, validation before loading, CLI."""

from __future__ import annotations

import json

import pytest
import yaml

from safemerge.errors import ConfigError, InputError
from safemerge.search.runner import prepare, run_search

from search_helpers import make_spec, write_jsonl


def _losses(records):
    return [(r["index"], round(r["loss"], 6)) for r in records]


CMA8 = {"name": "cma", "budget": 8, "popsize": 4, "seed": 0}


@pytest.fixture(scope="module")
def reference_run(tiny_models, objective_files, tmp_path_factory):
    """An uninterrupted CMA-ES search (2 generations of 4) that the resumption tests compare against."""
    spec = make_spec(tiny_models, objective_files, optimizer=CMA8)
    out = tmp_path_factory.mktemp("reference") / "full"
    return spec, run_search(spec, out, show_progress=False), out


@pytest.mark.slow
def test_stopped_search_resumes_to_the_same_result(reference_run, tiny_models, objective_files, tmp_path):
    spec, full, full_dir = reference_run
    assert len(full.records) == 8 and (full_dir / "best.yaml").is_file()

    part = run_search(spec, tmp_path / "part", show_progress=False, stop_after=5)
    assert len(part.records) == 5 and not (tmp_path / "part" / "best.yaml").exists()
    with pytest.raises(InputError, match="--resume"):
        run_search(spec, tmp_path / "part", show_progress=False)
    resumed = run_search(spec, tmp_path / "part", show_progress=False, resume=True)
    assert _losses(resumed.records) == _losses(full.records)
    assert resumed.best["index"] == full.best["index"]
    assert (tmp_path / "part" / "best.yaml").read_text() == (full_dir / "best.yaml").read_text()

    other = make_spec(tiny_models, objective_files, optimizer={**CMA8, "seed": 1})
    with pytest.raises(InputError, match="different spec"):
        run_search(other, tmp_path / "part", show_progress=False, resume=True)


@pytest.mark.slow
def test_best_config_merged_on_disk_scores_what_the_search_scored(tiny_models, objective_files, tmp_path):
    """best.yaml -> `safemerge merge` -> from_pretrained gives the loss recorded for the in-memory candidate."""
    import torch
    from mergekit.config import MergeConfiguration
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safemerge.evaluate.loss import answer_loss

    spec = make_spec(tiny_models, objective_files, optimizer={"name": "random", "budget": 3, "seed": 0},
                     output={"merge_best": True}, space={"params": ["weight", "density"], "layer_groups": 2})
    res = run_search(spec, tmp_path / "out", show_progress=False)
    cfg = yaml.safe_load(res.best_yaml.read_text())
    MergeConfiguration.model_validate(cfg)  # loadable by mergekit 0.1.5
    assert isinstance(cfg["models"][0]["parameters"]["weight"], list)
    model = AutoModelForCausalLM.from_pretrained(res.merged, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(res.merged)
    rows = [json.loads(line) for line in objective_files["safety"].read_text().splitlines()]
    assert answer_loss(model, tok, rows) == pytest.approx(res.best["safety"], abs=1e-5)
    assert json.loads((tmp_path / "out" / "result.json").read_text())["evaluations"] == 3


@pytest.mark.slow
def test_language_margin_marks_candidates_infeasible(tiny_models, objective_files, tmp_path):
    spec = make_spec(tiny_models, objective_files, optimizer={"name": "random", "budget": 4, "seed": 2})
    spec["objective"] = {**spec["objective"], "language_margin": 0.0}
    res = run_search(spec, tmp_path / "out", show_progress=False)
    ref = {lang: min(p["safety_by_lang"][lang] for p in res.pool.values()) for lang in ("en", "fr")}
    for r in res.records:
        worse = any(r["safety_by_lang"][lang] > ref[lang] + 1e-12 for lang in ref)
        assert r["feasible"] == (not worse)
        assert (r["loss"] > r["objective"] + 10) == worse


@pytest.mark.slow
def test_lm_cocktail_and_nsga2(tiny_models, objective_files, tmp_path):
    from safemerge.search.optimizers import cocktail_weights

    spec = make_spec(tiny_models, objective_files, space={"params": ["weight"], "model_fixed": {"density": 0.5}},
                     optimizer={"name": "lm_cocktail", "cocktail_examples": 4, "temperature": 5.0})
    res = run_search(spec, tmp_path / "cocktail", show_progress=False)
    assert len(res.records) == 1
    state_pool = res.records[0]["values"]
    assert sum(state_pool.values()) == pytest.approx(1.0, abs=1e-5)

    spec = make_spec(tiny_models, objective_files, optimizer={"name": "nsga2", "budget": 8, "popsize": 4})
    res = run_search(spec, tmp_path / "nsga", show_progress=False)
    assert len(res.records) == 8 and res.pareto
    pts = [(p["safety"], p["domain"]) for p in res.pareto]
    assert pts == sorted(pts) and all(b2 <= b1 for (_, b1), (_, b2) in zip(pts, pts[1:]))
    assert cocktail_weights([1.0, 1.0], 5.0) == [0.5, 0.5]


def test_problems_are_found_before_any_weight_is_loaded(tiny_models, objective_files, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "hi", "answer": "x"}])
    spec = make_spec(tiny_models, objective_files)
    spec["objective"] = {"domain": str(bad)}
    with pytest.raises(InputError, match=r"bad.jsonl:1: missing column\(s\) \['completion'\]"):
        prepare(spec)
    spec = make_spec(tiny_models, objective_files)
    spec["objective"] = {**spec["objective"], "language_margin": 0.1,
                         "safety": str(write_jsonl(tmp_path / "nolang.jsonl", [{"prompt": "a", "completion": "b"}]))}
    with pytest.raises(InputError, match="missing column 'lang'"):
        prepare(spec)
    prep = prepare(make_spec(tiny_models, objective_files))
    assert prep.num_layers == 2 and prep.space.dim == 4


def test_mismatched_architectures_are_rejected(tiny_models, objective_files, tmp_path):
    from safemerge.data.tiny import make_tiny_checkpoint

    other = make_tiny_checkpoint("llama", tmp_path / "wide", seed=3, hidden=32, intermediate=64)
    spec = make_spec({**tiny_models, "b": other}, objective_files)
    with pytest.raises(InputError, match=r"pool\.b: architecture differs from pool\.a \(hidden_size: 32 vs 64\)"):
        prepare(spec)


def test_cli_reports_user_errors_in_one_line(tiny_models, objective_files, tmp_path, capsys):
    from safemerge.cli import main

    spec = make_spec(tiny_models, objective_files, space={"params": ["t"]})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as bad:
        main(["search", str(path), "--out", str(tmp_path / "o")])
    assert bad.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: space.params: method 'ties' has no parameter 't'; its parameters are "
        "['density', 'int8_mask', 'lambda', 'normalize', 'rescale', 'tie_break', 'weight']"]
    path.write_text(yaml.safe_dump(make_spec(tiny_models, objective_files)))
    with pytest.raises(SystemExit) as ok:
        main(["search", str(path), "--out", str(tmp_path / "o"), "--check"])
    assert ok.value.code in (0, None) and capsys.readouterr().out.startswith("ok: 4 genes")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_sigkilled_cli_search_resumes_to_the_same_result(reference_run, tmp_path):
    """A `safemerge search` process killed with SIGKILL mid-search continues with --resume to the same records."""
    import os
    import signal
    import subprocess
    import sys
    import time

    spec, full, full_dir = reference_run
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "safemerge.cli", "search", str(path), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cands = out / "candidates.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if cands.is_file() and len(cands.read_text().splitlines()) >= 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the search finished before it could be killed"
    assert not (out / "best.yaml").exists()
    resumed = run_search(spec, out, resume=True, show_progress=False)
    assert _losses(resumed.records) == _losses(full.records)
    assert (out / "best.yaml").read_text() == (full_dir / "best.yaml").read_text()


def test_extra_term_suites_and_judges_are_checked_before_any_model_loads(tiny_models, objective_files, tmp_path):
    """objective.extra terms: a missing or malformed suite file, or an unknown judge, fails prepare() (and so
    `search --check`) in one line, before any weight is read."""
    spec = make_spec(tiny_models, objective_files)
    missing = dict(spec, objective={**spec["objective"], "extra": [{"metric": "harm_rate",
                                                                     "suite": str(tmp_path / "nope.yaml")}]})
    with pytest.raises(InputError, match=r"objective\.extra\[0\]\.suite: .*nope\.yaml not found"):
        prepare(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsets: [{name: h, kind: harmful, path: " + str(tmp_path / "absent.jsonl") + "}]\n")
    with pytest.raises(InputError):
        prepare(dict(spec, objective={**spec["objective"], "extra": [{"metric": "harm_rate", "suite": str(bad)}]}))
    with pytest.raises(ConfigError, match=r"objective\.extra\[0\]\.judge: unknown judge 'gpt5'"):
        prepare(dict(spec, objective={**spec["objective"], "extra": [{"metric": "harm_rate", "judge": "gpt5"}]}))
