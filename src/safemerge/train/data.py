"""Training data: read JSONL files or HF datasets, check columns, turn records into TRL conversational rows.

Every row handed to TRL is *conversational* so the tokenizer's chat template formats it and the loss can be put on
the assistant turn only:

- SFT: ``{"prompt": [messages before the last], "completion": [the last, assistant, message]}``;
  records give either ``messages`` (ending with an assistant turn) or ``prompt``/``completion`` strings.
- DPO: ``{"prompt": [...], "chosen": [assistant msg], "rejected": [assistant msg]}`` from ``prompt``/``chosen``/
  ``rejected`` strings (or message lists).

All checks run before any model is loaded and fail with one-line :class:`~safemerge.errors.InputError` messages.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from safemerge.errors import InputError
from safemerge.utils.hashing import hash_dir, hash_obj

DataSource = str | os.PathLike | Sequence[str | os.PathLike]
Message = dict[str, str]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class TrainData:
    """Normalised rows plus where they came from and a content hash (part of the cache key)."""

    rows: list[dict[str, Any]]
    sources: list[str]
    digest: str
    languages: list[str]


def _as_list(data: DataSource) -> list[str]:
    if isinstance(data, (str, os.PathLike)):
        return [os.fspath(data)]
    items = [os.fspath(d) for d in data]
    if not items:
        raise InputError("no training data given; pass at least one JSONL file or dataset id")
    return items


def _looks_like_path(s: str) -> bool:
    return s.startswith((".", "/", "~")) or s.endswith((".jsonl", ".json")) or s.count("/") > 1


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a bad line is reported with its number."""
    from safemerge.utils.config import read_text

    rows = []
    for i, line in enumerate(read_text(path, "training data").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{i}: invalid JSON ({exc.msg}); fix or remove that line") from None
        except RecursionError:
            raise InputError(f"{path}:{i}: invalid JSON (nested too deeply); fix or remove that line") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{i}: each line must be a JSON object")
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no records; the file is empty")
    return rows


def read_source(src: str) -> list[dict[str, Any]]:
    """Records of one local JSONL file (or a directory of them) or a Hugging Face dataset id (split 'train')."""
    path = Path(src).expanduser()
    if os.path.isfile(path):  # os.path: pathlib's raises for a name too long
        return read_jsonl(path)
    if os.path.isdir(path):
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise InputError(f"{path}: directory has no *.jsonl files; pass JSONL files or a dataset id")
        return [r for f in files for r in read_jsonl(f)]
    if _looks_like_path(src) or not _HUB_ID.match(src):
        raise InputError(f"{src}: file not found; pass an existing JSONL file or a Hugging Face dataset id")
    try:
        import datasets

        ds = datasets.load_dataset(src, split="train")
    except Exception as exc:  # offline, no access, no such dataset: all user-fixable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{src}: cannot load this dataset id ({first}); pass a local JSONL file instead") from None
    return [dict(r) for r in ds]


def _msgs(value: Any, role: str, where: str, col: str) -> list[Message]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    raise InputError(f"{where}: column '{col}' must be a string or a list of {{role, content}} messages")


def sft_row(rec: dict[str, Any], where: str) -> dict[str, list[Message]]:
    """One SFT record -> ``{"prompt": [...], "completion": [assistant message]}``."""
    if "messages" in rec and rec["messages"] is not None:
        msgs = _msgs(rec["messages"], "user", where, "messages")
        if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
            raise InputError(f"{where}: 'messages' must end with an assistant message after at least one other")
        return {"prompt": msgs[:-1], "completion": msgs[-1:]}
    if "prompt" in rec and "completion" in rec:
        return {"prompt": _msgs(rec["prompt"], "user", where, "prompt"),
                "completion": _msgs(rec["completion"], "assistant", where, "completion")}
    raise InputError(f"{where}: missing columns; SFT needs 'messages' or 'prompt' and 'completion'")


def dpo_row(rec: dict[str, Any], where: str) -> dict[str, list[Message]]:
    """One preference record -> ``{"prompt": [...], "chosen": [msg], "rejected": [msg]}``."""
    missing = [c for c in ("prompt", "chosen", "rejected") if rec.get(c) is None]
    if missing:
        raise InputError(f"{where}: missing column(s) {', '.join(repr(c) for c in missing)}; "
                         "DPO needs 'prompt', 'chosen' and 'rejected'")
    return {"prompt": _msgs(rec["prompt"], "user", where, "prompt"),
            "chosen": _msgs(rec["chosen"], "assistant", where, "chosen"),
            "rejected": _msgs(rec["rejected"], "assistant", where, "rejected")}


def load_train_data(
    data: DataSource,
    kind: Literal["sft", "dpo"],
    languages: list[str] | None = None,
    max_examples: int | None = None,
) -> TrainData:
    """Read, filter by language, check and normalise training data (no model needed)."""
    sources = _as_list(data)
    records: list[tuple[str, dict[str, Any]]] = []
    for src in sources:
        recs = read_source(src)
        records += [(f"{src} record {i}", r) for i, r in enumerate(recs, 1)]
    present = sorted({str(r["lang"]) for _, r in records if r.get("lang") is not None})
    if languages is not None:
        if not present:
            raise InputError(f"{sources[0]}: records have no 'lang' field, so 'languages' cannot filter them")
        unknown = [code for code in languages if code not in present]
        if unknown:
            raise InputError(f"unknown language code {unknown[0]!r}: the data has {', '.join(present)}")
        records = [(w, r) for w, r in records if r.get("lang") in languages]
    if max_examples is not None:
        records = records[:max_examples]
    to_row = sft_row if kind == "sft" else dpo_row
    rows = [to_row(r, w) for w, r in records]
    langs = sorted({str(r["lang"]) for _, r in records if r.get("lang") is not None})
    return TrainData(rows=rows, sources=sources, digest=hash_obj(rows), languages=langs)


@dataclass(frozen=True)
class ModelRef:
    """A model to start from: a local directory or a hub id, with a content hash for the cache key."""

    name: str
    local: bool
    digest: str


def resolve_model(model: str | os.PathLike) -> ModelRef:
    """Check a model dir (needs config.json) or accept a hub id; no weights are loaded."""
    name = os.fspath(model)
    path = Path(name).expanduser()
    if os.path.exists(path):  # os.path: pathlib's raises for a name too long
        if not path.is_dir() or not (path / "config.json").is_file():
            raise InputError(f"{path}: no config.json; pass a Hugging Face model directory "
                             "(config.json + weights + tokenizer)")
        return ModelRef(name=str(path.resolve()), local=True, digest=hash_dir(path))
    if _looks_like_path(name) or not _HUB_ID.match(name):
        raise InputError(f"{name}: model directory not found; pass a local model dir or a hub id like org/name")
    return ModelRef(name=name, local=False, digest=hash_obj({"hub_id": name}))
