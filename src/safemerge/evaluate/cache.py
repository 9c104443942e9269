"""Result caches under ``cache_dir()/eval``.

- answers: ``gen/<key>.json`` maps prompt id -> generated answer (and MC log-probs), keyed by the hash of
  (model content hash, eval items hash, generation settings). Written atomically once complete.
- verdicts: ``verdicts/<judge-hash>.jsonl``, an append-only journal of ``{"key": item hash, "verdict": {...}}``
  lines. Each judged batch is appended as soon as it is judged, so a judge that fails mid-run keeps what it
  judged and the next run resumes from there. A torn last line (killed process) is ignored on reading.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safemerge.utils.atomic import atomic_write_json
from safemerge.utils.hashing import hash_obj
from safemerge.utils.paths import cache_dir


def eval_cache_root(root: str | os.PathLike | None = None) -> Path:
    p = Path(root) if root is not None else cache_dir() / "eval"
    p.mkdir(parents=True, exist_ok=True)
    return p


class AnswerCache:
    """Generated answers (and MC scores) for one (model, items, settings) key."""

    def __init__(self, root: Path, key: str):
        self.path = root / "gen" / f"{key}.json"

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None

    def save(self, data: dict[str, Any]) -> None:
        atomic_write_json(self.path, data, indent=0)


class VerdictJournal:
    """Append-only verdict store for one judge configuration."""

    def __init__(self, root: Path, judge_settings: dict[str, Any]):
        self.path = root / "verdicts" / f"{hash_obj(judge_settings)[:24]}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._known: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        self._known[row["key"]] = row["verdict"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # torn line from a killed run

    @staticmethod
    def key(task: str, payload: Any) -> str:
        return hash_obj([task, payload])

    def get(self, key: str) -> dict[str, Any] | None:
        return self._known.get(key)

    def __len__(self) -> int:
        return len(self._known)

    def add(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        """Append verdicts (one fsync'd write per batch)."""
        if not rows:
            return
        text = "".join(json.dumps({"key": k, "verdict": v}, ensure_ascii=False) + "\n" for k, v in rows)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        self._known.update(rows)
