"""What every stage runner works with: the :class:`StudyContext` and the on-disk unit cache.

A unit (train one model, merge one model, evaluate one model) is recorded in ``<out>/units/<name>.json`` with
its cache key and compute time once it has finished; its files are written atomically. A killed run leaves no
half-written unit behind, and a rerun skips every unit whose record and output exist with the same key
(:func:`cached_unit`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress

from safemerge.study.names import ModelEntry, ModelId
from safemerge.study.spec import StudySpec
from safemerge.utils.atomic import atomic_write_json
from safemerge.utils.hashing import hash_obj


@dataclass
class StudyContext:
    """What every stage runner gets: the spec, the output dir, the world, the models so far, progress, log."""

    spec: StudySpec
    out: Path
    world: Any
    progress: Progress
    models: dict[str, ModelEntry] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stage_label: str = ""
    evaluated: dict[str, dict[str, Any]] = field(default_factory=dict)  # eval key digest -> unit record
    selections: dict[str, dict[str, Any]] = field(default_factory=dict)  # what the study chose, and on which split

    def add(self, mid: ModelId, path: str | Path, given: bool = False) -> ModelEntry:
        """Record model ``mid`` at ``path`` (its id's fields travel with it into results.json)."""
        entry = ModelEntry.of(mid, str(path), given)
        self.models[mid.name] = entry
        return entry

    def given(self, mid: ModelId) -> Path | None:
        """The spec's own model of that name (``models:``), recorded; None when the study has to make it."""
        p = self.spec.models.get(mid.name)
        if p is not None:
            self.add(mid, p, given=True)
        return p

    def path(self, name: str) -> Path:
        return Path(self.models[name].path)

    def rel(self, p: Path) -> str:
        try:
            return str(p.resolve().relative_to(self.out.resolve()))
        except ValueError:
            return str(p.resolve())

    def abs(self, p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else self.out / q

    def log(self, unit: str, status: str, seconds: float, **extra: Any) -> None:
        ev = {"stage": self.stage_label, "unit": unit, "status": status, "seconds": round(seconds, 3), **extra}
        self.events.append(ev)
        with open(self.out / "events.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(ev) + "\n")

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[], None]]:
        tid = self.progress.add_task(description, total=total)
        try:
            yield lambda: self.progress.advance(tid)
        finally:
            self.progress.update(tid, completed=total)


def fingerprint(path: str | Path) -> str:
    """Cheap identity of a model dir: names, sizes and mtimes of its files (never reads 16 GB of weights)."""
    root = Path(path)
    rows = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    return hash_obj(rows)


def cached_unit(ctx: StudyContext, name: str, key: Any, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``compute`` once per (name, key); its record (with ``seconds``) lands in ``<out>/units/<name>.json``.

    A record whose key differs, or whose output ``path`` is gone, is recomputed.
    """
    rec_path = ctx.out / "units" / f"{name}.json"
    digest = hash_obj(key)
    if rec_path.is_file():
        rec = json.loads(rec_path.read_text(encoding="utf-8"))
        if rec.get("key") == digest and ("path" not in rec or ctx.abs(rec["path"]).exists()):
            ctx.log(name, "cached", 0.0, compute_seconds=rec.get("seconds"), cpu_seconds=rec.get("cpu_seconds"))
            return rec
    t0, c0 = time.perf_counter(), time.process_time()
    rec = {"name": name, "key": digest, **compute()}
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    rec["cpu_seconds"] = round(time.process_time() - c0, 3)  # all threads; a load-independent cost measure
    atomic_write_json(rec_path, rec)
    ctx.log(name, "computed", rec["seconds"], cpu_seconds=rec["cpu_seconds"])
    return rec
