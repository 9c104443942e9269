"""Content hashes used as cache keys (models, datasets, configs)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def hash_obj(obj: Any) -> str:
    """Stable sha256 of a JSON-serialisable object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def hash_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def hash_dir(path: str | os.PathLike, suffixes: tuple[str, ...] | None = None) -> str:
    """sha256 over (relative name, content) of every file below ``path`` (optionally only some suffixes).

    Hidden files and directories (starting with '.') are skipped.
    """
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if suffixes is not None and not p.name.endswith(suffixes):
            continue
        h.update(str(rel).encode())
        h.update(b"\0")
        h.update(hash_file(p).encode())
    return h.hexdigest()


def short(digest: str, n: int = 12) -> str:
    return digest[:n]
