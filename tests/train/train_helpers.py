"""Small real training files in the world's record format (shared by the training tests)."""

from __future__ import annotations

import json
from pathlib import Path

LANGS = ("en", "fr")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def sft_records(n: int = 32) -> list[dict]:
    """Arithmetic-style chat records in two languages, in the world's record format."""
    rows = []
    for i in range(n):
        lang = LANGS[i % 2]
        q = f"what is {i} plus 1" if lang == "en" else f"combien font {i} plus 1"
        a = f"it is {i + 1}" if lang == "en" else f"c est {i + 1}"
        rows.append({"id": f"g{i}", "lang": lang, "split": "train", "kind": "general", "category": "add",
                     "prompt": q, "completion": a,
                     "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    return rows


def dpo_records(n: int = 32) -> list[dict]:
    return [{"id": f"p{i}", "lang": r["lang"], "kind": "general", "prompt": r["prompt"], "chosen": r["completion"],
             "rejected": "no no no"} for i, r in enumerate(sft_records(n))]
