"""Check that an environment is exactly the lock: `pip freeze --all` == requirements.lock + no-deps file.

Usage: python tools/lockcheck.py [PYTHON]   (PYTHON defaults to .venv/bin/python)
Ignored: the editable safemerge line and pip itself (the venv's bootstrap). Exit 1 with the differences.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK_FILES = (ROOT / "requirements.lock", ROOT / "requirements" / "no-deps.txt")
IGNORED = {"pip", "safemerge"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines: list[str]) -> dict[str, str]:
    """`name==version` lines (comments, options and editable lines skipped) as {normalised name: version}."""
    out: dict[str, str] = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if m is None:
            raise SystemExit(f"error: cannot read pin {raw.strip()!r}: expected name==version")
        out[_norm(m.group(1))] = m.group(2)
    return out


def main(argv: list[str]) -> int:
    python = argv[1] if len(argv) > 1 else str(ROOT / ".venv" / "bin" / "python")
    want: dict[str, str] = {}
    for f in LOCK_FILES:
        want.update(pins(f.read_text().splitlines()))
    frozen = subprocess.run([python, "-m", "pip", "freeze", "--all", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout.splitlines()
    have = pins([ln for ln in frozen if " @ " not in ln])
    for name in IGNORED:
        want.pop(name, None)
        have.pop(name, None)
    diff = sorted(set(want.items()) ^ set(have.items()))
    if diff:
        for name in sorted({n for n, _ in diff}):
            print(f"lockcheck: {name}: lock {want.get(name, '-')}, environment {have.get(name, '-')}")
        print("lockcheck: the environment differs from requirements.lock; run `make clean venv` "
              "(or `make lock` to refresh the lock on purpose)")
        return 1
    print(f"lockcheck: environment equals the lock ({len(want)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
