"""Shared fixtures of the training tests: small real JSONL files and one trained SFT run per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import dpo_records, sft_records, write_jsonl


@pytest.fixture(scope="session")
def train_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train_data")
    return {"sft": write_jsonl(root / "sft.jsonl", sft_records()),
            "dpo": write_jsonl(root / "dpo.jsonl", dpo_records())}


@pytest.fixture(scope="session")
def sft_run(tiny_models, train_files, tmp_path_factory) -> Path:
    """One small full SFT run shared by the tests that inspect a finished run."""
    from safemerge.train import SFTConfig, train_sft

    out = tmp_path_factory.mktemp("runs") / "sft"
    return train_sft(tiny_models["base"], train_files["sft"], out, SFTConfig(lr=3e-3, epochs=2, batch_size=8))


@pytest.fixture(scope="session")
def world():
    """The study's default world (built once into the shared cache, reused by every part's tests)."""
    from safemerge.data.world import default_world

    return default_world(show_progress=False)
