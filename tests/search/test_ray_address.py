"""A search on a Ray cluster started with `ray start --head` (docs/gpu.md): workers join it through
`ray_address`, score on the CPU (the cluster has no GPU) and give the in-process records."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from search_helpers import make_spec

from safemerge.errors import ConfigError
from safemerge.search.runner import run_search
from tests.netutil import free_port, wait_for


@pytest.fixture()
def ray_head():
    """`ray start --head --block` with 2 CPUs and no GPU, in its own process group (ended by that group's id)."""
    pytest.importorskip("ray")
    ray_cli = Path(sys.executable).parent / "ray"
    if not ray_cli.is_file():
        pytest.skip("the ray command line is not installed next to this Python")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
    proc = subprocess.Popen([str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={temp}",
                             "--disable-usage-stats"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_for(proc, listening, "ray head", pause=0.5)
        time.sleep(2)  # the GCS listens before the raylet has registered
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_search_on_a_ray_head_by_address(ray_head, tiny_models, objective_files, tmp_path) -> None:
    spec = make_spec(tiny_models, objective_files, optimizer={"name": "random", "budget": 4, "seed": 5},
                     ray_address=ray_head)
    local = run_search(spec, tmp_path / "local", show_progress=False, workers=0)
    remote = run_search(spec, tmp_path / "ray", show_progress=False, workers=2)
    for a, b in zip(local.records, remote.records):
        assert a["values"] == b["values"] and b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    import json

    scoring = json.loads((tmp_path / "ray" / "result.json").read_text())["scoring"]
    assert scoring == {"device": "cpu", "dtype": "float32", "fp32": True, "workers": 2}
    with pytest.raises(ConfigError, match=f"--device cuda: the Ray cluster at {ray_head} has no GPU"):
        run_search(spec, tmp_path / "gpu", show_progress=False, workers=2, device="cuda")
