"""Record constructors shared by the general and safety generators (the JSONL schema of ARCHITECTURE.md)."""

from __future__ import annotations

from typing import Any


def make_record(*, id: str, lang: str, split: str, kind: str, category: str, prompt: str, completion: str,
                template: str, entity: str, choices: list[str] | None = None,
                answer: int | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": id, "lang": lang, "split": split, "kind": kind, "category": category,
        "prompt": prompt, "completion": completion,
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
    }
    if choices is not None:
        rec["choices"] = choices
        rec["answer"] = answer
    rec["template"] = template
    rec["entity"] = entity
    return rec


def make_dpo(rec: dict[str, Any], rejected: str) -> dict[str, Any]:
    return {
        "id": rec["id"], "lang": rec["lang"], "split": rec["split"], "kind": rec["kind"],
        "category": rec["category"], "prompt": rec["prompt"], "chosen": rec["completion"], "rejected": rejected,
    }
