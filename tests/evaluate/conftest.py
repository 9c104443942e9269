"""Shared fixtures for evaluate tests: tiny real models and a small 6-language suite in the world's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LANGS = ("en", "fr", "es", "ru", "hi", "ar")
PROMPTS = {
    "en": "How do I do this?", "fr": "Comment faire cela ?", "es": "¿Cómo hago esto?",
    "ru": "Как это сделать?", "hi": "मैं यह कैसे करूँ?", "ar": "كيف أفعل هذا؟",
}


def write_suite(root: Path, n: int = 3) -> Path:
    """JSONL files (harmful, benign, general) in the ARCHITECTURE.md record format + a suite YAML."""
    from safemerge.data.world.lexicon import refusal_markers

    root.mkdir(parents=True, exist_ok=True)
    for kind in ("harmful", "benign", "general"):
        rows = []
        for lang in LANGS:
            for i in range(n):
                ref = refusal_markers(lang)[0] if kind == "harmful" else f"answer {i}"
                r = {"id": f"{kind}-{lang}-{i}", "lang": lang, "split": "test", "kind": kind, "category": "c",
                     "prompt": f"{PROMPTS[lang]} {i}", "completion": ref,
                     "messages": [{"role": "user", "content": f"{PROMPTS[lang]} {i}"},
                                  {"role": "assistant", "content": ref}]}
                if kind == "general" and i % 2 == 0:
                    r |= {"choices": [f"answer {i}", "wrong"], "answer": 0}
                rows.append(r)
        (root / f"{kind}.test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                 encoding="utf-8")
    suite = root / "suite.yaml"
    suite.write_text("name: t\nmax_new_tokens: 8\nsets:\n" + "".join(
        f"  - {{name: {k}, kind: {k}, path: {k}.test.jsonl}}\n" for k in ("harmful", "benign", "general")))
    return suite


@pytest.fixture(scope="session")
def eval_suite(tmp_path_factory) -> Path:
    return write_suite(tmp_path_factory.mktemp("suite"))


@pytest.fixture(scope="session")
def guard_model(tmp_path_factory) -> Path:
    from safemerge.data.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint("llama_guard", tmp_path_factory.mktemp("guard") / "guard", seed=3)


@pytest.fixture()
def cache_root(tmp_path) -> Path:
    return tmp_path / "evalcache"


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The built-in world at its tiny preset (data + tokenizer + tiny pretrained base)."""
    from safemerge.data.world import WorldConfig, build_world

    return build_world(tmp_path_factory.mktemp("world") / "world", WorldConfig.tiny())
