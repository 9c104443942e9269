"""The environment is the lock: requirements.lock pins every package, and .venv equals it (tools/lockcheck.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("lockcheck", ROOT / "tools" / "lockcheck.py")
lockcheck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lockcheck)


def test_lock_pins_every_line_exactly_and_torch_is_the_cpu_build():
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    pins = lockcheck.pins(lines)
    body = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(pins) == len(body) > 50  # every requirement line is name==version
    assert pins["torch"] == "2.13.0+cpu"
    assert not any(name.startswith(("nvidia-", "cuda-")) for name in pins)
    for name in ("transformers", "trl", "peft", "optuna", "cma", "gguf", "mergekit", "pytest"):
        assert name in pins


def test_pins_reads_names_like_pip_and_rejects_ranges():
    assert lockcheck.pins(["Foo_Bar.baz==1.0  # via x", "", "# c", "--find-links x"]) == {"foo-bar-baz": "1.0"}
    with pytest.raises(SystemExit, match="expected name==version"):
        lockcheck.pins(["foo>=1"])


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(), reason="runs in the repo's .venv only")
def test_this_venv_equals_the_lock():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "lockcheck.py"), sys.executable],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
