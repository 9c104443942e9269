"""The search spec (``safemerge search SPEC.yaml``): pool, method, search space, objective, optimiser.

Everything here is validated (pydantic, then against the merge-method registry, the pool's ``config.json`` files
and the objective datasets' columns) before any model weights are loaded. Relative paths are resolved against the
spec file's folder first, then the working directory; anything that exists in neither is kept as a hub id.

Selection (``optimizer.select``): the search minimises the loss, and by default the reported best candidate is
the lowest loss. Paper B's grid search instead keeps the configuration with the best *domain score*: ``select:
domain`` picks the lowest domain loss, ``select: <metric>`` the best value of an ``objective.extra`` metric
(``acc_mc``, ``acc_gen``, ``alignment``: highest; ``harm_rate``, ``over_refusal``, ``wrong_language``: lowest;
weight 0 measures it without changing the objective). Feasible candidates (``language_margin``) come first either
way.

Example::

    pool:
      - {name: aligned, model: experts/mix15}
      - {name: expert, model: experts/general}
    base_model: world/base
    method: ties
    space: {params: [weight, density], layer_groups: 1}
    objective: {safety: synth/safety.jsonl, domain: synth/domain.jsonl, alpha: 0.3}
    optimizer: {name: cma, budget: 100, seed: 0}
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from safemerge.errors import InputError
from safemerge.utils.config import StrictModel, iter_jsonl, load_spec_model

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
DEFAULT_GRID = {"density": [0.25, 0.5, 1.0], "weight": [0.25, 0.5, 1.0]}



class PoolModel(StrictModel):
    """One model of the merge pool: a local HF model folder, a hub id or a .gguf file."""

    model: str = Field(description="local HF model folder, hub id or .gguf file (dequantized once, cached)")
    name: str | None = Field(None, description="short unique name (default: the folder's name)")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str | None) -> str | None:
        if v is not None and not _NAME.match(v):
            raise ValueError(f"pool name {v!r} may only use letters, digits, '_', '.', '-'")
        return v


class SpaceSpec(StrictModel):
    """What is searched: per-model (or per-layer-group) values of method parameters."""

    params: list[str] = Field(default_factory=lambda: ["weight"],
                              description="method parameters to search, per model (weight, density) or global (t)")
    layer_groups: int = Field(1, ge=1, le=512,
                              description="1 = one value per model; G > 1 = G values spread over the layers "
                                          "(mergekit gradient list, linearly interpolated)")
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict, description="param -> [low, high]")
    models: list[str] | None = Field(None, description="pool names whose parameters are searched (default: all)")
    fixed: dict[str, Any] = Field(default_factory=dict, description="fixed global method parameters")
    model_fixed: dict[str, Any] = Field(default_factory=dict,
                                        description="fixed per-model parameters applied to every pool model")

    @model_validator(mode="after")
    def _check(self) -> SpaceSpec:
        if not self.params:
            raise ValueError("space.params is empty; name at least one parameter to search (e.g. [weight])")
        if len(set(self.params)) != len(self.params):
            raise ValueError("space.params lists a parameter twice")
        for k, (lo, hi) in self.bounds.items():
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"bounds.{k}: need finite low < high, got [{lo}, {hi}]")
        return self

    def bound(self, param: str) -> tuple[float, float]:
        if param in self.bounds:
            return self.bounds[param]
        return (0.05, 1.0) if param == "density" else (0.0, 1.0)


class ExtraTerm(StrictModel):
    """An extra objective term from the evaluation harness: ``weight * metric`` on the merged model."""

    metric: Literal["harm_rate", "alignment", "over_refusal", "acc_gen", "acc_mc", "acc_mc_norm",
                    "wrong_language"] = Field(description="evaluation metric (lower-is-better ones: use a negative "
                                                          "weight for alignment/acc_*)")
    weight: float = 1.0
    suite: str = "world"
    judge: str = Field("auto", description="auto (world for the world's models, rules for real models), world, "
                                           "rules, openai or llamaguard")
    limit: int | None = Field(8, ge=1, description="prompts per language to evaluate (keep small)")


class ObjectiveSpec(StrictModel):
    """L = safety_weight * L_safety + alpha * L_domain (+ extra terms); answer-only token cross-entropy."""

    safety: list[str] = Field(default_factory=list, description="prompt/completion JSONL file(s) of safe answers")
    domain: list[str] = Field(default_factory=list, description="prompt/completion JSONL file(s) of domain answers")
    alpha: float = Field(0.3, ge=0.0)
    safety_weight: float = Field(1.0, ge=0.0, description="0 (or no safety files) = safety-unaware search")
    max_examples: int | None = Field(None, ge=1, description="keep the first N examples per file and language")
    batch_size: int = Field(16, ge=1)
    language_margin: float | None = Field(
        None, ge=0.0, description="reject candidates whose safety loss on a language exceeds the safest pool "
                                  "model's on that language by more than this")
    extra: list[ExtraTerm] = Field(default_factory=list)

    @field_validator("safety", "domain", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> ObjectiveSpec:
        if not self.safety and not self.domain:
            raise ValueError("objective needs at least one of safety/domain JSONL files")
        if self.language_margin is not None and not self.safety:
            raise ValueError("objective.language_margin needs objective.safety files")
        return self

    @property
    def safety_aware(self) -> bool:
        return bool(self.safety) and self.safety_weight > 0


class OptimizerSpec(StrictModel):
    """How candidates are proposed."""

    name: Literal["cma", "grid", "lm_cocktail", "nsga2", "random"] = "cma"
    budget: int = Field(100, ge=1, description="maximum candidate evaluations")
    seed: int = 0
    sigma0: float = Field(1 / 6, gt=0.0, description="CMA-ES initial step size in the unit cube")
    popsize: int | None = Field(None, ge=2, description="CMA-ES / NSGA-II population (default 4 + floor(3 ln n))")
    x0: float = Field(0.5, ge=0.0, le=1.0, description="CMA-ES start point (fraction of each range)")
    grid: dict[str, list[float]] = Field(default_factory=lambda: dict(DEFAULT_GRID),
                                         description="param -> values for grid search")
    temperature: float = Field(5.0, gt=0.0, description="LM-Cocktail softmax temperature")
    cocktail_examples: int = Field(8, ge=1, description="LM-Cocktail: examples per objective set")
    select: str = Field("loss", description="how the best candidate is picked: loss (lowest objective, default), "
                                            "domain (lowest domain loss) or a metric of objective.extra (best "
                                            "value; paper B's grid search picks the best domain score)")

    def population(self, n_genes: int) -> int:
        """popsize, else 4 + floor(3 ln n); never more than the budget (at least 2)."""
        p = self.popsize or 4 + int(math.floor(3 * math.log(max(n_genes, 1))))
        return max(2, min(p, self.budget))


class OutputSpec(StrictModel):
    merge_best: bool = Field(False, description="also merge the best configuration to OUT/merged")
    dtype: str = Field("float32", description="dtype of the written merge config")


class SearchSpec(StrictModel):
    """A whole merge search."""

    pool: list[PoolModel] = Field(min_length=2)
    base_model: str | None = Field(None, description="base model path (or a pool name) for task-vector methods")
    method: str = "ties"
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    objective: ObjectiveSpec
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    workers: int = Field(0, ge=0, description="Ray workers evaluating candidates in parallel (0 = in process)")
    ray_address: str | None = Field(None, description="Ray cluster address (default: start a local Ray)")

    @model_validator(mode="after")
    def _names(self) -> SearchSpec:
        names = self.names()
        if len(set(names)) != len(names):
            raise ValueError(f"pool names must be unique, got {names}; set `name:` on the pool entries")
        unknown = sorted(set(self.space.models or []) - set(names))
        if unknown:
            raise ValueError(f"space.models names {unknown} are not pool names {names}")
        sel = self.optimizer.select
        if sel == "domain" and not self.objective.domain:
            raise ValueError("optimizer.select: domain needs objective.domain files")
        if sel not in ("loss", "domain") and sel not in {t.metric for t in self.objective.extra}:
            raise ValueError(f"optimizer.select: {sel!r} is neither loss, domain nor the metric of an objective.extra "
                             "term; add {metric: " + sel + ", weight: 0} to objective.extra to measure it without "
                             "changing the objective")
        return self

    def names(self) -> list[str]:
        return [p.name or _default_name(p.model, i) for i, p in enumerate(self.pool)]

    def base_name(self) -> str | None:
        """The state-dict key of the base model: a pool name, or '__base__' for a separate base model."""
        if self.base_model is None:
            return None
        return self.base_model if self.base_model in self.names() else "__base__"

    def model_paths(self) -> dict[str, str]:
        """state-dict key -> model location, base included."""
        out = {n: p.model for n, p in zip(self.names(), self.pool)}
        if self.base_name() == "__base__":
            out["__base__"] = str(self.base_model)
        return out


def _default_name(model: str, i: int) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(model.rstrip("/")).name) or f"model{i}"
    return name


def _resolve(p: str, root: Path) -> str:
    cand = root / p
    if not Path(p).is_absolute() and os.path.exists(cand):  # os.path: pathlib's raises for a name too long
        return str(cand.resolve())
    if os.path.exists(p):
        return str(Path(p).resolve())
    return p


def load_spec(source: str | os.PathLike | dict[str, Any]) -> SearchSpec:
    """Parse and validate a spec (YAML path or dict); resolve relative paths against the spec's folder."""
    from safemerge.utils.gguf import resolve_model

    spec, root = load_spec_model(source, SearchSpec, "search spec", "pool, method, space, objective, ...")
    # a .gguf pool/base model -> its converted (cached) HF dir; a dir with a quantization_config is refused
    pool = [p.model_copy(update={"model": resolve_model(_resolve(p.model, root)),
                                 "name": p.name or _default_name(p.model, i)})
            for i, p in enumerate(spec.pool)]
    base = spec.base_model
    if base is not None and base not in spec.names():
        base = resolve_model(_resolve(base, root))
    obj = spec.objective.model_copy(update={
        "safety": [_resolve(p, root) for p in spec.objective.safety],
        "domain": [_resolve(p, root) for p in spec.objective.domain],
        "extra": [t.model_copy(update={"suite": _resolve(t.suite, root)}) for t in spec.objective.extra],
    })
    return spec.model_copy(update={"pool": pool, "base_model": base, "objective": obj})


# ---------------------------------------------------------------------------------------------------------------
# checks that need files but no weights


def _read_config_json(location: str, key: str) -> dict[str, Any]:
    """A pool model's config.json (local folder, or the HF cache for a hub id)."""
    local = Path(location) / "config.json"
    if os.path.isfile(local):  # os.path: pathlib's raises for a name too long
        return json.loads(local.read_text())
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(location).to_dict()
    except Exception as exc:  # noqa: BLE001 - any loading problem is the user's path
        raise InputError(f"{key}: cannot read the config of model {location!r} ({type(exc).__name__}); "
                         "give a local HF model folder or a reachable hub id") from None


_ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
              "num_key_value_heads", "vocab_size")


def check_pool_architectures(spec: SearchSpec) -> int:
    """All pool models (and the base) must share architecture and shapes; returns the number of layers."""
    ref_key, ref = None, None
    for key, loc in spec.model_paths().items():
        cfg = _read_config_json(loc, f"pool.{key}")
        sig = {k: cfg.get(k) for k in _ARCH_KEYS}
        if ref is None:
            ref_key, ref = key, sig
            continue
        diff = [k for k in _ARCH_KEYS if sig[k] != ref[k]]
        if diff:
            k = diff[0]
            raise InputError(f"pool.{key}: architecture differs from pool.{ref_key} ({k}: {sig[k]} vs {ref[k]}); "
                             "merge only models fine-tuned from the same base")
    assert ref is not None
    return int(ref.get("num_hidden_layers") or 1)


def read_examples(path: str, max_examples: int | None = None, need_lang: bool = False) -> list[dict[str, Any]]:
    """Read an objective dataset: JSONL rows with ``prompt`` + ``completion`` (or a chat ``messages`` list)."""
    p = Path(path)
    if not os.path.isfile(p):
        raise InputError(f"{path}: objective dataset not found; pass a prompt/completion JSONL file")
    rows: list[dict[str, Any]] = []
    per_lang: dict[str, int] = {}
    for ln, row in iter_jsonl(p):
        if not isinstance(row, dict):
            raise InputError(f"{path}:{ln}: expected a JSON object with prompt and completion")
        row = _normalise_row(row, f"{path}:{ln}")
        if need_lang and not row.get("lang"):
            raise InputError(f"{path}:{ln}: missing column 'lang' (needed by objective.language_margin); "
                             "add a language code to every row")
        lang = str(row.get("lang") or "all")
        if max_examples is not None and per_lang.get(lang, 0) >= max_examples:
            continue
        per_lang[lang] = per_lang.get(lang, 0) + 1
        rows.append({"prompt": row["prompt"], "completion": row["completion"], "lang": lang})
    if not rows:
        raise InputError(f"{path}: no examples; the objective dataset is empty")
    return rows


def _normalise_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
        return row
    msgs = row.get("messages")
    if isinstance(msgs, list) and len(msgs) >= 2 and all(isinstance(m, dict) for m in msgs):
        users = [m for m in msgs if m.get("role") == "user"]
        if msgs[-1].get("role") == "assistant" and users:
            return {**row, "prompt": users[-1].get("content", ""), "completion": msgs[-1].get("content", "")}
    missing = [k for k in ("prompt", "completion") if not isinstance(row.get(k), str)]
    raise InputError(f"{where}: missing column(s) {missing}; each row needs string 'prompt' and 'completion' "
                     "(or a 'messages' list ending with the assistant answer)")
