"""A resident model that candidate merges are written into, in memory (no disk round trip).

The pool (and base) checkpoints are read once into state dicts. For every candidate, the merge plan of the engine
(:func:`safemerge.merge.plan.build_plan`, the same per-tensor parameter resolution as ``safemerge merge``) is run
tensor by tensor and each merged tensor is copied straight into the parameters of ONE model instance that stays
loaded (tensors the model does not use are not merged). What does not change between candidates is computed once
per pool and cached (:class:`PoolCache`):

- input tensors cast to the merge's compute dtype;
- for magnitude pruning (TIES), the rank of every ``|x_i - base|`` entry in the exact order that mergekit's sort
  (or, with ``tie_break: index``, a stable sort) gives; a candidate's trim to ``k`` entries is then one
  ``rank < k`` compare instead of a selection or a sort.

The result is bit-identical to :func:`safemerge.merge.merge_state_dicts` for the same config and seed
(tests/search/test_inmemory_speed_semantics.py), so ``best.yaml`` reproduces the scored model exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safemerge.errors import InputError

# methods whose only candidate-dependent pruning is magnitude trimming (served from cached ranks)
MAGNITUDE_METHODS = {"ties": True}  # name -> sign consensus


def load_state_dict(location: str) -> dict[str, Any]:
    """Every tensor of a local HF checkpoint (safetensors, sharded or .bin), in its stored dtype."""
    from safemerge.merge.io import open_source

    src = open_source(location)
    return {name: src.get(name).contiguous() for name in src.infos()}


class PoolCache:
    """Per-pool constants: tensors in a compute dtype and magnitude ranks of task vectors (built on first use)."""

    def __init__(self, state_dicts: dict[str, dict[str, Any]]):
        from safemerge.merge.io import DictSource

        self.state_dicts = state_dicts
        self.sources = {label: DictSource(label, sd) for label, sd in state_dicts.items()}
        self._cast: dict[tuple[str, str, Any], Any] = {}
        self._ranks: dict[tuple[str, str, str, str, Any, str], Any] = {}

    def tensor(self, label: str, name: str, dtype: Any) -> Any:
        """``state_dicts[label][name]`` in ``dtype`` (cast once)."""
        t = self.state_dicts[label][name]
        if dtype is None or t.dtype == dtype or not t.is_floating_point():
            return t
        key = (label, name, dtype)
        if key not in self._cast:
            self._cast[key] = t.to(dtype)
        return self._cast[key]

    def rank(self, base: tuple[str, str], model: tuple[str, str], delta: Any, tie_break: str) -> Any:
        """Descending-magnitude rank (0 = largest) of every entry of ``delta = model - base`` (int32, flat).

        ``mergekit``: the positions of ``torch.argsort(|delta|.float(), descending=True)``, the very call mergekit
        (and the engine's exact mode) uses, so ``rank < k`` is the kept set of any density. ``index``: a stable
        sort (lowest index first among equal magnitudes), the engine's ``tie_break: index`` order.
        """
        import torch

        key = (*base, *model, delta.dtype, tie_break)
        if key not in self._ranks:
            w = delta.abs().reshape(-1)
            w = w.float() if w.device.type == "cpu" else w
            if tie_break == "index":
                order = torch.sort(w, descending=True, stable=True).indices
            else:
                order = torch.argsort(w, descending=True)
            rank = torch.empty(w.numel(), dtype=torch.int32)
            rank[order] = torch.arange(w.numel(), dtype=torch.int32)
            self._ranks[key] = rank.view(delta.shape)
        return self._ranks[key]


class ResidentModel:
    """Pool state dicts + one loaded model whose weights are overwritten by each candidate merge."""

    def __init__(self, paths: dict[str, str], model_from: str | None = None, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.paths = dict(paths)
        self.state_dicts = {key: load_state_dict(loc) for key, loc in paths.items()}
        self.cache = PoolCache(self.state_dicts)
        first = model_from or next(iter(paths.values()))
        self.model = AutoModelForCausalLM.from_pretrained(first, dtype=torch.float32).to(device)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(first)
        self._params = dict(self.model.named_parameters())
        ref = self.state_dicts[next(iter(paths))]
        missing = [n for n in self._params if n not in ref]
        if missing:
            raise InputError(f"{first}: checkpoint has no tensor {missing[0]!r} that the model needs; "
                             "re-save the model with save_pretrained")

    def write(self, tensors: dict[str, Any]) -> None:
        """Copy tensors into the resident model's parameters (tied weights are written once)."""
        import torch

        with torch.no_grad():
            for name, p in self._params.items():
                p.copy_(tensors[name])

    def load_merge(self, config: dict[str, Any], seed: int = 0) -> None:
        """Merge the pool with ``config`` (model names = state-dict keys) into the resident model.

        Same result as ``write(merge_state_dicts(config, pool, seed))``, with the per-pool constants cached.
        """
        import torch

        from safemerge.merge.config import load_config
        from safemerge.merge.plan import build_plan

        cfg = load_config(config)
        plan = build_plan(cfg, {n: self.cache.sources[n] for n in cfg.referenced_models()})
        done = {t.name for t in plan.tasks}
        missing = [n for n in self._params if n not in done]
        if missing:
            raise InputError(f"merge produced no tensor {missing[0]!r}; check that the pool checkpoints are complete")
        with torch.no_grad():
            for task in plan.tasks:
                target = self._params.get(task.name)
                if target is not None:
                    target.copy_(run_cached_task(plan, task, seed, self.cache))

    def load_pool_model(self, key: str) -> None:
        self.write(self.state_dicts[key])


def run_cached_task(plan: Any, task: Any, seed: int, cache: PoolCache) -> Any:
    """:func:`safemerge.merge.engine.run_task` (no vocabulary alignment, no finite check) on cached inputs."""
    import torch

    from safemerge.merge.engine import task_seed
    from safemerge.merge.plan import DTYPES

    compute = DTYPES.get(plan.config.dtype or "")
    refs = ([task.base] if task.base else []) + list(task.inputs)
    stored = [cache.state_dicts[label][name] for label, name in refs]
    dtype = None
    if all(t.is_floating_point() for t in stored):
        dtype = compute
        if dtype is None:
            dtype = stored[0].dtype
            for t in stored[1:]:
                dtype = torch.promote_types(dtype, t.dtype)
    if task.copy:
        return cache.tensor(*refs[0], dtype).to(task.out.dtype)
    base = cache.tensor(*task.base, dtype) if task.base else None
    tensors = [cache.tensor(label, name, dtype) for label, name in task.inputs]
    per_model = [dict(p) for p in task.per_model]
    shared = dict(task.global_params)
    method = plan.method
    if method.name in MAGNITUDE_METHODS and base is not None:
        out = _magnitude_merge(method, task, base, tensors, per_model, shared, cache)
    else:
        gen = torch.Generator().manual_seed(task_seed(seed, task.name)) if method.random else None
        out = method.apply(base, tensors, per_model, shared, gen)
    return out.to(task.out.dtype)


def _magnitude_merge(method: Any, task: Any, base: Any, tensors: Sequence[Any], per_model: list[dict[str, Any]],
                     shared: dict[str, Any], cache: PoolCache) -> Any:
    """The method's task-vector core with its magnitude trim served from cached ranks (same kept sets)."""
    from safemerge.merge import methods
    from safemerge.merge import sparsify as sp

    kw = method.resolve(len(tensors), per_model, shared)
    density, rescale, tie_break = kw["density"], kw["rescale"], kw.get("tie_break", "mergekit")

    def prune(i: int, delta: Any) -> Any:
        d = density[i]
        if d >= 1:
            return delta
        if d <= 0 or delta.numel() == 0:
            return delta.zero_()
        k = max(1, int(d * delta.numel()))
        rank = cache.rank(task.base, task.inputs[i], delta, tie_break)
        before = delta.abs().sum() if rescale else None
        delta.masked_fill_(rank >= k, 0)
        return delta if before is None else sp.l1_rescale_(delta, before)

    return methods._task_vectors(base, tensors, kw["weight"], prune, MAGNITUDE_METHODS[method.name],
                                 kw["normalize"], kw["lambda_"])
