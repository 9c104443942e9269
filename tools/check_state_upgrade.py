"""Resume a search state across optuna versions: write it under OLD, resume it under the installed one, and back.

Usage: .venv/bin/python tools/check_state_upgrade.py [OLD_OPTUNA_VERSION]   (default 4.9.0; needs the registry)

OLD is installed with `pip install --no-deps --target` into a temp dir (the venv is not touched). For each
direction it drives tests/search/test_state.py's NSGA-II protocol, cuts it after the second ask, resumes it in the
other version and prints whether the resumed run asks exactly the writer's uninterrupted candidates, or the
one-line error the resume gave.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEP = r'''
import json, sys
from pathlib import Path
sys.path.insert(0, "tests/search")
import test_state as T
from safemerge.errors import InputError
from safemerge.search.spec import OptimizerSpec
work = Path(sys.argv[2]); p = work / "state.json"
if sys.argv[1] == "write":
    full, _, _ = T._drive("nsga2", work / "full.json")
    (work / "full_candidates.json").write_text(json.dumps(full))
    T._drive("nsga2", p, cut=3)
    print("written with", json.loads(p.read_text())["libraries"])
else:
    st = json.loads(p.read_text())
    try:
        opt = T.restore(p, st, T._space(T._params("nsga2")), OptimizerSpec(**T.OPTIMIZERS["nsga2"]))
    except InputError as e:
        print("resume refused: error:", e); sys.exit(0)
    already = [x for b in st["told"] for x in b["xs"]] + st["pending"]["xs"]
    rest, _, _ = T._drive("nsga2", p, state=st, opt=opt)
    full = json.loads((work / "full_candidates.json").read_text())
    print("resumed under", T.library_versions("nsga2"), "; equals the writer's uninterrupted run:", already + rest == full)
'''


def main() -> int:
    old = sys.argv[1] if len(sys.argv) > 1 else "4.9.0"
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "old"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        f"optuna=={old}"], check=True)
        env_old = {**os.environ, "PYTHONPATH": str(target), "PYTHONWARNINGS": "ignore"}
        env_new = {**os.environ, "PYTHONWARNINGS": "ignore"}
        for writer, reader in ((env_old, env_new), (env_new, env_old)):
            work = Path(tempfile.mkdtemp(dir=tmp))
            for mode, env in (("write", writer), ("read", reader)):
                subprocess.run([sys.executable, "-c", STEP, mode, str(work)], check=True, env=env, cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
