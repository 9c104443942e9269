"""Turn a config + tensor headers into a per-tensor merge plan (no tensor is read here).

Semantics follow mergekit 0.1.5 without per-architecture tables:

- a tensor's layer index comes from its name (``.layers.N.``, ``.h.N.``, ``.blocks.N.``, ``.layer.N.``); every
  other tensor is an embedding ("pre": names with ``embed``/``wte``/``wpe``) or a head/final norm ("post");
- ``models:`` is one slice spanning every layer; the base model is appended as an input when not listed;
- gradients are evaluated at ``t = i / (n - 1)`` for the i-th of the n layers of a slice (``t = 1`` if n == 1);
  pre/post tensors use ``t = 0`` (the first value), pre with the first slice's sources, post with the last's;
- shared parameters: slice > global, filters matched on the output tensor name; per-model parameters:
  source > slice > global, filters matched on that input's tensor name;
- methods that need no base (linear, ...) treat the base as an ordinary input; methods that need one get it apart;
- a head (``lm_head.weight``) missing in a model with tied embeddings reads that model's input embedding; a head
  missing in every input is not written (tied output).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from safemerge.errors import ConfigError, InputError
from safemerge.merge.config import (
    ConditionalParameter,
    MergeConfig,
    Parameters,
    coerce,
    did_you_mean,
    resolve_parameter,
)
from safemerge.merge.methods import MethodSpec, get_method
from safemerge.merge.sources import TensorInfo, TensorSource

LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|block|layer)\.(\d+)\.")
PRE_HINTS = ("embed", "wte", "wpe", "word_embeddings", "tok_embeddings")
HEAD_SUFFIXES = ("lm_head.weight", "embed_out.weight")
VOCAB_HINTS = ("embed_tokens", "wte", "word_embeddings", "tok_embeddings", "embed_in")


def is_vocab_tensor(name: str) -> bool:
    """Embedding / LM-head tensors, whose first axis is the vocabulary."""
    return layer_index(name) is None and (any(h in name for h in VOCAB_HINTS) or name.endswith(HEAD_SUFFIXES))
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def layer_index(name: str) -> int | None:
    m = LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def with_layer(name: str, index: int) -> str:
    """``name`` with its layer number replaced by ``index``."""
    m = LAYER_RE.search(name)
    assert m is not None
    return name[: m.start(1)] + str(index) + name[m.end(1):]


def template_of(name: str) -> str:
    m = LAYER_RE.search(name)
    return name if m is None else name[: m.start(1)] + "{L}" + name[m.end(1):]


@dataclass(frozen=True)
class TensorTask:
    """One output tensor: where its inputs come from and the resolved parameters."""

    name: str
    inputs: tuple[tuple[str, str], ...]  # (model label, input tensor name) of the non-base inputs, in config order
    base: tuple[str, str] | None
    per_model: tuple[dict[str, Any], ...]
    global_params: dict[str, Any]
    out: TensorInfo  # output shape and dtype
    in_bytes: int
    layer: int | None = None
    t: float = 0.0
    copy: bool = False  # non-floating tensor: copied from the base (or first input)
    vocab_rows: int | None = None  # rows after vocabulary alignment (tokenizer_source), if any

    def describe(self, models: dict[str, str]) -> str:
        def fmt(v: Any) -> str:
            return f"{v:.4g}" if isinstance(v, float) else str(v)

        per = ", ".join(
            f"{models.get(label, label)}(" + ", ".join(f"{k}={fmt(v)}" for k, v in p.items()) + ")"
            for (label, _), p in zip(self.inputs, self.per_model)
        )
        shared = ", ".join(f"{k}={fmt(v)}" for k, v in self.global_params.items())
        head = "copy" if self.copy else per
        return f"{self.name} {list(self.out.shape)} {str(self.out.dtype).removeprefix('torch.')}: {head}" + (
            f" | {shared}" if shared and not self.copy else "")


@dataclass
class MergePlan:
    config: MergeConfig
    method: MethodSpec
    tasks: list[TensorTask]
    sources: dict[str, TensorSource]
    num_layers: int | None
    layer_sources: list[tuple[str, int]] = field(default_factory=list)  # per output layer: (model, input layer)

    @property
    def bytes_read(self) -> int:
        return sum(t.in_bytes for t in self.tasks)

    @property
    def bytes_written(self) -> int:
        return sum(t.out.nbytes for t in self.tasks)


@dataclass(frozen=True)
class _Slice:
    sources: tuple[tuple[str, int, int, Parameters | None], ...]  # (model, start, end, parameters)
    base: str | None
    parameters: Parameters | None


def _num_layers(src: TensorSource) -> int:
    idx = [i for n in src.infos() if (i := layer_index(n)) is not None]
    return max(idx) + 1 if idx else 0


def _slices(cfg: MergeConfig, sources: dict[str, TensorSource]) -> list[_Slice]:
    if cfg.models:
        srcs = [(m.model, 0, _num_layers(sources[m.model]), m.parameters) for m in cfg.models]
        if cfg.base_model and cfg.base_model not in {m.model for m in cfg.models}:
            srcs.append((cfg.base_model, 0, _num_layers(sources[cfg.base_model]), None))
        counts = {end for _, _, end, _ in srcs}
        if len(counts) != 1:
            detail = ", ".join(f"{m}: {end}" for m, _, end, _ in srcs)
            raise InputError(f"models have different numbers of layers ({detail}); use 'slices' with layer_range")
        return [_Slice(tuple(srcs), cfg.base_model, None)]
    out = []
    for s in cfg.slices or []:
        srcs = tuple((src.model, src.layer_range[0], src.layer_range[1], src.parameters) for src in s.sources)
        out.append(_Slice(srcs, s.base_model or cfg.base_model, s.parameters))
    return out


def _parameter_scopes(cfg: MergeConfig) -> list[tuple[str, Parameters | None]]:
    """Every ``parameters`` block of the recipe with where it is (naming the model of per-model blocks)."""
    scopes: list[tuple[str, Parameters | None]] = [("parameters", cfg.parameters)]
    scopes += [(f"models[{i}] ({m.model}) parameters", m.parameters) for i, m in enumerate(cfg.models or [])]
    for i, s in enumerate(cfg.slices or []):
        scopes.append((f"slices[{i}].parameters", s.parameters))
        scopes += [(f"slices[{i}].sources[{j}] ({src.model}) parameters", src.parameters)
                   for j, src in enumerate(s.sources)]
    return scopes


def _check_parameter_names(cfg: MergeConfig, method: MethodSpec) -> None:
    known = {p.name for p in method.params}
    for where, params in _parameter_scopes(cfg):
        for key in params or {}:
            if key not in known:
                raise ConfigError(f"{where}: unknown parameter {key!r} for merge_method {cfg.merge_method!r}"
                                  f"{did_you_mean(key, known)}; known: {', '.join(sorted(known)) or 'none'}")


def _setting_scalars(setting: Any) -> list[Any]:
    """The scalar values written in one parameter setting (scalar, gradient list, conditionals), in order."""
    if isinstance(setting, ConditionalParameter):
        return _setting_scalars(setting.value)
    if isinstance(setting, list):
        return [v for item in setting for v in _setting_scalars(item)]
    return [setting]


def check_parameter_values(cfg: MergeConfig, method: MethodSpec | None = None) -> None:
    """Type- and range-check every value of every method parameter at every level of the recipe (the facts are
    in the method registry: :class:`safemerge.merge.methods.ParamSpec`); one-line :class:`ConfigError` naming the
    block (and model), the key and the allowed values. Gradient values interpolate between the listed anchors, so
    checking the anchors checks every interpolated value. Reads no tensor."""
    method = method if method is not None else get_method(cfg.merge_method)
    specs = {p.name: p for p in method.params}
    for where, params in _parameter_scopes(cfg):
        for key, setting in (params or {}).items():
            spec = specs.get(key)
            if spec is None:
                continue  # reported by _check_parameter_names
            values = _setting_scalars(setting)
            if isinstance(setting, list) and not values:
                raise ConfigError(f"{where}: {key} is an empty list; give a value or a gradient list of values")
            for value in values:
                try:
                    value = coerce(value, spec.kind)  # type: ignore[arg-type]
                except ConfigError:
                    raise ConfigError(f"{where}: {key} = {value!r} is not a {_KIND_WORDS[spec.kind]}; "
                                      f"give a {_KIND_WORDS[spec.kind]} (merge_method {method.name})") from None
                if (problem := spec.problem(value)) is not None:
                    raise ConfigError(f"{where}: {key} {problem}; fix that value (merge_method {method.name}, "
                                      "see docs/merge.md)")


_KIND_WORDS = {"float": "number", "int": "whole number", "bool": "boolean (true/false)", "str": "string"}


def _check_architectures(cfg: MergeConfig, sources: dict[str, TensorSource]) -> None:
    """Every input's config.json parses (one-line error naming the file otherwise) and names the architecture of
    the base (or, without a base, of the first model): mergekit refuses to mix architectures too."""
    ref = cfg.base_model or cfg.referenced_models()[0]
    configs = {label: sources[label].config for label in cfg.referenced_models() if label in sources}

    def arch(c: dict[str, Any]) -> tuple[str, Any]:
        if isinstance(c.get("architectures"), list) and c["architectures"]:
            return "architectures", tuple(c["architectures"])
        return "model_type", c.get("model_type")

    def show(v: Any) -> str:
        return ", ".join(v) if isinstance(v, tuple) else str(v)

    want_key, want = arch(configs.get(ref, {}))
    for label, c in configs.items():
        key, got = arch(c)
        if label == ref or want is None or got is None or key != want_key or got == want:
            continue
        where = getattr(sources[label], "path", label)
        raise InputError(f"{where}: config.json {key} {show(got)} differs from {show(want)} of {ref} "
                         f"({'the base' if cfg.base_model else 'the first model'}); merge models of one architecture")


def _check_counts(cfg: MergeConfig, method: MethodSpec, sl: _Slice, where: str) -> None:
    labels = [m for m, *_ in sl.sources]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: a model is listed twice; list each model once")
    non_base = len(labels)
    if method.separates_base(sl.base):
        if not sl.base:
            raise ConfigError(f"{where}: merge_method {method.name!r} needs a base_model; add 'base_model: <path>'")
        if sl.base not in labels:
            raise ConfigError(f"{where}: base_model {sl.base!r} is not among the slice sources; add it as a source")
        non_base -= 1
    lo, hi = method.min_models, method.max_models
    if non_base < lo or (hi is not None and non_base > hi):
        want = f"exactly {lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
        raise ConfigError(f"{where}: merge_method {method.name!r} takes {want} non-base model(s), got {non_base}; "
                          "fix the models list")


def _resolve(method: MethodSpec, cfg: MergeConfig, sl: _Slice, out_name: str, in_names: dict[str, str], t: float,
             models: list[str]) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """Every parameter of ``method`` for one output tensor: ``(per non-base model, shared)``, each value found by
    mergekit's precedence or the registry default, required ones present and in range. The only resolution: the
    executor calls the method with these (:meth:`~safemerge.merge.methods.MethodSpec.call`), checking nothing again."""
    shared_scopes = [sl.parameters, cfg.parameters]
    global_params: dict[str, Any] = {}
    per_model: list[dict[str, Any]] = []
    for p in method.params:
        if p.per_model:
            continue
        found, value = resolve_parameter(p.name, shared_scopes, out_name, t, p.kind)
        if not found and p.required:
            raise ConfigError(f"parameters: missing required parameter {p.name!r} (tensor {out_name}); "
                              f"add '{p.name}: <value>' under parameters")
        global_params[p.name] = _checked(p, value, "parameters") if found else p.default
    src_params = {m: params for m, _, _, params in sl.sources}
    for model in models:
        scopes = [src_params.get(model), sl.parameters, cfg.parameters]
        values: dict[str, Any] = {}
        for p in method.params:
            if not p.per_model:
                continue
            found, value = resolve_parameter(p.name, scopes, in_names[model], t, p.kind)
            if not found and p.required:
                raise ConfigError(f"model {model}: missing required parameter {p.name!r} (tensor {in_names[model]}); "
                                  f"add '{p.name}: <value>' under that model's parameters or the global parameters")
            values[p.name] = _checked(p, value, f"model {model}: parameters") if found else p.default
        per_model.append(values)
    return tuple(per_model), global_params


def _checked(p: Any, value: Any, where: str) -> Any:
    if (problem := p.problem(value)) is not None:
        raise ConfigError(f"{where}: {p.name} {problem}; fix that value")
    return value


def _tied(src: TensorSource) -> bool:
    return bool(src.config.get("tie_word_embeddings", True))


def _embedding_name(src: TensorSource, shape: tuple[int, ...]) -> str | None:
    for name, info in src.infos().items():
        if is_vocab_tensor(name) and not name.endswith(HEAD_SUFFIXES) and info.shape == shape:
            return name
    return None


def _vocab_hint(cfg: MergeConfig, name: str) -> str:
    if is_vocab_tensor(name):
        return (" (vocabulary sizes differ: set 'tokenizer_source: base' to align embeddings to the base tokenizer, "
                "or resize the embeddings to one vocabulary before merging)")
    return "; the models must share one architecture"


def build_plan(cfg: MergeConfig, sources: dict[str, TensorSource], vocab_rows: int | None = None) -> MergePlan:
    """Validate everything that can be validated from headers and return the per-tensor plan."""
    method = get_method(cfg.merge_method)
    _check_parameter_names(cfg, method)
    check_parameter_values(cfg, method)
    for ref in cfg.referenced_models():
        if ref not in sources:
            raise InputError(f"model {ref!r} is referenced in the config but was not given")
    _check_architectures(cfg, sources)
    slices = _slices(cfg, sources)
    for i, sl in enumerate(slices):
        _check_counts(cfg, method, sl, "models" if cfg.models else f"slices[{i}]")
        for model, start, end, _ in sl.sources:
            n = _num_layers(sources[model])
            if end > n:
                raise ConfigError(f"slices[{i}]: layer_range [{start}, {end}] exceeds the {n} layers of {model}; "
                                  "fix layer_range")
    compute = DTYPES.get(cfg.dtype) if cfg.dtype else None
    out_dtype = DTYPES.get(cfg.out_dtype or "") or compute

    def task(name: str, sl: _Slice, in_names: dict[str, str], t: float, layer: int | None) -> TensorTask:
        order = [m for m, *_ in sl.sources]
        base = sl.base if method.separates_base(sl.base) else None
        others = [m for m in order if m != base]
        infos = {m: sources[m].infos()[in_names[m]] for m in order}
        shapes = {m: i.shape for m, i in infos.items()}
        is_vocab = vocab_rows is not None and is_vocab_tensor(name)
        if len({s[1:] if is_vocab else s for s in shapes.values()}) != 1:
            detail = ", ".join(f"{m}: {list(s)}" for m, s in shapes.items())
            raise InputError(f"tensor {name!r} has different shapes ({detail}){_vocab_hint(cfg, name)}")
        per_model, shared = _resolve(method, cfg, sl, name, in_names, t, others)
        if (problem := method.problem(per_model, shared)) is not None:
            raise ConfigError(f"merge_method {method.name}: {problem} (tensor {name}, models "
                              f"{', '.join(others)}); see docs/merge.md")
        dtypes = [compute or i.dtype for i in infos.values()]
        promoted = dtypes[0]
        for d in dtypes[1:]:
            promoted = torch.promote_types(promoted, d)
        floating = all(i.dtype.is_floating_point for i in infos.values())
        shape = next(iter(shapes.values()))
        if is_vocab:
            shape = (vocab_rows, *shape[1:])
        out = TensorInfo(tuple(shape), (out_dtype or promoted) if floating else infos[order[0]].dtype)
        return TensorTask(
            name=name, inputs=tuple((m, in_names[m]) for m in others),
            base=(base, in_names[base]) if base else None, per_model=per_model, global_params=shared, out=out,
            in_bytes=sum(i.nbytes for i in infos.values()), layer=layer, t=t, copy=not floating,
            vocab_rows=vocab_rows if is_vocab else None,
        )

    # non-layer tensors: union of names, head tensors may be tied
    first = slices[0].sources[0][0]
    ref_names = list(sources[first].infos())
    all_models = {m for sl in slices for m, *_ in sl.sources}
    nonlayer = sorted({n for m in all_models for n in sources[m].infos() if layer_index(n) is None})
    pre = [n for n in nonlayer if any(h in n for h in PRE_HINTS)]
    post = [n for n in nonlayer if n not in pre]

    def nonlayer_inputs(name: str, sl: _Slice) -> dict[str, str] | None:
        names = {}
        missing = []
        for m, *_ in sl.sources:
            if name in sources[m].infos():
                names[m] = name
            else:
                missing.append(m)
        if not missing:
            return names
        if name.endswith(HEAD_SUFFIXES):
            if not names:
                return None  # tied in every input: no head tensor in the output
            for m in missing:
                emb = _embedding_name(sources[m], sources[next(iter(names))].infos()[name].shape)
                if not _tied(sources[m]) or emb is None:
                    raise InputError(f"{getattr(sources[m], 'path', m)}: tensor {name!r} is missing and the model "
                                     "does not tie its embeddings; the models must share one architecture")
                names[m] = emb
            return {m: names[m] for m, *_ in sl.sources}
        raise InputError(f"{getattr(sources[missing[0]], 'path', missing[0])}: tensor {name!r} is missing "
                         f"(present in {next(iter(names))}); the models must share one architecture")

    tasks: list[TensorTask] = []
    for name in pre:
        if (names := nonlayer_inputs(name, slices[0])) is not None:
            tasks.append(task(name, slices[0], names, 0.0, None))
    # layer tensors
    templates_by_model = {m: sorted({template_of(n) for n in sources[m].infos() if layer_index(n) is not None})
                          for m in all_models}
    ref_templates = templates_by_model[first]
    for m, temps in templates_by_model.items():
        if temps != ref_templates:
            diff = sorted(set(temps) ^ set(ref_templates))[0]
            raise InputError(f"{getattr(sources[m], 'path', m)}: layer tensor names differ from {first} "
                             f"(e.g. {diff.replace('{L}', 'N')!r}); the models must share one architecture")
    out_layer = 0
    layer_sources: list[tuple[str, int]] = []
    for sl in slices:
        n = sl.sources[0][2] - sl.sources[0][1]
        for i in range(n):
            t = i / (n - 1) if n > 1 else 1.0
            for temp in ref_templates:
                out_name = temp.replace("{L}", str(out_layer))
                in_names = {m: temp.replace("{L}", str(start + i)) for m, start, _, _ in sl.sources}
                if not all(in_names[m] in sources[m].infos() for m in in_names):
                    continue  # this layer lacks an optional tensor (e.g. per-layer variants)
                tasks.append(task(out_name, sl, in_names, t, out_layer))
            layer_sources.append((sl.sources[0][0], sl.sources[0][1] + i))
            out_layer += 1
    for name in post:
        if (names := nonlayer_inputs(name, slices[-1])) is not None:
            tasks.append(task(name, slices[-1], names, 0.0, None))
    del ref_names
    return MergePlan(cfg, method, tasks, sources, out_layer if ref_templates else None, layer_sources)
