"""Stage runners: each turns one stage spec into named models, every unit of work cached on disk
(:func:`safemerge.study.context.cached_unit`).

To add a stage kind: a pydantic class in ``spec.STAGE_SPECS`` (its ``ids()`` name the models it provides, see
:mod:`safemerge.study.names`) and a function ``(stage, ctx) -> None`` here in :data:`RUNNERS` that calls
``ctx.add(model_id, path)`` for every model it provides.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safemerge import DEFAULT_SAFETY_FRACTION
from safemerge.study import names, selection
from safemerge.study.context import StudyContext, cached_unit, fingerprint
from safemerge.study.names import ModelId
from safemerge.study.spec import (
    LanguageMergeStage,
    LayerMergeStage,
    MergeThenDPOStage,
    MixtureStage,
    MonolingualStage,
    ObjectiveMergeStage,
    SearchStage,
    has_param,
    uses_base,
)
from safemerge.utils.atomic import atomic_dir, atomic_write_jsonl, make_readable
from safemerge.utils.hashing import hash_file, hash_obj, short

IN_MEMORY_LIMIT_BYTES = 2 << 30  # merge in memory (merge_state_dicts) when all inputs together are smaller

_WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")
_TRAIN_ARTEFACTS = ("train_config.json", "loss_log.jsonl", "training_args.bin", "study_unit.json")


# ----------------------------------------------------------------------------------------------- training
def _train(ctx: StudyContext, mid: ModelId, key: dict[str, Any], fn: Callable[[Path], Path]) -> None:
    if ctx.given(mid) is not None:
        return
    shared = {"settings": recipe_settings(ctx).model_dump(mode="json"), "world": _world_id(ctx)}  # + seed, size
    if ctx.spec.base is not None:  # experts fine-tuned from the spec's base (e.g. a real model), not the world's
        shared["base"] = fingerprint(ctx.path("base"))
    if _train_langs(ctx) is not None:  # a subset of the world's languages (the default study's keys stay as they were)
        shared["langs"] = _train_langs(ctx)
    root = ctx.out / "train" / short(hash_obj(shared), 10)  # other settings or another world: another folder
    rec = cached_unit(ctx, mid.name, {"train": key, **shared}, lambda: {"path": ctx.rel(Path(fn(root)))})
    ctx.add(mid, ctx.abs(rec["path"]))


def recipe_settings(ctx: StudyContext) -> Any:
    """The experts' training settings: the world's tuned recipe for a tiny base, size-band defaults for a real one
    (:func:`safemerge.train.recipes.settings_for`), with the spec's ``train:`` keys on top."""
    from safemerge.train.recipes import settings_for

    t = ctx.spec.train
    placement = {k: v for k, v in (("device", ctx.spec.device), ("dtype", ctx.spec.dtype)) if v != "auto"}
    return settings_for(ctx.path("base"), examples_per_language=t.examples_per_language,
                        dpo_examples_per_language=t.dpo_examples_per_language, seed=ctx.spec.seed,
                        sft={**placement, **t.sft}, dpo={**placement, **t.dpo})  # (auto: the config's default)


def _train_langs(ctx: StudyContext) -> list[str] | None:
    """The study's languages when they are a subset of the world's (None: all of them, the recipes' default)."""
    langs = list(ctx.spec.languages)
    return None if ctx.world is None or sorted(langs) == sorted(ctx.world.languages) else langs


def _world_id(ctx: StudyContext) -> str:
    """The world's content identity (its world.json holds the config and content hashes)."""
    return "" if ctx.world is None else hash_file(Path(ctx.world.root) / "world.json")


def _prepared(ctx: StudyContext, steps: list[tuple[str, Path]], name: str) -> Callable[[Path], Path]:
    """Training on prepared files (``data:``): each (stage, file) step fine-tunes the previous step's model, the
    first one the study's base; the runs are cached like every training."""
    from safemerge.train import recipes

    def run(root: Path) -> Path:
        model = ctx.path("base")
        for stage, data in steps:
            model = recipes.from_prepared(model, data, stage, root, f"{stage}-{name}", recipe_settings(ctx),
                                          ctx.progress)
        return model

    return run


def _prepared_key(steps: list[tuple[str, Path]]) -> list[tuple[str, str]]:
    return [(stage, hash_file(p)) for stage, p in steps]


def run_mixture(st: MixtureStage, ctx: StudyContext) -> None:
    from safemerge.train import recipes

    data = ctx.spec.data
    jobs = [(f, s) for f in st.fractions for s in st.stages]
    with ctx.task("train data mixtures", len(jobs)) as advance:
        for f, s in jobs:
            mid = names.mixture(f, s)
            if data is not None:  # real datasets, prepared: SFT on the mixture file (then DPO on the pairs file)
                steps = [("sft", data.file("sft_mixture", f))] + ([("dpo", data.file("dpo_mixture", f))]
                                                                   if s == "dpo" else [])
                _train(ctx, mid, {"recipe": "prepared", "steps": _prepared_key(steps)},
                       _prepared(ctx, steps, f"mix{round(100 * f)}"))
            else:
                _train(ctx, mid, {"recipe": "mixture", "fraction": f, "stage": s},
                       lambda root, f=f, s=s: recipes.mixture(ctx.world, f, stage=s, root=root,
                                                              settings=recipe_settings(ctx), progress=ctx.progress,
                                                              base=ctx.path("base"), langs=_train_langs(ctx)))
            advance()


def run_monolingual(st: MonolingualStage, ctx: StudyContext) -> None:
    from safemerge.train import recipes

    data = ctx.spec.data
    langs = st.langs(ctx.spec)
    with ctx.task("train monolingual experts", len(langs)) as advance:
        for lang in langs:
            mid = names.monolingual(lang, st.stage)
            if data is not None:
                steps = [("sft", data.file("monolingual", DEFAULT_SAFETY_FRACTION, lang))]
                if st.stage == "dpo":
                    steps.append(("dpo", data.file("dpo_mixture", DEFAULT_SAFETY_FRACTION)))
                _train(ctx, mid, {"recipe": "prepared", "steps": _prepared_key(steps)},
                       _prepared(ctx, steps, f"mono-{lang}"))
            else:
                _train(ctx, mid, {"recipe": "monolingual", "lang": lang, "stage": st.stage},
                       lambda root, lang=lang: recipes.monolingual(ctx.world, lang, stage=st.stage, root=root,
                                                                  settings=recipe_settings(ctx),
                                                                  progress=ctx.progress, base=ctx.path("base")))
            advance()


def run_merge_then_dpo(st: MergeThenDPOStage, ctx: StudyContext) -> None:
    from safemerge.train import recipes

    ids = st.ids(ctx.spec)
    with ctx.task("SFT -> merge -> DPO", len(ids)) as advance:
        for method, mid in zip(st.methods, ids):
            src = ctx.path(names.objective(method, st.weight, "sft").name)
            if ctx.spec.data is not None:  # DPO on the prepared pairs file of the stage's safety fraction
                pairs = ctx.spec.data.file("dpo_mixture", st.fraction)
                key = {"recipe": "prepared_dpo_from", "model": fingerprint(src), "pairs": hash_file(pairs)}
                _train(ctx, mid, key, lambda root, src=src, pairs=pairs: recipes.from_prepared(
                    src, pairs, "dpo", root, f"dpo-{mid.name}", recipe_settings(ctx), ctx.progress))
                advance()
                continue
            key = {"recipe": "dpo_from", "model": fingerprint(src), "fraction": st.fraction}
            _train(ctx, mid, key, lambda root, src=src: recipes.dpo_from(src, ctx.world, st.fraction, root=root,
                                                                   settings=recipe_settings(ctx),
                                                                   progress=ctx.progress, langs=_train_langs(ctx)))
            advance()


# ----------------------------------------------------------------------------------------------- merging
def merge_config(method: str, models: dict[str, Any], base: str | None, density: float) -> dict[str, Any]:
    """A mergekit-style config: ``models`` maps model name -> weight (a number or a per-layer list).

    A method with a shared ``t`` and no weights (SLERP) takes exactly two models; ``t`` is the weight of the second
    (t = 0 gives the first). Task-vector methods (the registry's ``task_vectors``) take ``base`` as their common
    ancestor, ``density`` when they prune, and normalised weights.
    """
    if has_param(method, "t", False) and not has_param(method, "weight", True):
        (a, _), (b, wb) = list(models.items())
        return {"merge_method": method, "base_model": a, "models": [{"model": a}, {"model": b}],
                "parameters": {"t": wb}, "dtype": "float32"}
    per_model: dict[str, Any] = {"density": density} if has_param(method, "density", True) else {}
    cfg: dict[str, Any] = {
        "merge_method": method,
        "models": [{"model": n, "parameters": {"weight": w, **per_model}} for n, w in models.items()],
        "dtype": "float32",
    }
    if uses_base(method):
        cfg["base_model"] = base
        if has_param(method, "normalize", False):
            cfg["parameters"] = {"normalize": True}
    return cfg


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name.endswith(_WEIGHT_FILES))


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

    def __call__(self, mid: ModelId, config: dict[str, Any]) -> None:
        ctx = self.ctx
        name = mid.name
        if ctx.given(mid) is not None:
            return
        inputs = {n: ctx.path(n) for n in _referenced(config)}
        same = _identity_of(config)
        if same is not None:  # e.g. linear/SLERP at w = 0 or 1: exactly one input model, nothing to merge
            ctx.add(mid, ctx.path(same))
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

        rec = cached_unit(ctx, name, key, compute)
        ctx.add(mid, ctx.abs(rec["path"]))

    def _merge_in_memory(self, config: dict[str, Any], inputs: dict[str, Path], out: Path) -> None:
        from safetensors.torch import save_file

        from safemerge.merge import merge_state_dicts
        from safemerge.merge.config import load_config
        from safemerge.merge.io import load_state_dict

        for n, p in inputs.items():
            if n not in self._sds:
                self._sds[n] = load_state_dict(str(p))
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
        if self.ctx.spec.device == "cpu":
            merge(load_config(named), out)
        else:  # streamed through the device's memory (random methods keep their masks on the CPU)
            from safemerge.utils.device import resolve_device

            merge(load_config(named), out, device=resolve_device(self.ctx.spec.device, "device"))


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
    refs = [config["base_model"]] if config.get("base_model") else []
    return list(dict.fromkeys(refs + [m["model"] for m in config["models"]]))


def _rename_models(config: dict[str, Any], paths: dict[str, str]) -> dict[str, Any]:
    """The same config with study names replaced by model paths (for the on-disk engine)."""
    out = dict(config, models=[dict(m, model=paths[m["model"]]) for m in config["models"]])
    if config.get("base_model"):
        out["base_model"] = paths[config["base_model"]]
    return out


def run_objective_merge(st: ObjectiveMergeStage, ctx: StudyContext) -> None:
    """Each method's grid of safety weights per stage, refined where harm changes most, and the weight chosen on
    the selection split (:mod:`safemerge.study.selection`)."""
    jobs = len(st.stages) * len(st.methods) * (len(st.weights) + st.refine)
    with ctx.task("objective merges (general x safety)", jobs) as advance:
        for s in st.stages:
            merger = Merger(ctx)  # one stage's experts stay loaded for its whole grid
            general, safety = names.mixture(0.0, s).name, names.mixture(1.0, s).name
            for m in st.methods:
                def make(w: float, m: str = m, s: str = s) -> str:
                    mid = names.objective(m, w, s)
                    merger(mid, merge_config(m, {general: round(1.0 - w, 6), safety: w}, "base", st.density))
                    advance()
                    return mid.name

                weights = selection.refine(st.weights, st.refine, make,
                                           lambda n: selection.harm(selection.on_split(ctx, n)))
                selection.choose(ctx, f"weight:{m}:{s}", f"merge weight of {m} at {s}",
                                 {names.objective(m, w, s).name: w for w in weights}, method=m, stage=s)


def run_language_merge(st: LanguageMergeStage, ctx: StudyContext) -> None:
    groups = st.groups(ctx.spec)
    merger = Merger(ctx)
    with ctx.task(f"language merges ({st.method})", len(groups)) as advance:
        for langs in groups:
            experts = {names.monolingual(lang, st.stage).name: round(1.0 / len(langs), 6) for lang in langs}
            if st.method == "slerp" and len(experts) != 2:
                raise ValueError("slerp merges exactly two models")
            merger(names.language_merge(st.method, langs, st.stage), merge_config(st.method, experts, "base", st.density))
            advance()
    if len(groups) > 1:
        selection.choose(ctx, f"languages:{st.method}:{st.stage}", f"language subset of {st.method} at {st.stage}",
                         {names.language_merge(st.method, g, st.stage).name: None for g in groups},
                         method=st.method, stage=st.stage)


def run_layer_merge(st: LayerMergeStage, ctx: StudyContext) -> None:
    """Per-layer weight lists of the safety expert (the general expert gets 1 - w per group); the list is chosen
    on the selection split."""
    ids = st.ids(ctx.spec)
    merger = Merger(ctx)
    general, safety = names.mixture(0.0, st.stage).name, names.mixture(1.0, st.stage).name
    with ctx.task(f"per-layer weight lists ({st.method})", len(ids)) as advance:
        for mid in ids:
            ws = list(mid.layer_weights or ())
            merger(mid, merge_config(st.method, {general: [round(1.0 - w, 6) for w in ws], safety: ws}, "base",
                                     st.density))
            advance()
    selection.choose(ctx, f"layers:{st.method}:{st.stage}", f"per-layer weight list of {st.method} at {st.stage}",
                     {mid.name: None for mid in ids}, method=st.method, stage=st.stage)


# ----------------------------------------------------------------------------------------------- search
def search_available() -> bool:
    return importlib.util.find_spec("safemerge.search.runner") is not None


def _objective_file(ctx: StudyContext, kind: str, split: str = "val") -> Path:
    """The world's ``kind`` records of the study's languages as prompt/completion JSONL (search objective data)."""
    rows = [{"prompt": r["prompt"], "completion": r["completion"], "lang": r["lang"]}
            for r in ctx.world.records(kind, split, langs=list(ctx.spec.languages))]
    return atomic_write_jsonl(ctx.out / "search" / "data" / f"{kind}.{split}.jsonl", rows)


def search_spec(st: SearchStage, ctx: StudyContext, aware: bool) -> dict[str, Any]:
    """The safemerge.search spec of one search: the stage's pool (default: general + safety expert) over its base,
    L = L_safety + alpha L_domain (aware) or L_domain (unaware)."""
    domain = st.domain_data or _objective_file(ctx, "general")
    objective: dict[str, Any] = {"domain": [str(domain)], "alpha": st.alpha, "max_examples": st.examples}
    if aware:
        objective["safety"] = [str(st.safety_data or _objective_file(ctx, "harmful"))]
    else:  # safety-unaware: the domain loss only
        objective["alpha"] = 1.0
    general, safety = names.mixture(0.0, st.stage).name, names.mixture(1.0, st.stage).name
    roles = {general: "general", safety: "safety"}  # the default pool's names, as before
    pool = [{"name": roles.get(n, n), "model": str(ctx.path(n))} for n in st.pool_names()]
    return {
        "pool": pool,
        "base_model": str(ctx.path(st.base_model)),
        "method": st.method,
        "space": st.search_space(),
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

    ids = st.ids(ctx.spec)
    experts = tuple(st.needs(ctx.spec))  # the pool and the base
    with ctx.task(f"merge search ({st.algorithm}, {st.method})", len(ids)) as advance:
        for mid, aware in zip(ids, (True, False)):
            name = mid.name
            if ctx.given(mid) is not None:
                advance()
                continue
            spec = search_spec(st, ctx, aware)
            key = {"search": spec, "inputs": {n: fingerprint(ctx.path(n)) for n in experts}}
            out = ctx.out / "search" / f"{name}-{short(hash_obj(key), 10)}"  # a changed search: a new folder

            def compute(spec: dict[str, Any] = spec, out: Path = out, name: str = name) -> dict[str, Any]:
                tid = ctx.progress.add_task(f"  {name}: candidates", total=st.budget)
                res = search(spec, out, resume=True, show_progress=False,
                             on_record=lambda _rec: ctx.progress.advance(tid), device=ctx.spec.device)
                ctx.progress.update(tid, completed=st.budget)
                return {"path": ctx.rel(Path(res.merged)), "best": res.best.get("values"),
                        "objective": res.best.get("objective"), "evaluations": len(res.records)}

            rec = cached_unit(ctx, name, key, compute)
            ctx.add(mid, ctx.abs(rec["path"]))
            data = "the given objective data" if st.safety_data or st.domain_data else "val"
            selection.record_search(ctx, f"search:{name}", name, data, method=st.method, stage=st.stage)
            advance()


RUNNERS: dict[str, Callable[[Any, StudyContext], None]] = {
    "mixture": run_mixture,
    "monolingual": run_monolingual,
    "objective_merge": run_objective_merge,
    "merge_then_dpo": run_merge_then_dpo,
    "language_merge": run_language_merge,
    "layer_merge": run_layer_merge,
    "search": run_search,
}


__all__ = ["RUNNERS", "merge_config"]
