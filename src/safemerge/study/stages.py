"""Stage runners: each turns one stage spec into named models, every unit of work cached on disk.

A unit (train one model, merge one model, evaluate one model) is recorded in ``<out>/units/<name>.json`` with
its cache key and compute time once it has finished; its files are written atomically. A killed run leaves no
half-written unit behind, and a rerun skips every unit whose record and output exist with the same key.

To add a stage kind: a pydantic class in ``spec.STAGE_SPECS`` and a function ``(stage, ctx) -> None`` here in
:data:`RUNNERS` that calls ``ctx.add(name, path)`` for every model it provides.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress

from safemerge.study.spec import (
    LanguageMergeStage,
    MergeThenDPOStage,
    MixtureStage,
    MonolingualStage,
    ObjectiveMergeStage,
    SearchStage,
    StageSpec,
    StudySpec,
    mix_name,
    mono_name,
    objective_name,
)
from safemerge.utils.atomic import atomic_dir, atomic_write_json, atomic_write_jsonl, make_readable
from safemerge.utils.hashing import hash_file, hash_obj, short

IN_MEMORY_LIMIT_BYTES = 2 << 30  # merge in memory (merge_state_dicts) when all inputs together are smaller

_WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")
_TRAIN_ARTEFACTS = ("train_config.json", "loss_log.jsonl", "training_args.bin", "study_unit.json")


# ----------------------------------------------------------------------------------------------- model names
@dataclass
class ModelEntry:
    """A model of the study and what its name says about it (group, method, stage, weight, languages)."""

    name: str
    path: str
    group: str
    method: str | None = None
    stage: str | None = None
    weight: float | None = None
    langs: list[str] | None = None
    given: bool = False  # from the spec's `models:` (not trained/merged by the study)


_NAME_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("base", re.compile(r"^base$")),
    ("mixture", re.compile(r"^mix(?P<pct>\d+)_(?P<stage>sft|dpo)$")),
    ("monolingual", re.compile(r"^mono_(?P<lang>[a-z]+)_(?P<stage>sft|dpo)$")),
    ("objective_merge", re.compile(r"^(?P<method>linear|slerp|ties|dare_ties)_w(?P<w>[0-9.]+)_(?P<stage>sft|dpo)$")),
    ("merge_then_dpo", re.compile(r"^merge_dpo_(?P<method>linear|slerp|ties|dare_ties)_w(?P<w>[0-9.]+)$")),
    ("language_merge", re.compile(r"^lang_(?P<method>linear|slerp|ties|dare_ties)_(?P<langs>[a-z+]+)_(?P<stage>sft|dpo)$")),
    ("search", re.compile(r"^search_(?P<mode>aware|unaware)_(?P<method>[a-z_]+)_(?P<stage>sft|dpo)$")),
]


def describe(name: str, path: str | Path, given: bool = False) -> ModelEntry:
    """Derive a model's group/method/stage/weight/languages from its study name."""
    for group, pat in _NAME_PATTERNS:
        m = pat.match(name)
        if m is None:
            continue
        g = m.groupdict()
        method = g.get("method")
        if group == "mixture":
            method = f"{g['pct']}% mix"
        elif group == "search":
            method = f"{g['method']} search ({'safety-aware' if g['mode'] == 'aware' else 'safety-unaware'})"
        stage = "sft->merge->dpo" if group == "merge_then_dpo" else g.get("stage")
        langs = g["langs"].split("+") if g.get("langs") else ([g["lang"]] if g.get("lang") else None)
        return ModelEntry(name, str(path), group, method, stage, float(g["w"]) if g.get("w") else None, langs, given)
    return ModelEntry(name, str(path), "custom", name, None, None, None, given)


# ----------------------------------------------------------------------------------------------- context
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

    def add(self, name: str, path: str | Path, given: bool = False) -> ModelEntry:
        entry = describe(name, path, given)
        self.models[name] = entry
        return entry

    def given(self, name: str) -> Path | None:
        p = self.spec.models.get(name)
        if p is not None:
            self.add(name, p, given=True)
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


def unit(ctx: StudyContext, name: str, key: Any, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------------------------- training
def _train(ctx: StudyContext, name: str, key: dict[str, Any], fn: Callable[[Path], Path]) -> None:
    if ctx.given(name) is not None:
        return
    shared = {"settings": recipe_settings(ctx).model_dump(mode="json"), "world": _world_id(ctx)}  # + seed, size
    if ctx.spec.base is not None:  # experts fine-tuned from the spec's base (e.g. a real model), not the world's
        shared["base"] = fingerprint(ctx.path("base"))
    if _train_langs(ctx) is not None:  # a subset of the world's languages (the default study's keys stay as they were)
        shared["langs"] = _train_langs(ctx)
    root = ctx.out / "train" / short(hash_obj(shared), 10)  # other settings or another world: another folder
    rec = unit(ctx, name, {"train": key, **shared}, lambda: {"path": ctx.rel(Path(fn(root)))})
    ctx.add(name, ctx.abs(rec["path"]))


def recipe_settings(ctx: StudyContext) -> Any:
    """The experts' training settings: the world's tuned recipe for a tiny base, size-band defaults for a real one
    (:func:`safemerge.train.recipes.settings_for`), with the spec's ``train:`` keys on top."""
    from safemerge.train.recipes import settings_for

    t = ctx.spec.train
    return settings_for(ctx.path("base"), examples_per_language=t.examples_per_language,
                        dpo_examples_per_language=t.dpo_examples_per_language, seed=ctx.spec.seed, sft=t.sft,
                        dpo=t.dpo)


def _train_langs(ctx: StudyContext) -> list[str] | None:
    """The study's languages when they are a subset of the world's (None: all of them, the recipes' default)."""
    langs = list(ctx.spec.languages)
    return None if sorted(langs) == sorted(ctx.world.languages) else langs


def _world_id(ctx: StudyContext) -> str:
    """The world's content identity (its world.json holds the config and content hashes)."""
    return "" if ctx.world is None else hash_file(Path(ctx.world.root) / "world.json")


def run_mixture(st: MixtureStage, ctx: StudyContext) -> None:
    from safemerge.train import recipes

    jobs = [(f, s) for f in st.fractions for s in st.stages]
    with ctx.task("train data mixtures", len(jobs)) as advance:
        for f, s in jobs:
            _train(ctx, mix_name(f, s), {"recipe": "mixture", "fraction": f, "stage": s},
                   lambda root, f=f, s=s: recipes.mixture(ctx.world, f, stage=s, root=root,
                                                                  settings=recipe_settings(ctx), progress=ctx.progress,
                                                                  base=ctx.path("base"), langs=_train_langs(ctx)))
            advance()


def run_monolingual(st: MonolingualStage, ctx: StudyContext) -> None:
    from safemerge.train import recipes

    langs = st.langs(ctx.spec)
    with ctx.task("train monolingual experts", len(langs)) as advance:
        for lang in langs:
            _train(ctx, mono_name(lang, st.stage), {"recipe": "monolingual", "lang": lang, "stage": st.stage},
                   lambda root, lang=lang: recipes.monolingual(ctx.world, lang, stage=st.stage, root=root,
                                                              settings=recipe_settings(ctx), progress=ctx.progress,
                                                              base=ctx.path("base")))
            advance()


def run_merge_then_dpo(st: MergeThenDPOStage, ctx: StudyContext) -> None:
    from safemerge.train import recipes

    names = st.provides(ctx.spec)
    with ctx.task("SFT -> merge -> DPO", len(names)) as advance:
        for method, name in zip(st.methods, names):
            src = ctx.path(objective_name(method, st.weight, "sft"))
            key = {"recipe": "dpo_from", "model": fingerprint(src), "fraction": st.fraction}
            _train(ctx, name, key, lambda root, src=src: recipes.dpo_from(src, ctx.world, st.fraction, root=root,
                                                                   settings=recipe_settings(ctx),
                                                                   progress=ctx.progress, langs=_train_langs(ctx)))
            advance()


# ----------------------------------------------------------------------------------------------- merging
def merge_config(method: str, models: dict[str, float], base: str | None, density: float,
                 seed_names: tuple[str, str] | None = None) -> dict[str, Any]:
    """A mergekit-style config: ``models`` maps model name -> weight (weights of linear/ties are normalised).

    SLERP takes exactly two models; its ``t`` is the weight of the second (t = 0 gives the first).
    """
    if method == "slerp":
        (a, _), (b, wb) = list(models.items())
        return {"merge_method": "slerp", "base_model": a, "models": [{"model": a}, {"model": b}],
                "parameters": {"t": wb}, "dtype": "float32"}
    per_model: dict[str, Any] = {}
    if method in ("ties", "dare_ties"):
        per_model["density"] = density
    cfg: dict[str, Any] = {
        "merge_method": method,
        "models": [{"model": n, "parameters": {"weight": w, **per_model}} for n, w in models.items()],
        "dtype": "float32",
    }
    if method in ("ties", "dare_ties"):
        cfg["base_model"] = base
        cfg["parameters"] = {"normalize": True}
    return cfg


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name.endswith(_WEIGHT_FILES))


def _load_state_dict(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        from safemerge.errors import InputError

        raise InputError(f"{path}: no *.safetensors weights; save the model with safe_serialization=True")
    sd: dict[str, Any] = {}
    for f in files:
        sd.update(load_file(str(f)))
    return sd


def _copy_model_files(src: Path, dst: Path) -> None:
    """Config, generation config and tokenizer files of ``src`` (no weights, no training artefacts)."""
    for p in src.iterdir():
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(_WEIGHT_FILES) \
                and p.name not in _TRAIN_ARTEFACTS:
            shutil.copy2(p, dst / p.name)


class Merger:
    """Merges named models of the study; keeps loaded state dicts for the in-memory path (one stage's grid)."""

    def __init__(self, ctx: StudyContext):
        self.ctx = ctx
        self._sds: dict[str, dict[str, Any]] = {}

    def __call__(self, name: str, config: dict[str, Any]) -> None:
        ctx = self.ctx
        if ctx.given(name) is not None:
            return
        inputs = {n: ctx.path(n) for n in _referenced(config)}
        same = _identity_of(config)
        if same is not None:  # e.g. linear/SLERP at w = 0 or 1: exactly one input model, nothing to merge
            ctx.add(name, ctx.path(same))
            ctx.log(name, "alias", 0.0, of=same)
            return
        key = {"merge": config, "inputs": {n: fingerprint(p) for n, p in inputs.items()}, "seed": ctx.spec.seed}
        out = ctx.out / "merges" / name

        def compute() -> dict[str, Any]:
            in_memory = sum(_size(p) for p in inputs.values()) <= IN_MEMORY_LIMIT_BYTES
            if in_memory:
                self._merge_in_memory(config, inputs, out)
            else:
                self._merge_streaming(config, inputs, out)
            return {"path": ctx.rel(out), "in_memory": in_memory, "config": config}

        rec = unit(ctx, name, key, compute)
        ctx.add(name, ctx.abs(rec["path"]))

    def _merge_in_memory(self, config: dict[str, Any], inputs: dict[str, Path], out: Path) -> None:
        from safetensors.torch import save_file

        from safemerge.merge import merge_state_dicts
        from safemerge.merge.config import load_config

        for n, p in inputs.items():
            if n not in self._sds:
                self._sds[n] = _load_state_dict(p)
        merged = merge_state_dicts(load_config(config), {n: self._sds[n] for n in inputs}, seed=self.ctx.spec.seed)
        first = inputs[config["models"][0]["model"]]  # config/tokenizer of an expert (not of the base)
        with atomic_dir(out) as tmp:
            _copy_model_files(first, tmp)
            tensors = {k: v.detach().contiguous() for k, v in merged.items()}
            save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            make_readable(tmp)

    def _merge_streaming(self, config: dict[str, Any], inputs: dict[str, Path], out: Path) -> None:
        from safemerge.merge import merge
        from safemerge.merge.config import load_config

        named = _rename_models(config, {n: str(p) for n, p in inputs.items()})
        merge(load_config(named), out)


def _identity_of(config: dict[str, Any]) -> str | None:
    """The input a linear or SLERP config reproduces exactly (one non-zero weight / t in {0, 1}), else None."""
    if config["merge_method"] == "slerp":
        t = config["parameters"]["t"]
        return config["models"][0]["model"] if t == 0 else config["models"][1]["model"] if t == 1 else None
    if config["merge_method"] == "linear":
        live = [m["model"] for m in config["models"] if m["parameters"]["weight"] != 0]
        return live[0] if len(live) == 1 else None
    return None


def _referenced(config: dict[str, Any]) -> list[str]:
    names = [config["base_model"]] if config.get("base_model") else []
    return list(dict.fromkeys(names + [m["model"] for m in config["models"]]))


def _rename_models(config: dict[str, Any], paths: dict[str, str]) -> dict[str, Any]:
    """The same config with study names replaced by model paths (for the on-disk engine)."""
    out = dict(config, models=[dict(m, model=paths[m["model"]]) for m in config["models"]])
    if config.get("base_model"):
        out["base_model"] = paths[config["base_model"]]
    return out


def run_objective_merge(st: ObjectiveMergeStage, ctx: StudyContext) -> None:
    jobs = [(s, m, w) for s in st.stages for m in st.methods for w in st.weights]
    with ctx.task("objective merges (general x safety)", len(jobs)) as advance:
        for s in st.stages:
            merger = Merger(ctx)  # one stage's experts stay loaded for its whole grid
            general, safety = mix_name(0.0, s), mix_name(1.0, s)
            for m in st.methods:
                for w in st.weights:
                    cfg = merge_config(m, {general: round(1.0 - w, 6), safety: w}, "base", st.density)
                    merger(objective_name(m, w, s), cfg)
                    advance()


def run_language_merge(st: LanguageMergeStage, ctx: StudyContext) -> None:
    groups = st.groups(ctx.spec)
    merger = Merger(ctx)
    with ctx.task(f"language merges ({st.method})", len(groups)) as advance:
        for langs in groups:
            experts = {mono_name(lang, st.stage): round(1.0 / len(langs), 6) for lang in langs}
            if st.method == "slerp" and len(experts) != 2:
                raise ValueError("slerp merges exactly two models")
            merger(st.name(langs), merge_config(st.method, experts, "base", st.density))
            advance()


# ----------------------------------------------------------------------------------------------- search
def search_available() -> bool:
    return importlib.util.find_spec("safemerge.search.runner") is not None


def _objective_file(ctx: StudyContext, kind: str, split: str = "val") -> Path:
    """The world's ``kind`` records of the study's languages as prompt/completion JSONL (search objective data)."""
    rows = [{"prompt": r["prompt"], "completion": r["completion"], "lang": r["lang"]}
            for r in ctx.world.records(kind, split, langs=list(ctx.spec.languages))]
    return atomic_write_jsonl(ctx.out / "search" / "data" / f"{kind}.{split}.jsonl", rows)


def search_spec(st: SearchStage, ctx: StudyContext, aware: bool) -> dict[str, Any]:
    """The safemerge.search spec of one search: pool = general + safety expert, L = L_safety + alpha L_domain."""
    general, safety = mix_name(0.0, st.stage), mix_name(1.0, st.stage)
    domain = st.domain_data or _objective_file(ctx, "general")
    objective: dict[str, Any] = {"domain": [str(domain)], "alpha": st.alpha, "max_examples": st.examples}
    if aware:
        objective["safety"] = [str(st.safety_data or _objective_file(ctx, "harmful"))]
    else:  # safety-unaware: the domain loss only
        objective["alpha"] = 1.0
    return {
        "pool": [{"name": "general", "model": str(ctx.path(general))},
                 {"name": "safety", "model": str(ctx.path(safety))}],
        "base_model": str(ctx.path("base")),
        "method": st.method,
        "space": {"params": ["weight", "density"] if st.method in ("ties", "dare_ties") else ["weight"]},
        "objective": objective,
        "optimizer": {"name": st.algorithm, "budget": st.budget, "seed": ctx.spec.seed},
        "output": {"merge_best": True},
    }


def run_search(st: SearchStage, ctx: StudyContext) -> None:
    if not search_available():
        ctx.notes.append("Stage `search` skipped: safemerge.search (issue 6) is not available in this install; "
                         "safety-aware vs safety-unaware search results are NOT in this report.")
        ctx.log("search", "skipped", 0.0)
        return
    if ctx.world is None and (st.safety_data is None or st.domain_data is None) \
            and not all(n in ctx.spec.models for n in st.provides(ctx.spec)):
        ctx.notes.append("Stage `search` skipped: no objective data (set safety_data and domain_data, or `world:`).")
        ctx.log("search", "skipped", 0.0)
        return
    from safemerge.search.runner import run_search as search

    names = st.provides(ctx.spec)
    with ctx.task(f"merge search ({st.algorithm}, {st.method})", len(names)) as advance:
        for name, aware in zip(names, (True, False)):
            if ctx.given(name) is not None:
                advance()
                continue
            spec = search_spec(st, ctx, aware)
            key = {"search": spec, "inputs": {n: fingerprint(ctx.path(n)) for n in
                                              (mix_name(0.0, st.stage), mix_name(1.0, st.stage), "base")}}
            out = ctx.out / "search" / f"{name}-{short(hash_obj(key), 10)}"  # a changed search: a new folder

            def compute(spec: dict[str, Any] = spec, out: Path = out, name: str = name) -> dict[str, Any]:
                tid = ctx.progress.add_task(f"  {name}: candidates", total=st.budget)
                res = search(spec, out, resume=True, show_progress=False,
                             on_record=lambda _rec: ctx.progress.advance(tid))
                ctx.progress.update(tid, completed=st.budget)
                return {"path": ctx.rel(Path(res.merged)), "best": res.best.get("values"),
                        "objective": res.best.get("objective"), "evaluations": len(res.records)}

            rec = unit(ctx, name, key, compute)
            ctx.add(name, ctx.abs(rec["path"]))
            advance()


RUNNERS: dict[str, Callable[[Any, StudyContext], None]] = {
    "mixture": run_mixture,
    "monolingual": run_monolingual,
    "objective_merge": run_objective_merge,
    "merge_then_dpo": run_merge_then_dpo,
    "language_merge": run_language_merge,
    "search": run_search,
}


def entry_dict(e: ModelEntry) -> dict[str, Any]:
    return asdict(e)


__all__ = ["RUNNERS", "ModelEntry", "StudyContext", "StageSpec", "describe", "fingerprint", "merge_config", "unit"]
