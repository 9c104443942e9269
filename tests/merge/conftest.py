"""Shared fixtures and helpers for merge tests: tiny model families, mergekit oracle runs, tensor comparison.

``model_family(arch, ...)`` builds (once per session) a base checkpoint and three "fine-tuned" experts
``a``, ``b``, ``c`` that share it (``make_tiny_checkpoint(..., init_from=base)``). ``run_mergekit`` runs the
oracle in-process on CPU (lazy_unpickle off, copy_tokenizer on); ``run_safemerge`` runs our engine on the same
YAML file. ``diff_report`` compares every tensor of two output directories. Test modules get these helpers
through the ``merge_tools`` fixture (tests/ is not a package, so they cannot import this conftest).
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


def write_yaml(config: dict[str, Any], path: Path) -> Path:
    """Write a mergekit-style config dict as YAML and return the path."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read_tensors(model_dir: Path) -> dict[str, Any]:
    """All tensors of a checkpoint directory (every ``*.safetensors`` shard), by name."""
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        for name, tensor in load_file(str(shard)).items():
            assert name not in out, f"{name} appears in two shards of {model_dir}"
            out[name] = tensor
    assert out, f"no safetensors files in {model_dir}"
    return out


def diff_report(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Human-readable differences between two tensor dicts (empty list = bit-identical)."""
    import torch

    problems: list[str] = []
    for name in sorted(set(ours) ^ set(theirs)):
        problems.append(f"{name}: only in {'safemerge' if name in ours else 'mergekit'}")
    for name in sorted(set(ours) & set(theirs)):
        a, b = ours[name], theirs[name]
        if a.dtype != b.dtype or a.shape != b.shape:
            problems.append(f"{name}: {a.dtype}{tuple(a.shape)} vs mergekit {b.dtype}{tuple(b.shape)}")
        elif not torch.equal(a, b):
            diff = (a.float() - b.float()).abs()
            problems.append(
                f"{name}: max|diff|={diff.max().item():.3g} ({int((diff > 0).sum())}/{diff.numel()} differ)"
            )
    return problems


def run_mergekit(config: dict[str, Any], out_dir: Path, seed: int | None = None) -> Path:
    """Run the mergekit 0.1.5 oracle in-process on CPU and return ``out_dir``."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    options = MergeOptions(lazy_unpickle=False, copy_tokenizer=True, quiet=True, random_seed=seed)
    run_merge(MergeConfiguration.model_validate(config), str(out_dir), options)
    return out_dir


def run_safemerge(config: dict[str, Any], out_dir: Path, **options: Any) -> Path:
    """Run safemerge's streaming merge on the YAML form of ``config`` and return the output directory."""
    from safemerge.merge import merge

    cfg_path = write_yaml(config, out_dir.parent / f"{out_dir.name}.yaml")
    result = merge(cfg_path, out_dir, **options)
    return Path(result) if result is not None else out_dir


def output_config(model_dir: Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "config.json").read_text())


@pytest.fixture(scope="session")
def merge_tools() -> SimpleNamespace:
    """The helpers of this module: write_yaml, read_tensors, diff_report, run_mergekit, run_safemerge, output_config."""
    return SimpleNamespace(write_yaml=write_yaml, read_tensors=read_tensors, diff_report=diff_report,
                           run_mergekit=run_mergekit, run_safemerge=run_safemerge, output_config=output_config)


@pytest.fixture(scope="session")
def model_family(tmp_path_factory) -> Callable[..., dict[str, Path]]:
    """Factory ``model_family(arch="llama", layers=4, tie=None, shard=None, experts=..., dtype="float32")``.

    Returns {'base', *experts} (default experts a, b, c).

    Families are built once per session and shared by every merge test (fp32, tiny).
    """
    from safemerge.data.tiny import make_tiny_checkpoint

    cache: dict[tuple[Any, ...], dict[str, Path]] = {}

    def build(arch: str = "llama", layers: int = 4, tie: bool | None = None, shard: str | None = None,
              experts: tuple[str, ...] = ("a", "b", "c"), dtype: str = "float32") -> dict[str, Path]:
        key = (arch, layers, tie, shard, experts, dtype)
        if key not in cache:
            root = tmp_path_factory.mktemp(f"family-{arch}-{layers}-{tie}-{shard}-{dtype}")
            base = make_tiny_checkpoint(arch, root / "base", seed=0, layers=layers, dtype=dtype,
                                        tie_word_embeddings=tie, max_shard_size=shard)
            fam = {"base": base}
            for i, name in enumerate(experts, start=1):
                fam[name] = make_tiny_checkpoint(arch, root / name, seed=i, init_from=base, dtype=dtype,
                                                 max_shard_size=shard)
            cache[key] = fam
        return cache[key]

    return build


@pytest.fixture(scope="session")
def llama_family(model_family) -> dict[str, Path]:
    """The default parity family: tiny Llama, 4 layers, untied, unsharded, base + experts a, b, c."""
    return model_family("llama")
