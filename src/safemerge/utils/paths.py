"""Where safemerge caches things (worlds, trained experts, eval results)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SAFEMERGE_CACHE`` if set, else ``~/.cache/safemerge``. Created on demand."""
    root = Path(os.environ.get("SAFEMERGE_CACHE") or Path.home() / ".cache" / "safemerge")
    root.mkdir(parents=True, exist_ok=True)
    return root
