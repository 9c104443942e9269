"""`safemerge train` past the file size limit while saving the checkpoint: exit 2, one line, nothing left."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def _limit_file_size(limit: int):
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


@pytest.mark.slow
def test_checkpoint_past_the_file_size_limit_is_one_line_exit_2(tiny_models, train_files, tmp_path):
    script = Path(sys.executable).with_name("safemerge")
    cli = [str(script)] if script.is_file() else [sys.executable, "-c", "from safemerge.cli import main; main()"]
    parent = tmp_path / "runs"
    parent.mkdir()
    # the tiny model's weights (~0.4 MB, written by safetensors) do not fit under 150 KB; the small files do
    proc = subprocess.run([*cli, "train", "sft", "-m", str(tiny_models["base"]), "-d", str(train_files["sft"]),
                           "-o", str(parent / "run"), "--max-steps", "2"], capture_output=True, text=True,
                          preexec_fn=_limit_file_size(150_000), timeout=600)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert err[-1].startswith(f"error: {parent / 'run'}: file size limit reached"), proc.stderr
    assert not any("Traceback" in line for line in err), proc.stderr
    assert list(parent.iterdir()) == []
