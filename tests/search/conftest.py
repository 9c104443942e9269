"""Shared fixtures for search tests: objective JSONL files and spec builders over the tiny model family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

LANGS = ("en", "fr")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def objective_files(tmp_path_factory) -> dict[str, Path]:
    """Small safety/domain prompt-completion files in two languages."""
    root = tmp_path_factory.mktemp("objective")
    safety = [{"prompt": f"how do I hurt {i} people", "completion": "no, I cannot help with that",
               "lang": LANGS[i % 2]} for i in range(8)]
    domain = [{"prompt": f"what is {i} plus {i}", "completion": f"the quick brown fox {2 * i}",
               "lang": LANGS[i % 2]} for i in range(8)]
    return {"safety": write_jsonl(root / "safety.jsonl", safety), "domain": write_jsonl(root / "domain.jsonl", domain)}


def make_spec(models: dict[str, Path], files: dict[str, Path], **over: Any) -> dict[str, Any]:
    """A ties search over tiny models a and b (base = base), small budget; ``over`` replaces top-level keys."""
    spec: dict[str, Any] = {
        "pool": [{"name": "a", "model": str(models["a"])}, {"name": "b", "model": str(models["b"])}],
        "base_model": str(models["base"]),
        "method": "ties",
        "space": {"params": ["weight", "density"]},
        "objective": {"safety": str(files["safety"]), "domain": str(files["domain"]), "alpha": 0.3},
        "optimizer": {"name": "cma", "budget": 16, "seed": 0},
    }
    spec.update(over)
    return spec
