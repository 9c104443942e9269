"""Memory behaviour of the streaming merge: inputs are read with positioned reads (no long-lived memory map), so
the process's resident memory grows by at most ``--max-memory`` over the interpreter baseline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

LINUX = Path("/proc/self/maps").is_file()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base and two experts, fp32, ~6M parameters (~24 MB) each, 2 shards each."""
    from safemerge.data.tiny import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("mem_models")
    base = make_tiny_checkpoint("llama", root / "base", seed=0, hidden=256, layers=8, intermediate=704,
                                max_shard_size="14MB")
    out = {"base": base}
    for i, name in enumerate(("a", "b"), start=1):
        out[name] = make_tiny_checkpoint("llama", root / name, seed=i, hidden=256, layers=8, intermediate=704,
                                         max_shard_size="14MB", init_from=base)
    return out


@pytest.mark.skipif(not LINUX, reason="needs /proc/self/maps")
def test_reads_are_exact_and_leave_no_file_mapped(models: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from safemerge.merge.io import CheckpointSource

    # every dtype the reader handles, incl. bf16, bool, a 0-d and an empty tensor, in one file
    odd = {"bf16": torch.randn(3, 5).to(torch.bfloat16), "f16": torch.randn(7).half(), "i64": torch.arange(5),
           "bool": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4)}
    (tmp_path / "odd").mkdir()
    save_file(odd, str(tmp_path / "odd" / "model.safetensors"))
    for path in (models["a"], tmp_path / "odd"):
        src = CheckpointSource(path)
        got = {name: src.get(name) for name in src.infos()}
        maps = Path("/proc/self/maps").read_text()  # before load_file below, which maps the files itself
        assert not [s for s in path.glob("*.safetensors") if str(s.resolve()) in maps]
        expected = {}
        for shard in sorted(path.glob("*.safetensors")):
            expected.update(load_file(str(shard)))
        assert got.keys() == expected.keys()
        for name, t in expected.items():
            assert got[name].dtype == t.dtype and torch.equal(got[name], t), name


@pytest.mark.slow
@pytest.mark.skipif(not LINUX or not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_max_memory_bounds_resident_growth(models: dict[str, Path], tmp_path: Path) -> None:
    """A merge under --max-memory X grows the process's peak RSS by at most X over the (warmed-up) baseline, although
    the inputs (3 x ~24 MB) are larger than X: every input byte read is released once its tensor is merged."""
    budget = 24 * 2**20
    cfg = {"merge_method": "ties", "base_model": str(models["base"]),
           "models": [{"model": str(models[m]), "parameters": {"weight": 0.5, "density": 0.5}} for m in ("a", "b")]}
    script = f"""
import re, yaml
from pathlib import Path
from safemerge.merge import merge
def status(key): return int(re.search(key + r':\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1)) * 1024
cfg = Path({str(tmp_path / "ties.yaml")!r}); cfg.write_text(yaml.safe_dump({cfg!r}))
merge(cfg, {str(tmp_path / "warm")!r}, threads=2, max_memory={budget})   # imports, allocator warm-up
Path('/proc/self/clear_refs').write_text('5')                             # reset the peak (VmHWM)
before = status('VmRSS')
merge(cfg, {str(tmp_path / "out")!r}, threads=2, max_memory={budget})
print(before, status('VmHWM'))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    before, peak = map(int, res.stdout.split()[-2:])
    inputs = sum(f.stat().st_size for m in models.values() for f in m.glob("*.safetensors"))
    assert inputs > 2 * budget  # the check below could not pass by reading everything into memory
    assert peak - before <= budget, f"peak RSS grew by {(peak - before) / 2**20:.1f} MiB > {budget / 2**20} MiB"
