"""The study runner: stages in order, each followed by the evaluation of the models it made; then the report.

Every unit is cached under ``<out>`` (see :mod:`safemerge.study.context`), so a killed run resumes where it
stopped and a finished study re-runs in seconds. ``<out>/results.json`` holds everything the report needs.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from safemerge.errors import InputError
from safemerge.study import names
from safemerge.study.context import StudyContext
from safemerge.study.evaluation import REPORT, SELECT, evaluate_entry, selection_split
from safemerge.study.spec import StudySpec
from safemerge.study.stages import RUNNERS
from safemerge.utils.atomic import atomic_write_json
from safemerge.utils.hashing import short
from safemerge.utils.progress import make_progress

PACKAGES = ("safemerge", "torch", "transformers", "trl", "peft", "safetensors", "tokenizers", "datasets",
            "numpy", "matplotlib", "pydantic", "cma", "optuna")


def resolve_world(spec: StudySpec, out: Path, show_progress: bool = True) -> Any:
    """The World of the spec: an existing directory, the default (shared cache) or a tiny one in ``out``."""
    if spec.world is None:
        return None
    from safemerge.data import world as W

    if spec.world.path is not None:
        return W.World.load(spec.world.path)
    if spec.world.preset == "default":
        return W.default_world(show_progress=show_progress)
    config = W.WorldConfig.tiny(languages=tuple(spec.languages))  # only the study's languages, inside the run
    root = out / "world" / short(W.world_key(config), 12)  # a changed world (new code) builds next to the old
    return W.build_world(root, config, show_progress=show_progress)


def plan_summary(spec: StudySpec) -> str:
    """What the study will make, e.g. '13 models to train, 40 merges, 2 searches; 58 models to evaluate'."""
    kinds = {"mixture": "train", "monolingual": "train", "merge_then_dpo": "train", "objective_merge": "merge",
             "language_merge": "merge", "search": "search"}
    counts = {"train": 0, "merge": 0, "search": 0, "other": 0}
    names = set(spec.models)
    for st in spec.stages:
        new = [n for n in st.provides(spec) if n not in spec.models]
        counts[kinds.get(st.kind, "other")] += len(new)
        names |= set(new)
    parts = [f"{counts['train']} models to train", f"{counts['merge']} merges",
             f"{counts['search'] // 2} safety-aware/unaware search pairs"]
    return ", ".join(parts) + f"; {len(names) + 1} models to evaluate (base included), cached and resumable"


def environment(command: list[str] | None) -> dict[str, Any]:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "command": " ".join(command) if command else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "packages": versions,
    }


def run_study(spec: StudySpec, out: str | os.PathLike, *, quiet: bool = False,
              command: list[str] | None = None, console: Console | None = None) -> Path:
    """Run (or resume) the study into ``out``; returns ``out`` with results.json, report.md and report.html."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "spec.json", spec.model_dump(mode="json"))
    started = time.perf_counter()
    timings: list[dict[str, Any]] = []
    if not quiet:
        (console or Console(stderr=True)).print(f"[bold]study {spec.name}[/bold] -> {out}: {plan_summary(spec)}")
    world = resolve_world(spec, out, show_progress=not quiet)  # before our progress display: it has its own
    with make_progress(console=console, disable=quiet) as progress:
        ctx = StudyContext(spec=spec, out=out, world=world, progress=progress)
        ctx.stage_label = "world"
        t0 = started
        base = spec.base or (ctx.world.base_dir if ctx.world is not None else None)
        if base is None:
            raise InputError("base: no base model; set `base:` in the spec")
        ctx.add(names.base(), base, given=spec.base is not None)
        langs = [lang for lang in spec.languages if ctx.world is None or lang in ctx.world.languages]
        if ctx.world is not None and len(langs) != len(spec.languages):
            missing = sorted(set(spec.languages) - set(langs))
            raise InputError(f"languages: {', '.join(missing)} not in the world ({', '.join(ctx.world.languages)}); "
                             "drop them from `languages:`")
        evals: dict[str, dict[str, Any]] = {}  # name -> report-split unit record
        vals: dict[str, dict[str, Any]] = {}  # name -> selection-split unit record

        def evaluate(n: str) -> None:  # the selection split first: a stage's choices may need it
            vals[n] = evaluate_entry(ctx, ctx.models[n], SELECT)
            evals[n] = evaluate_entry(ctx, ctx.models[n], REPORT)

        evaluate("base")
        timings.append(_timing(ctx, "world + base eval", t0))
        if spec.models:  # models the user already has: registered (and evaluated) up front
            ctx.stage_label = "given models"
            t0 = time.perf_counter()
            with ctx.task("evaluate given models", len(spec.models)) as advance:
                for n in spec.models:
                    ctx.given(spec.model_id(n))
                    evaluate(n)
                    advance()
            timings.append(_timing(ctx, "given models", t0))
        for st in spec.stages:
            ctx.stage_label = st.kind
            t0 = time.perf_counter()
            before = set(ctx.models)
            RUNNERS[st.kind](st, ctx)
            new = [n for n in ctx.models if n not in before]
            if new:
                with ctx.task(f"evaluate ({st.kind})", len(new)) as advance:
                    for n in new:
                        evaluate(n)
                        advance()
            timings.append(_timing(ctx, st.kind, t0))
    results = {
        "name": spec.name,
        "languages": langs,
        "seed": spec.seed,
        "eval": spec.eval.model_dump(mode="json"),
        "splits": {"report": REPORT, "select": selection_split(ctx)},
        "selections": list(ctx.selections.values()),
        "models": {n: {**e.as_dict(), "eval": evals.get(n, {}).get("summary"),
                       "eval_select": vals.get(n, {}).get("summary") if selection_split(ctx) != REPORT else None,
                       "eval_seconds": round(sum((r.get(n) or {}).get("seconds") or 0.0 for r in (evals, vals)), 3),
                       "selected_on": _selected_on(ctx, n)}
                   for n, e in ctx.models.items()},
        "stages": timings,
        "notes": ctx.notes,
        "unit_seconds": _unit_seconds(out),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "env": environment(command),
    }
    atomic_write_json(out / "results.json", results)
    from safemerge.study.report import write_report

    write_report(results, out)
    return out


def _selected_on(ctx: StudyContext, name: str) -> str | None:
    """The split a model was chosen on, when one of the study's choices picked it."""
    return next((sel["split"] for sel in ctx.selections.values() if sel["model"] == name), None)


def _timing(ctx: StudyContext, label: str, t0: float) -> dict[str, Any]:
    evs = [e for e in ctx.events if e["stage"] == ctx.stage_label]
    return {
        "stage": label,
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "compute_seconds": round(sum((e.get("compute_seconds") or 0.0) if e["status"] == "cached" else e["seconds"]
                                     for e in evs), 2),
        "cpu_seconds": round(sum(e.get("cpu_seconds") or 0.0 for e in evs), 2),
        "computed": sum(e["status"] == "computed" for e in evs),
        "cached": sum(e["status"] == "cached" for e in evs),
        "skipped": sum(e["status"] == "skipped" for e in evs),
    }


def _unit_seconds(out: Path) -> dict[str, float]:
    """Compute seconds of every unit as first computed (stable across resumed runs)."""
    import json

    return {p.stem: json.loads(p.read_text(encoding="utf-8")).get("seconds", 0.0)
            for p in sorted((out / "units").glob("*.json"))}
