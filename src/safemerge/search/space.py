"""Search spaces: genes in the unit cube <-> mergekit-style merge configurations.

A :class:`SearchSpace` has one gene per (parameter, pool model, layer group) for per-model parameters (``weight``,
``density``) and per (parameter, layer group) for global ones (``t`` of SLERP). Genes live in [0, 1] and map
linearly onto each parameter's bounds. With ``layer_groups = G > 1`` a parameter becomes a G-long mergekit gradient
list, interpolated over the layers exactly as mergekit does (G = number of layers gives one value per layer);
embeddings, final norm and lm_head take the first value.

Decoded values are rounded to 6 decimals so that the configuration merged in memory and the YAML written to disk
are the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from safemerge.errors import ConfigError
from safemerge.search.spec import SearchSpec

if TYPE_CHECKING:
    from safemerge.merge.methods import MethodSpec

ROUND = 6


@dataclass(frozen=True)
class Gene:
    param: str
    model: str | None  # pool name for a per-model parameter, None for a global one
    group: int
    low: float
    high: float

    @property
    def label(self) -> str:
        who = f"{self.model}." if self.model else ""
        return f"{who}{self.param}[{self.group}]"

    def value(self, x: float) -> float:
        x = min(1.0, max(0.0, float(x)))
        return round(self.low + x * (self.high - self.low), ROUND)

    def unit(self, v: float) -> float:
        return min(1.0, max(0.0, (float(v) - self.low) / (self.high - self.low)))


@dataclass(frozen=True)
class SearchSpace:
    method: str
    pool: tuple[str, ...]    # every pool model (scored alone as a baseline)
    inputs: tuple[str, ...]  # the models listed under `models:` (the base of a task-vector method is not)
    base: str | None
    genes: tuple[Gene, ...]
    layer_groups: int
    fixed: dict[str, Any]
    model_fixed: dict[str, Any]
    dtype: str = "float32"

    @property
    def dim(self) -> int:
        return len(self.genes)

    def labels(self) -> list[str]:
        return [g.label for g in self.genes]

    def decode_values(self, x: list[float]) -> list[float]:
        return [g.value(xi) for g, xi in zip(self.genes, x)]

    def decode(self, x: list[float]) -> dict[str, Any]:
        """Genes -> a mergekit-style config dict whose model names are the pool names (and the base key)."""
        if len(x) != self.dim:
            raise ValueError(f"expected {self.dim} genes, got {len(x)}")
        per_model: dict[str, dict[str, list[float]]] = {m: {} for m in self.inputs}
        glob: dict[str, list[float]] = {}
        for gene, xi in zip(self.genes, x):
            target = per_model[gene.model] if gene.model else glob
            target.setdefault(gene.param, []).append(gene.value(xi))
        models = []
        for m in self.inputs:
            params: dict[str, Any] = dict(self.model_fixed)
            params.update({k: _scalar_or_list(v) for k, v in per_model[m].items()})
            models.append({"model": m, "parameters": params} if params else {"model": m})
        cfg: dict[str, Any] = {"merge_method": self.method, "models": models}
        if self.base is not None:
            cfg["base_model"] = self.base
        params = dict(self.fixed)
        params.update({k: _scalar_or_list(v) for k, v in glob.items()})
        if params:
            cfg["parameters"] = params
        cfg["dtype"] = self.dtype
        return cfg

    def encode_values(self, values: dict[str, float]) -> list[float]:
        """Unit-cube genes from ``{gene label or 'model.param' or 'param': value}`` (most specific wins)."""
        out = []
        for g in self.genes:
            keys = [g.label, f"{g.model}.{g.param}" if g.model else g.param, g.param]
            v = next((values[k] for k in keys if k in values), None)
            if v is None:
                raise ValueError(f"no value for gene {g.label}")
            out.append(g.unit(v))
        return out


def _scalar_or_list(v: list[float]) -> float | list[float]:
    return v[0] if len(v) == 1 else v


def build_space(spec: SearchSpec) -> SearchSpace:
    """Validate the space against the method registry (:func:`safemerge.merge.methods.get_method`) and the pool
    (no weights loaded)."""
    from safemerge.merge.methods import get_method

    method = get_method(spec.method, where="method")
    model_params = {p.name: p for p in method.params if p.per_model}
    global_params = {p.name: p for p in method.params if not p.per_model}
    names = spec.names()
    if method.needs_base and spec.base_model is None:
        raise ConfigError(f"base_model: method {method.name!r} needs a base model; set base_model to the common base "
                          "(a path or a pool name)")
    base = spec.base_model if spec.base_model in names else None
    inputs = [m for m in names if not (method.needs_base and m == base)]
    n = len(inputs)
    if n < method.min_models or (method.max_models is not None and n > method.max_models):
        hi = method.max_models if method.max_models is not None else "any"
        raise ConfigError(f"pool: method {method.name!r} merges {method.min_models}..{hi} non-base models, "
                          f"the pool has {n}; change the pool or the method")
    searched = spec.space.models or inputs
    not_inputs = sorted(set(searched) - set(inputs))
    if not_inputs:
        raise ConfigError(f"space.models: {not_inputs} is the base model of {method.name!r} and has no per-model "
                          "parameters; remove it from space.models")
    genes: list[Gene] = []
    for param in spec.space.params:
        lo, hi = spec.space.bound(param)
        if param in model_params:
            for m in searched:
                genes += [Gene(param, m, g, lo, hi) for g in range(spec.space.layer_groups)]
        elif param in global_params:
            genes += [Gene(param, None, g, lo, hi) for g in range(spec.space.layer_groups)]
        else:
            known = sorted(set(model_params) | set(global_params)) or ["(none)"]
            raise ConfigError(f"space.params: method {method.name!r} has no parameter {param!r}; "
                              f"its parameters are {known}")
    every = {**global_params, **model_params}
    for key, where, allowed in (("fixed", spec.space.fixed, every),
                                ("model_fixed", spec.space.model_fixed, model_params)):
        bad = sorted(set(where) - set(allowed))
        if bad:
            raise ConfigError(f"space.{key}: method {method.name!r} has no parameter(s) {bad}; "
                              f"choose from {sorted(allowed) or ['(none)']}")
    _check_values(method, spec)
    given = set(spec.space.params) | set(spec.space.fixed)
    for p, param in {**model_params, **global_params}.items():
        required = param.required or param.default is None
        if required and p not in given and not (p in model_params and p in spec.space.model_fixed):
            where = "space.model_fixed" if p in model_params else "space.fixed"
            raise ConfigError(f"space: method {method.name!r} needs {p!r}; add it to space.params or {where}")
    fixed_too = set(spec.space.fixed) | (set(spec.space.model_fixed) if spec.space.models is None else set())
    overlap = sorted(set(spec.space.params) & fixed_too)
    if overlap:
        raise ConfigError(f"space: {overlap} are both searched and fixed; remove them from fixed/model_fixed")
    return SearchSpace(method=method.name, pool=tuple(names), inputs=tuple(inputs), base=spec.base_name(),
                       genes=tuple(genes),
                       layer_groups=spec.space.layer_groups, fixed=dict(spec.space.fixed),
                       model_fixed=dict(spec.space.model_fixed), dtype=spec.output.dtype)


def _check_values(method: MethodSpec, spec: Any) -> None:
    """Searched bounds and fixed values lie in the parameters' ranges (the merge registry's facts), so that no
    candidate fails the merge's validation after the pool is loaded."""
    from safemerge.merge.config import coerce

    params = {p.name: p for p in method.params}
    for name in spec.space.params:
        p, (lo, hi) = params[name], spec.space.bound(name)
        if p.kind in ("float", "int") and (lo not in p.range or hi not in p.range):
            raise ConfigError(f"space.bounds.{name}: [{lo:g}, {hi:g}] leaves the range {p.range} of {name!r} for "
                              f"method {method.name!r}; narrow the bounds")
    for key, values in (("fixed", spec.space.fixed), ("model_fixed", spec.space.model_fixed)):
        for name, value in values.items():
            for v in value if isinstance(value, list) else [value]:
                kind: Any = params[name].kind
                if (problem := params[name].problem(coerce(v, kind, f"space.{key}.{name}"))) is not None:
                    raise ConfigError(f"space.{key}.{name} {problem}; fix that value (method {method.name!r})")


def with_paths(cfg: dict[str, Any], paths: dict[str, str]) -> dict[str, Any]:
    """Replace state-dict keys (pool names) by model locations: a config mergekit / ``safemerge merge`` can load."""
    out = dict(cfg)
    out["models"] = [{**m, "model": paths[m["model"]]} for m in cfg["models"]]
    if cfg.get("base_model") is not None:
        out["base_model"] = paths[cfg["base_model"]]
    return out
