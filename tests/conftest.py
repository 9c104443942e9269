"""Shared test setup: offline Hugging Face, a private HF_HOME, and tiny real checkpoints."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_HF_HOME = tempfile.mkdtemp(prefix="safemerge-hfhome-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = _HF_HOME
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Three tiny Llama checkpoints sharing a base: {'base', 'a', 'b'} (fp32, 2 layers)."""
    from safemerge.data.tiny import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny_models")
    base = make_tiny_checkpoint("llama", root / "base", seed=0)
    a = make_tiny_checkpoint("llama", root / "a", seed=1, init_from=base)
    b = make_tiny_checkpoint("llama", root / "b", seed=2, init_from=base)
    return {"base": base, "a": a, "b": b}
