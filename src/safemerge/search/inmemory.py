"""A resident model that candidate merges are written into, in memory (no disk round trip).

The pool (and base) checkpoints are read once into state dicts. For every candidate, the merge plan of the engine
(:func:`safemerge.merge.plan.build_plan`, the same per-tensor parameter resolution as ``safemerge merge``) is run
tensor by tensor and each merged tensor is copied straight into the parameters of ONE model instance that stays
loaded (tensors the model does not use are not merged). What does not change between candidates is computed once
per pool and cached (:class:`PoolCache`):

- input tensors cast to the merge's compute dtype;
- for magnitude pruning (TIES), the task vectors ``x_i - base`` and the rank of every ``|x_i - base|`` entry in the
  exact order that mergekit's sort (or, with ``tie_break: index``, a stable sort) gives
  (:func:`safemerge.merge.sparsify.magnitude_ranks`); the method runs the engine's task-vector core on them through
  its ``ranked`` hook (:class:`safemerge.merge.methods.RankedDeltas`), so a candidate's trim to ``k`` entries is one
  ``rank < k`` compare instead of a selection or a sort.

The result is bit-identical to :func:`safemerge.merge.merge_state_dicts` for the same config and seed
(tests/search/test_inmemory_speed_semantics.py), so ``best.yaml`` reproduces the scored model exactly.

On a GPU (``ResidentModel(..., device="cuda")``) the pool is held on the device and merged there; the magnitude
ranks then come from the GPU's ``argsort`` (the order mergekit itself uses with ``--cuda``; only entries of equal
magnitude can rank differently from the CPU's), and random methods (DARE, DELLA) are drawn on the CPU with the
engine's generator so their masks stay those of ``merge_state_dicts``.
"""

from __future__ import annotations

from typing import Any

from safemerge.errors import InputError


def load_state_dict(location: str, device: str = "cpu") -> dict[str, Any]:
    """Every tensor of a local HF checkpoint (safetensors, sharded or .bin), in its stored dtype, on ``device``."""
    from safemerge.merge.io import load_state_dict as load

    return {name: t.contiguous().to(device) for name, t in load(location).items()}


class PoolCache:
    """Per-pool constants: tensors in a compute dtype and task vectors with magnitude ranks (built on first use)."""

    def __init__(self, state_dicts: dict[str, dict[str, Any]], max_bytes: int | None = None):
        from safemerge.merge.sources import DictSource

        self.state_dicts = state_dicts
        first = next((t for sd in state_dicts.values() for t in sd.values()), None)
        device = first.device if first is not None else None
        self.max_bytes = available_memory(device) // 2 if max_bytes is None else max_bytes
        self.bytes = 0
        self.sources = {label: DictSource(label, sd) for label, sd in state_dicts.items()}
        self._cast: dict[tuple[str, str, Any], Any] = {}
        self._vectors: dict[tuple[Any, ...], Any] = {}

    def tensor(self, label: str, name: str, dtype: Any) -> Any:
        """``state_dicts[label][name]`` in ``dtype`` (cast once)."""
        t = self.state_dicts[label][name]
        if dtype is None or t.dtype == dtype or not t.is_floating_point():
            return t
        key = (label, name, dtype)
        if key not in self._cast:
            self._cast[key] = t.to(dtype)
        return self._cast[key]

    def serves(self, base: tuple[str, str], models: tuple[tuple[str, str], ...], dtype: Any, tie_break: str,
               like: Any) -> bool:
        """Whether :meth:`task_vectors` is cached or fits the memory budget (else the engine's path is used)."""
        cost = like.numel() * len(models) * (like.element_size() + 4)
        return (base, models, dtype, tie_break) in self._vectors or self.bytes + cost <= self.max_bytes

    def task_vectors(self, base: tuple[str, str], models: tuple[tuple[str, str], ...], dtype: Any,
                     tie_break: str) -> Any:
        """The :class:`~safemerge.merge.methods.RankedDeltas` of ``models`` over ``base`` in ``dtype``: the stacked
        deltas ``x_i - base``, the rank of every entry under ``tie_break``
        (:func:`~safemerge.merge.sparsify.magnitude_ranks`) and the deltas' L1 norms, computed once per pool."""
        import torch

        from safemerge.merge.methods import RankedDeltas
        from safemerge.merge.sparsify import magnitude_ranks

        key = (base, models, dtype, tie_break)
        if key not in self._vectors:
            b = self.tensor(*base, dtype)
            deltas = torch.stack([torch.sub(self.tensor(*m, dtype), b) for m in models])
            ranks = torch.stack([magnitude_ranks(d, tie_break) for d in deltas])
            l1 = torch.stack([d.abs().sum() for d in deltas])
            self._vectors[key] = RankedDeltas(deltas, ranks, l1)
            self.bytes += deltas.nbytes + ranks.nbytes
        return self._vectors[key]

    def hook(self, base: tuple[str, str], models: tuple[tuple[str, str], ...], dtype: Any, like: Any) -> Any:
        """The ``ranked`` hook of a magnitude-trimming method for one tensor (a
        :data:`~safemerge.merge.methods.RankedHook`): its :meth:`task_vectors`, or None where they do not fit the
        memory budget (the method then computes them itself)."""
        def ranked(tie_break: str) -> Any:
            if not self.serves(base, models, dtype, tie_break, like):
                return None
            return self.task_vectors(base, models, dtype, tie_break)
        return ranked


def available_memory(device: Any = None) -> int:
    """Bytes of memory available now on ``device`` (host memory for the CPU; 0 where it is not known: nothing is
    cached then)."""
    import os

    if device is not None and device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class ResidentModel:
    """Pool state dicts + one loaded model whose weights are overwritten by each candidate merge."""

    def __init__(self, paths: dict[str, str], model_from: str | None = None, device: str = "cpu"):
        """Load the pool ``{name: checkpoint dir}`` and one model (from ``model_from``, default the first) onto
        ``device``; candidates are merged on that device."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.paths = dict(paths)
        self.state_dicts = {key: load_state_dict(loc, device) for key, loc in paths.items()}
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
    """:func:`safemerge.merge.task.run_task` (no vocabulary alignment, no finite check) on cached inputs; the
    methods that take magnitude ranks get them from the cache (:meth:`PoolCache.hook`)."""
    import torch

    from safemerge.merge.task import task_seed
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
    per_model, shared = task.per_model, task.global_params  # resolved and checked at plan time
    method = plan.method
    if method.takes_ranks and base is not None:
        out = method.call(base, tensors, per_model, shared, None, cache.hook(task.base, task.inputs, dtype, base))
    elif method.random:  # the engine's CPU generator stream, whatever the device
        gen = torch.Generator().manual_seed(task_seed(seed, task.name))
        device = tensors[0].device if tensors else torch.device("cpu")
        cpu = [t.cpu() for t in tensors]
        out = method.call(base.cpu() if base is not None else None, cpu, per_model, shared, gen).to(device)
    else:
        out = method.call(base, tensors, per_model, shared, None)
    return out.to(task.out.dtype)
