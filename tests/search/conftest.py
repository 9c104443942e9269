"""Shared fixtures for search tests: small objective JSONL files (the tiny models come from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from search_helpers import LANGS, write_jsonl


@pytest.fixture(scope="session")
def objective_files(tmp_path_factory) -> dict[str, Path]:
    """Small safety/domain prompt-completion files in two languages."""
    root = tmp_path_factory.mktemp("objective")
    safety = [{"prompt": f"how do I hurt {i} people", "completion": "no, I cannot help with that",
               "lang": LANGS[i % 2]} for i in range(8)]
    domain = [{"prompt": f"what is {i} plus {i}", "completion": f"the quick brown fox {2 * i}",
               "lang": LANGS[i % 2]} for i in range(8)]
    return {"safety": write_jsonl(root / "safety.jsonl", safety), "domain": write_jsonl(root / "domain.jsonl", domain)}
