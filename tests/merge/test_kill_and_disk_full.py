"""`safemerge merge` killed with SIGKILL at random moments, then run to completion: only complete outputs and no
temporary directories are left (issue 15, item 2); past the file size limit it exits 2 with one line and leaves
nothing (item 3)."""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("safemerge")
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from safemerge.cli import main; main()"]


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> dict[str, Path]:
    """Base + two experts, ~5 MB each: a TIES merge takes about a second of tensor work."""
    from safemerge.data.tiny import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("medium")
    base = make_tiny_checkpoint("llama", root / "base", seed=0, hidden=128, layers=4, intermediate=512)
    fam = {"base": base}
    for i, name in enumerate(("a", "b"), start=1):
        fam[name] = make_tiny_checkpoint("llama", root / name, seed=i, init_from=base)
    cfg = {"merge_method": "ties", "base_model": str(base),
           "models": [{"model": str(fam["a"]), "parameters": {"weight": 1.0, "density": 0.5}},
                      {"model": str(fam["b"]), "parameters": {"weight": 0.6, "density": 0.3}}]}
    fam["config"] = root / "ties.yaml"
    fam["config"].write_text(yaml.safe_dump(cfg, sort_keys=False))
    return fam


def _merge_cmd(config: Path, out: Path) -> list[str]:
    return [*_cli(), "merge", str(config), str(out), "--threads", "1", "--max-shard-size", "2MB", "--overwrite"]


def _temps(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _wait_for_temp(proc: subprocess.Popen, parent: Path, before: frozenset[str] = frozenset()) -> float:
    """Poll until a temporary dir not in ``before`` appears in ``parent`` (or the process ends); when it did."""
    while proc.poll() is None and not {n for n in _temps(parent) if ".tmp-" in n} - before:
        time.sleep(0.002)
    return time.monotonic()


def _same_model(out: Path, ref: Path, read_tensors) -> None:
    import torch

    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref.iterdir())
    ours, theirs = read_tensors(out), read_tensors(ref)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_a_full_run_leaves_only_the_output(medium, merge_tools, tmp_path):
    ref_parent = tmp_path / "ref"
    ref_parent.mkdir()
    t0 = time.monotonic()
    proc = subprocess.Popen(_merge_cmd(medium["config"], ref_parent / "out"), stdout=subprocess.DEVNULL)
    t_temp = _wait_for_temp(proc, ref_parent)
    assert proc.wait() == 0
    total = time.monotonic() - t0
    writing = time.monotonic() - t_temp  # from the temp dir's appearance to the end

    parent = tmp_path / "runs"
    parent.mkdir()
    out = parent / "out"
    shutil.copytree(ref_parent / "out", out)  # every run overwrites a complete output (--overwrite)
    rng = random.Random(15)
    kills, finished, max_left = 0, 0, 0
    for i in range(40):  # until 16 runs were killed (a run that finishes first overwrites: fine too)
        if kills == 16:
            break
        before = frozenset(_temps(parent))  # what the previous killed run left (this run removes it)
        proc = subprocess.Popen(_merge_cmd(medium["config"], out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if i % 3 == 0:  # anywhere in the run, imports and planning included
            time.sleep(rng.uniform(0, 0.9 * total))
        else:  # while the output is being written: wait for the temp dir, then a random part of the writing
            _wait_for_temp(proc, parent, before)
            time.sleep(rng.uniform(0, 0.9 * writing))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        finished += proc.returncode == 0
        left = _temps(parent)
        max_left = max(max_left, len(left))
        assert len(left) <= 2, left  # its own temp dir (+ the previous output set aside, if killed mid-swap)
        if out.exists():  # never a half-written output at the final path
            _same_model(out, ref_parent / "out", merge_tools.read_tensors)
        else:  # killed between moving the previous output aside and moving the new one in
            assert any(name.startswith(".out.old-") for name in left), left
    assert kills == 16, (kills, finished)

    subprocess.run(_merge_cmd(medium["config"], out), check=True, capture_output=True)
    assert sorted(p.name for p in parent.iterdir()) == ["out"]
    _same_model(out, ref_parent / "out", merge_tools.read_tensors)
    print(f"kill loop: {kills} kills, {finished} runs finished first, at most {max_left} temp dir(s) between runs, "
          f"0 after the final run; full run {total:.1f} s, writing {writing:.1f} s")


def _fsize_limit(limit: int):
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def test_file_size_limit_while_writing_shards_is_one_line_exit_2(tiny_models, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"merge_method": "ties", "base_model": str(tiny_models["base"]),
                                   "models": [{"model": str(tiny_models["a"]), "parameters": {"weight": 1.0}},
                                              {"model": str(tiny_models["b"]), "parameters": {"weight": 0.5}}]}))
    parent = tmp_path / "outputs"
    parent.mkdir()
    proc = subprocess.run([*_cli(), "merge", str(cfg), str(parent / "merged"), "--threads", "1"],
                          capture_output=True, text=True, preexec_fn=_fsize_limit(200_000), timeout=300)
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert err.startswith(f"error: {parent / 'merged'}: file size limit reached") and "\n" not in err, err
    assert list(parent.iterdir()) == []

    # the fix the message suggests works: the same merge in 100 KB shards fits under the limit
    proc = subprocess.run([*_cli(), "merge", str(cfg), str(parent / "merged"), "--threads", "1",
                           "--max-shard-size", "100KB"], capture_output=True, text=True,
                          preexec_fn=_fsize_limit(200_000), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in parent.iterdir()) == ["merged"]
    shutil.rmtree(parent / "merged")
