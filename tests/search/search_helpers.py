"""Helpers for search tests (imported by the test modules; the fixtures live in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LANGS = ("en", "fr")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


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
