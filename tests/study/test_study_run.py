"""A real smoke study (tiny world, 2 languages): killed mid-run, resumed, re-run from cache; its report
checked in Markdown, in the HTML source and rendered in headless Chromium. One study run shared by the module."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
KILL_AFTER_UNIT = "mix0_sft"  # the first trained model: the kill lands inside the mixture stage


def _cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "safemerge.cli", "study", "--preset", "smoke", "--out", str(out), "--quiet"]


def _events(out: Path) -> list[dict]:
    p = out / "events.jsonl"
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    out = root / "run"
    env = dict(os.environ, SAFEMERGE_CACHE=str(root / "cache"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    # 1. start, and kill (SIGKILL: no cleanup at all) once the first model is trained
    proc = subprocess.Popen(_cmd(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 900
    while proc.poll() is None and time.monotonic() < deadline:
        if (out / "units" / f"{KILL_AFTER_UNIT}.json").is_file():
            break
        time.sleep(0.1)
    was_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert was_running, f"the study ended before it could be killed:\n{err[-2000:]}"
    first = _events(out)
    # 2. the same command resumes and finishes
    res = subprocess.run(_cmd(out), env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    second = _events(out)[len(first):]
    # 3. a finished study re-runs from its caches
    t0 = time.perf_counter()
    res = subprocess.run(_cmd(out), env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    third = _events(out)[len(first) + len(second):]
    results = json.loads((out / "results.json").read_text())
    return {"out": out, "first": first, "second": second, "third": third, "results": results,
            "rerun_seconds": time.perf_counter() - t0}


def test_resume_after_kill_reuses_finished_units(smoke):
    done_before_kill = {e["unit"] for e in smoke["first"] if e["status"] == "computed"}
    assert KILL_AFTER_UNIT in done_before_kill and "eval-base" in done_before_kill
    resumed = {e["unit"]: e["status"] for e in smoke["second"]}
    for unit in done_before_kill:  # nothing finished before the kill is computed again
        assert resumed[unit] == "cached", unit
    recomputed = {u for u, s in resumed.items() if s == "computed"}
    assert recomputed and not (recomputed & done_before_kill)
    # the unit being trained at the kill left nothing that looks finished
    assert not any(p.name.startswith(".") and "tmp" in p.name for p in (smoke["out"] / "units").iterdir())


def test_finished_study_reruns_from_cache(smoke):
    statuses = {e["status"] for e in smoke["third"]}
    assert statuses <= {"cached", "skipped", "alias"}, [e for e in smoke["third"] if e["status"] == "computed"]
    assert len(smoke["third"]) >= len([e for e in smoke["second"] if e["status"] != "skipped"])


def test_every_model_evaluated_against_the_base(smoke):
    models = smoke["results"]["models"]
    spec_names = {"base", "mix0_sft", "mix15_sft", "mix100_sft", "mono_en_sft", "mono_fr_sft",
                  "linear_w0.3_sft", "slerp_w0.7_sft", "ties_w0.3_sft", "lang_ties_en+fr_sft"}
    assert spec_names <= set(models)
    for name, m in models.items():
        ev = m["eval"]
        assert ev and set(ev["per_lang"]) == {"en", "fr"}, name
        assert 0.0 <= ev["overall"]["harm_rate"]["value"] <= 1.0
        if name != "base":  # harm change and win-rate exist only against the reference
            assert "win_rate" in ev["overall"] and "harm_change" in ev["overall"], name
    assert "win_rate" not in models["base"]["eval"]["overall"]
    # the merged models are real model directories, evaluated from disk
    assert (smoke["out"] / models["ties_w0.3_sft"]["path"] / "model.safetensors").is_file()
    assert (smoke["out"] / "evals" / "ties_w0.3_sft" / "results.json").is_file()


def test_search_stage_ran(smoke):
    """The smoke preset has a search stage, and this install has safemerge.search: both searches (safety-aware and
    safety-unaware) ran, their best merges are models of the study and were evaluated, and nothing says the stage
    was skipped."""
    from safemerge.study.spec import SearchStage, smoke_spec

    spec = smoke_spec()
    stage = next(st for st in spec.stages if isinstance(st, SearchStage))
    assert importlib.util.find_spec("safemerge.search.runner") is not None  # so the stage has no reason to skip
    res, out = smoke["results"], smoke["out"]
    names = set(stage.provides(spec))
    assert {n for n, m in res["models"].items() if m["group"] == "search"} == names
    for name in names:
        rec = json.loads((out / "units" / f"{name}.json").read_text())
        assert rec["evaluations"] >= 1 and math.isfinite(rec["objective"]), rec
        assert (out / res["models"][name]["path"] / "config.json").is_file(), name
        assert 0.0 <= res["models"][name]["eval"]["overall"]["harm_rate"]["value"] <= 1.0, name
    events = smoke["first"] + smoke["second"] + smoke["third"]
    assert not [e for e in events if e["unit"] == "search" and e["status"] == "skipped"]
    assert not [n for n in res["notes"] if "search" in n.lower() and "skipped" in n.lower()]


def test_report_markdown_tables_findings_and_reproducibility(smoke):
    out, res = smoke["out"], smoke["results"]
    md = (out / "report.md").read_text()
    for heading in ("## Findings", "### Harm change vs base %", "### Win-rate vs base %", "## Plots",
                    "## Reproducibility", "### Timings"):
        assert heading in md
    assert "| method | en | fr | all |" in md
    for row in ("SFT: 15 % mix", "SFT: Linear", "SFT: SLERP", "SFT: TIES"):
        assert row in md
    assert re.search(r"\*\*-?\d+\.\d \[-?\d+\.\d, -?\d+\.\d\]\*\*", md)  # a bold best cell with its CI
    # the findings are generated from the numbers: the mixture's own values appear in them
    mix = res["models"]["mix15_sft"]["eval"]["overall"]
    assert f"{100 * mix['harm_change']['value']:+.1f} % harm / {100 * mix['win_rate']['value']:.1f} % win-rate" in md
    # plots exist as PNG files and are referenced relatively
    for name in ("tradeoff", "per_language_sft", "sweep_sft"):
        png = out / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plots/{name}.png)" in md
    # reproducibility: command, versions, seed, per-stage timings
    assert "safemerge study --preset smoke" in md and "torch 2." in md and "Seed 0" in md
    assert "| objective_merge |" in md


def test_report_html_is_self_contained(smoke):
    page = (smoke["out"] / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 3
    assert not re.search(r"""(src|href)=["']https?://""", page)  # no network
    for table_id in ("table-harm-change", "table-win-rate", "table-sweep", "table-all", "table-timings"):
        assert f'id="{table_id}"' in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(smoke, tmp_path):
    page = smoke["out"] / "report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<table" in html and 'id="table-harm-change"' in html and 'id="findings"' in html
    imgs = re.findall(r'<img[^>]+class="plot"[^>]*>', html)
    assert len(imgs) >= 3 and all("data:image/png;base64," in i for i in imgs)
    shot = tmp_path / "report.png"
    res = subprocess.run([CHROMIUM, *flags, "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:  # the plots rendered: many distinct colours, not a blank or text-only page
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 200
