"""mergekit-compatible merge configuration (YAML read unchanged) and parameter resolution.

The schema follows mergekit 0.1.5: ``merge_method``, ``base_model``, ``models`` (each with ``parameters``) or
``slices`` (each with ``sources`` + ``layer_range``), ``parameters`` at every level, ``dtype``, ``out_dtype``,
``tokenizer_source`` / ``tokenizer`` (``source``, ``tokens``, ``pad_to_multiple_of``), ``chat_template``; plus
safemerge's ``output: lora`` and ``lora_rank`` (a PEFT adapter out, :mod:`safemerge.merge.lora_merge`). Unknown keys
are rejected with a "did you mean" hint.

Parameter values resolve with mergekit's precedence (slice source / model > output slice > global) and forms:
a scalar, a gradient list (interpolated over the layers of a slice), a ``{filter, value}`` conditional or a list of
them (the first whose ``filter`` is a substring of the tensor name wins; no filter or ``*`` matches everything).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from safemerge.errors import ConfigError
from safemerge.utils.config import FrozenStrictModel

Scalar = Union[StrictBool, StrictInt, StrictFloat, StrictStr]
ScalarOrGradient = Union[Scalar, list[Scalar]]

DTYPES = ("float32", "float16", "bfloat16", "float64")



class ConditionalParameter(FrozenStrictModel):
    """``{filter: self_attn, value: 0.5}``: applies to tensors whose name contains ``filter``."""

    value: ScalarOrGradient
    filter: str | None = None


ParameterSetting = Union[ConditionalParameter, list[ConditionalParameter], ScalarOrGradient]
Parameters = dict[str, ParameterSetting]


class InputModel(FrozenStrictModel):
    model: str
    parameters: Parameters | None = None


class InputSlice(FrozenStrictModel):
    model: str
    layer_range: tuple[int, int]
    parameters: Parameters | None = None


class OutputSlice(FrozenStrictModel):
    sources: list[InputSlice]
    base_model: str | None = None
    parameters: Parameters | None = None


class ModelTokenSource(FrozenStrictModel):
    """``{kind: model_token, model: M, token: T}`` (or ``token_id: N``): row T (or N) of model M's embedding."""

    kind: Literal["model_token"]
    model: str
    token: str | None = None
    token_id: StrictInt | None = None


class ZeroSource(FrozenStrictModel):
    """``{kind: zero}``: a zero row."""

    kind: Literal["zero"]


class TokenSetting(FrozenStrictModel):
    """One entry of ``tokenizer.tokens``: where the token's default row comes from; ``force``: every model gets it."""

    source: Union[ModelTokenSource, ZeroSource, StrictStr, None] = None
    force: StrictBool = False


class TokenizerBlock(FrozenStrictModel):
    """``tokenizer: {source: union | base | <model> | model:<path>, tokens: {...}, pad_to_multiple_of: N}``."""

    source: StrictStr = "union"
    tokens: dict[str, TokenSetting] | None = None
    pad_to_multiple_of: StrictInt | None = None


class MergeConfig(FrozenStrictModel):
    """A merge recipe in mergekit's YAML schema."""

    merge_method: str
    base_model: str | None = None
    models: list[InputModel] | None = None
    slices: list[OutputSlice] | None = None
    modules: dict[str, Any] | None = None
    parameters: Parameters | None = None
    dtype: Literal["float32", "float16", "bfloat16", "float64"] | None = None
    out_dtype: Literal["float32", "float16", "bfloat16", "float64"] | None = None
    tokenizer_source: str | None = None
    tokenizer: TokenizerBlock | None = None
    chat_template: str | None = None
    name: str | None = None  # accepted by mergekit-moe / evolve configs; only used in the model card
    output: Literal["model", "lora"] | None = None  # safemerge: "lora" writes a PEFT adapter (docs/merge.md)
    lora_rank: StrictInt | None = None  # safemerge: the adapter's rank for output: lora

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> MergeConfig:
        return load_config(path)

    @classmethod
    def from_text(cls, text: str, source: str = "<config>") -> MergeConfig:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{source}:{where} malformed YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
        except RecursionError:  # PyYAML recurses once per nesting level
            raise ConfigError(f"{source}: malformed YAML (nested too deeply to parse); fix the syntax") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a YAML mapping with merge_method and models/slices")
        return validate_config(data, source)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(exclude_none=True, mode="json"), sort_keys=False)

    # ---- derived views -------------------------------------------------------------------------
    @property
    def tokenizer_choice(self) -> str | None:
        return self.tokenizer.source if self.tokenizer is not None else self.tokenizer_source

    def referenced_models(self) -> list[str]:
        """Every model reference, in first-mention order (base first when given)."""
        seen: dict[str, None] = {}
        if self.base_model:
            seen[self.base_model] = None
        for m in self.models or []:
            seen[m.model] = None
        for s in self.slices or []:
            if s.base_model:
                seen[s.base_model] = None
            for src in s.sources:
                seen[src.model] = None
        return list(seen)


def _all_field_names() -> set[str]:
    names: set[str] = set()
    for model in (MergeConfig, InputModel, InputSlice, OutputSlice, TokenizerBlock, TokenSetting, ModelTokenSource,
                  ConditionalParameter):
        names.update(model.model_fields)
    names.discard("modules")
    return names


def did_you_mean(word: str, options: Any) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def validate_config(data: dict[str, Any], source: str = "<config>") -> MergeConfig:
    """Validate a parsed YAML mapping; one-line :class:`ConfigError` on any problem."""
    try:
        cfg = MergeConfig.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "union[", "list[")))
            if err["type"] == "extra_forbidden":
                key = str(err["loc"][-1])
                parts.append(f"unknown key {loc!r}{did_you_mean(key, _all_field_names())}")
            elif err["type"] == "missing":
                parts.append(f"missing required key {loc!r}")
            else:
                parts.append(f"{loc}: {err['msg']}")
        raise ConfigError(f"{source}: " + "; ".join(parts) + "; see docs/merge.md for the schema") from None
    if cfg.modules is not None:
        raise ConfigError(f"{source}: 'modules' (multi-module models) is not supported; use 'models' or 'slices'")
    if bool(cfg.models) == bool(cfg.slices):
        raise ConfigError(f"{source}: give exactly one of 'models' or 'slices' (non-empty)")
    if cfg.tokenizer_source and cfg.tokenizer:
        raise ConfigError(f"{source}: give either 'tokenizer_source' or a 'tokenizer' block, not both")
    _check_tokenizer(cfg, source)
    _check_output(cfg, source)
    if cfg.chat_template is not None and "{" not in cfg.chat_template:
        raise ConfigError(f"{source}: chat_template {cfg.chat_template!r} is not supported (named/auto templates); "
                          "give a Jinja template string or remove it")
    for i, s in enumerate(cfg.slices or []):
        lengths = {b - a for a, b in (src.layer_range for src in s.sources)}
        if not s.sources:
            raise ConfigError(f"{source}: slices[{i}].sources is empty; list at least one source")
        if any(a < 0 or b <= a for a, b in (src.layer_range for src in s.sources)):
            raise ConfigError(f"{source}: slices[{i}]: layer_range must be [start, end) with 0 <= start < end")
        if len(lengths) != 1:
            raise ConfigError(f"{source}: slices[{i}]: all sources must span the same number of layers")
    return cfg


def _check_tokenizer(cfg: MergeConfig, source: str) -> None:
    """The tokenizer block's values that need no model: the padding multiple and the ``tokens`` sources."""
    block = cfg.tokenizer
    if block is None:
        return
    if block.pad_to_multiple_of is not None and block.pad_to_multiple_of < 1:
        raise ConfigError(f"{source}: tokenizer.pad_to_multiple_of must be a positive whole number, got "
                          f"{block.pad_to_multiple_of}; e.g. 64")
    if not block.source.strip():
        raise ConfigError(f"{source}: tokenizer.source is empty; use union, base or a model path")
    models = cfg.referenced_models()
    for token, setting in (block.tokens or {}).items():
        where = f"{source}: tokenizer.tokens[{token!r}].source"
        if not token:
            raise ConfigError(f"{source}: tokenizer.tokens has an empty token; remove it or give the token's text")
        src = setting.source
        model = src if isinstance(src, str) else getattr(src, "model", None)
        if model is not None and model not in models:
            raise ConfigError(f"{where}: {model!r} is not one of the merged models{did_you_mean(model, models)}; "
                              "name a model listed in the config")
        if isinstance(src, ModelTokenSource):
            if (src.token is None) == (src.token_id is None):
                raise ConfigError(f"{where}: give exactly one of token or token_id")
            if src.token_id is not None and src.token_id < 0:
                raise ConfigError(f"{where}.token_id: {src.token_id} is negative; give a row index >= 0")


_LORA_DOCS = "see docs/merge.md, 'LoRA adapters out'"


def _check_output(cfg: MergeConfig, source: str) -> None:
    """``output: lora`` / ``lora_rank``: the combinations that cannot give an adapter."""
    if cfg.lora_rank is not None:
        if cfg.output != "lora":
            raise ConfigError(f"{source}: lora_rank needs 'output: lora'; add it or remove lora_rank")
        if cfg.lora_rank < 1:
            raise ConfigError(f"{source}: lora_rank must be a positive whole number, got {cfg.lora_rank}")
    if cfg.output != "lora":
        return
    if cfg.slices:
        raise ConfigError(f"{source}: output: lora needs 'models:' (slices change the layers, which an adapter "
                          f"cannot); {_LORA_DOCS}")
    if cfg.tokenizer is not None or cfg.tokenizer_source is not None:
        raise ConfigError(f"{source}: output: lora cannot change the vocabulary; remove tokenizer/tokenizer_source")
    if cfg.chat_template is not None:
        raise ConfigError(f"{source}: output: lora cannot change the chat template (the adapter keeps the base "
                          "tokenizer); remove chat_template")
    bases = {ModelRef.parse(m).path for m in cfg.referenced_models()}
    if len(bases) != 1:
        raise ConfigError(f"{source}: output: lora needs every model to be one base model plus an adapter "
                          f"('base+adapter'), got the bases {', '.join(sorted(bases))}; {_LORA_DOCS}")
    if not any(ModelRef.parse(m).lora for m in cfg.referenced_models()):
        raise ConfigError(f"{source}: output: lora needs at least one 'base+adapter' model; "
                          f"{_LORA_DOCS}")


def load_config(config: str | os.PathLike | dict | MergeConfig) -> MergeConfig:
    """A :class:`MergeConfig` from a YAML path, YAML text, a mapping or an existing config."""
    if isinstance(config, MergeConfig):
        return config
    if isinstance(config, dict):
        return validate_config(config)
    if isinstance(config, str) and "\n" in config:
        return MergeConfig.from_text(config)
    path = Path(config)
    if not os.path.isfile(path):  # os.path: pathlib's raises for a name too long
        raise ConfigError(f"{path}: merge config not found; pass the path of a mergekit YAML file")
    from safemerge.utils.config import read_text

    return MergeConfig.from_text(read_text(path, "merge config"), source=str(path))


def config_text(config: str | os.PathLike | dict | MergeConfig) -> str:
    """The recipe text to store next to the merged model (the user's YAML verbatim when there is one)."""
    if isinstance(config, MergeConfig):
        return config.to_yaml()
    if isinstance(config, dict):
        return yaml.safe_dump(config, sort_keys=False)
    if isinstance(config, str) and "\n" in config:
        return config
    return Path(config).read_text(encoding="utf-8")


# ---- parameter resolution ----------------------------------------------------------------------

ParamKind = Literal["float", "int", "bool", "str", "any"]


def kind_of(default: Any) -> ParamKind:
    """The scalar type of a parameter, from its default value."""
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "str"
    return "any"


def coerce(value: Any, kind: ParamKind, where: str = "") -> Any:
    """Validate a scalar for a parameter type (YAML strings like '1e-3' become numbers for numeric kinds)."""
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if isinstance(value, (int, float)) and value in (0, 1):
                return bool(value)
            raise ValueError
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        if kind in ("float", "any"):
            if isinstance(value, bool):
                if kind == "any":
                    return value
                raise ValueError
            if isinstance(value, (int, float)):
                return float(value) if kind == "float" else value
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    if kind == "any":
                        return value
                    raise
            raise ValueError
        return str(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"parameter {where}: {value!r} is not a valid {kind}; give a {kind} value") from None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def evaluate_setting(setting: ParameterSetting, tensor_name: str, t: float, kind: ParamKind = "any",
                     where: str = "") -> Any:
    """Resolve one setting for a tensor at relative layer position ``t`` in [0, 1]; ``None`` if no filter matches.

    Numeric gradients interpolate linearly between neighbouring anchors (anchors spread evenly over [0, 1]);
    non-numeric lists pick ``values[int(t * (n - 1))]``.
    """
    if isinstance(setting, dict):
        setting = ConditionalParameter(**setting)
    if isinstance(setting, ConditionalParameter):
        setting = [setting]
    if isinstance(setting, list) and setting and isinstance(setting[0], dict):
        setting = [ConditionalParameter(**c) for c in setting]
    if isinstance(setting, list):
        if not setting:
            return None
        if isinstance(setting[0], ConditionalParameter):
            for cond in setting:
                if cond.filter is None or cond.filter == "*" or (tensor_name and cond.filter in tensor_name):
                    return evaluate_setting(cond.value, tensor_name, t, kind, where)
            return None
        values = [coerce(v, kind, where) for v in setting]
        if not all(_is_number(v) for v in values):
            return values[int(t * (len(values) - 1))]
        scaled = t * (len(values) - 1)
        i0 = int(scaled)
        i1 = min(len(values) - 1, i0 + 1)
        frac = scaled - i0
        return coerce((1 - frac) * values[i0] + frac * values[i1], kind, where)
    return coerce(setting, kind, where)


def resolve_parameter(name: str, scopes: list[Parameters | None], tensor_name: str, t: float,
                      kind: ParamKind = "any") -> tuple[bool, Any]:
    """First non-None value of ``name`` over ``scopes`` (highest precedence first): ``(found, value)``."""
    for scope in scopes:
        if scope is not None and name in scope:
            value = evaluate_setting(scope[name], tensor_name, t, kind, where=f"{name!r} for {tensor_name}")
            if value is not None:
                return True, value
    return False, None


@dataclass(frozen=True)
class ModelRef:
    """``path`` or ``path+adapter_path`` (a LoRA/PEFT adapter applied over ``path``); an existing path whose name
    holds a ``+`` is that path (mergekit would split it)."""

    path: str
    lora: str | None = None

    @classmethod
    def parse(cls, ref: str) -> ModelRef:
        if "+" in ref and os.path.exists(ref):
            return cls(ref)
        parts = ref.split("+")
        if len(parts) > 2 or not all(parts):
            raise ConfigError(f"model reference {ref!r}: use 'path' or 'path+adapter_path'")
        return cls(parts[0], parts[1] if len(parts) == 2 else None)
