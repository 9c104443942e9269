"""Fixtures for the GGUF tests: a private safemerge cache, and tiny real GGUF files written from a tiny llama."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from gguf_helpers import write_tiny_gguf


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """GGUF conversions are cached under cache_dir(): keep them out of the user's ~/.cache."""
    root = tmp_path_factory.mktemp("safemerge-cache")
    before = os.environ.get("SAFEMERGE_CACHE")
    os.environ["SAFEMERGE_CACHE"] = str(root)
    yield root
    if before is None:
        os.environ.pop("SAFEMERGE_CACHE", None)
    else:
        os.environ["SAFEMERGE_CACHE"] = before


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> dict[str, Path]:
    """A tiny llama (vocab 320 byte-level BPE with merges, untied head) and GGUF files of it:
    {'hf', 'Q8_0', 'Q4_1', 'F16', 'quantized_dir'} (the last: the HF dir with a GGUF loader's leftover
    quantization_config in its config.json)."""
    import shutil

    from safemerge.data.tiny import build_tokenizer, make_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny_gguf")
    hf = make_tiny_checkpoint("llama", root / "hf", seed=0, tokenizer=build_tokenizer(vocab_size=320))
    out: dict[str, Path] = {"hf": hf}
    for qtype in ("Q8_0", "Q4_1", "F16"):
        out[qtype] = write_tiny_gguf(hf, root / f"tiny-{qtype}.gguf", qtype)
    qdir = root / "quantized_dir"
    shutil.copytree(hf, qdir)
    cfg = json.loads((qdir / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "gguf", "gguf_file": "tiny.gguf", "dequantize": False}
    (qdir / "config.json").write_text(json.dumps(cfg, indent=2))
    out["quantized_dir"] = qdir
    return out

