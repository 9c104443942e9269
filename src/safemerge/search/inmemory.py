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

On a GPU (``ResidentModel(..., device="cuda")``) the pool is held on the device and merged there; the magnitude
ranks then come from the GPU's ``argsort`` (the order mergekit itself uses with ``--cuda``; only entries of equal
magnitude can rank differently from the CPU's), and random methods (DARE, DELLA) are drawn on the CPU with the
engine's generator so their masks stay those of ``merge_state_dicts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safemerge.errors import InputError

# methods whose only candidate-dependent pruning is magnitude trimming (served from cached ranks)
MAGNITUDE_METHODS = {"ties": True}  # name -> sign consensus


def load_state_dict(location: str, device: str = "cpu") -> dict[str, Any]:
    """Every tensor of a local HF checkpoint (safetensors, sharded or .bin), in its stored dtype, on ``device``."""
    from safemerge.merge.io import open_source

    src = open_source(location)
    return {name: src.get(name).contiguous().to(device) for name in src.infos()}


class PoolCache:
    """Per-pool constants: tensors in a compute dtype and magnitude ranks of task vectors (built on first use)."""

    def __init__(self, state_dicts: dict[str, dict[str, Any]], max_bytes: int | None = None):
        from safemerge.merge.io import DictSource

        self.state_dicts = state_dicts
        first = next((t for sd in state_dicts.values() for t in sd.values()), None)
        device = first.device if first is not None else None
        self.max_bytes = available_memory(device) // 2 if max_bytes is None else max_bytes
        self.bytes = 0
        self.sources = {label: DictSource(label, sd) for label, sd in state_dicts.items()}
        self._cast: dict[tuple[str, str, Any], Any] = {}
        self._vectors: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        self._l1: dict[tuple[int, int], Any] = {}

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
                     tie_break: str) -> tuple[Any, Any]:
        """Stacked deltas ``x_i - base`` [m, ...] in ``dtype`` and the descending-magnitude rank of every entry of
        each (int32, 0 = largest), computed once per pool.

        ``mergekit``: positions in ``torch.argsort(|delta|.float(), descending=True)``, the very call mergekit (and
        the engine's exact mode) makes, so ``rank < k`` is the kept set of any density; ``index``: a stable sort
        (lowest index first among equal magnitudes), the engine's ``tie_break: index`` order.
        """
        import torch

        key = (base, models, dtype, tie_break)
        if key not in self._vectors:
            b = self.tensor(*base, dtype)
            deltas = torch.stack([torch.sub(self.tensor(*m, dtype), b) for m in models])
            ranks = torch.empty(deltas.shape, dtype=torch.int32, device=deltas.device)
            for d, r in zip(deltas, ranks):
                w = d.abs().reshape(-1)
                w = w.float() if w.device.type == "cpu" else w
                if tie_break == "index":
                    order = torch.sort(w, descending=True, stable=True).indices
                else:
                    order = torch.argsort(w, descending=True)
                r.view(-1)[order] = torch.arange(w.numel(), dtype=torch.int32, device=w.device)
            self._vectors[key] = (deltas, ranks)
            self.bytes += deltas.nbytes + ranks.nbytes
        return self._vectors[key]

    def l1(self, stacked: Any, i: int) -> Any:
        """``stacked[i].abs().sum()`` (the L1 norm before pruning, for ``rescale``), computed once."""
        key = (stacked.data_ptr(), i)
        if key not in self._l1:
            self._l1[key] = stacked[i].abs().sum()
        return self._l1[key]


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
                    out = run_cached_task(plan, task, seed, self.cache, target)
                    if out is not target:
                        target.copy_(out)

    def load_pool_model(self, key: str) -> None:
        self.write(self.state_dicts[key])


def run_cached_task(plan: Any, task: Any, seed: int, cache: PoolCache, target: Any = None) -> Any:
    """:func:`safemerge.merge.engine.run_task` (no vocabulary alignment, no finite check) on cached inputs.

    With ``target`` (a tensor of the output's shape), a magnitude-pruned merge is written into it and returned.
    """
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
    if (method.name in MAGNITUDE_METHODS and base is not None and tensors
            and cache.serves(task.base, task.inputs, dtype, shared.get("tie_break", "mergekit"), base)):
        if (target is None or target.dtype != task.out.dtype or tuple(target.shape) != task.out.shape
                or target.device != base.device):
            target = None
        out = _magnitude_merge(method, task, base, dtype, per_model, shared, cache, target)
    elif method.random:  # the engine's CPU generator stream, whatever the device
        gen = torch.Generator().manual_seed(task_seed(seed, task.name))
        device = tensors[0].device if tensors else torch.device("cpu")
        cpu = [t.cpu() for t in tensors]
        out = method.apply(base.cpu() if base is not None else None, cpu, per_model, shared, gen).to(device)
    else:
        out = method.apply(base, tensors, per_model, shared, None)
    return out.to(task.out.dtype)


def _magnitude_merge(method: Any, task: Any, base: Any, dtype: Any, per_model: list[dict[str, Any]],
                     shared: dict[str, Any], cache: PoolCache, target: Any = None) -> Any:
    """``safemerge.merge.methods._task_vectors`` op for op, on cached deltas, with the magnitude trim served from
    cached ranks (the same kept sets): ``base + lambda * sum_i w_i m_i P(d_i) / D``."""
    import torch

    from safemerge.merge import sparsify as sp

    kw = method.resolve(len(task.inputs), per_model, shared)
    density, weight = kw["density"], kw["weight"]
    stacked, ranks = cache.task_vectors(task.base, task.inputs, dtype, kw.get("tie_break", "mergekit"))
    n = base.numel()
    ks = [n if d >= 1 else (0 if d <= 0 else max(1, int(d * n))) for d in density]
    shape = (-1, *([1] * base.dim()))
    # the engine's pruning: mergekit's delta * mask (a pruned entry is a zero of its own sign)
    keep = ranks < torch.tensor(ks, dtype=torch.int32, device=ranks.device).view(shape)
    deltas = stacked * keep.to(stacked.dtype)
    if kw["rescale"]:
        for i, d in enumerate(density):
            if d < 1 and n:
                sp.l1_rescale_(deltas[i], cache.l1(stacked, i))
    w = torch.tensor(list(weight), dtype=deltas.dtype, device=deltas.device).view(shape)
    deltas.mul_(w)
    if MAGNITUDE_METHODS[method.name]:
        agree = sign_agreement(deltas)
        # the engine's sum0(mask_(deltas, agree)): mergekit's weighted_deltas * mask, signed zeros included
        mixed = (deltas * agree).sum(dim=0)
        divisor = (w * agree).sum(dim=0)  # = where(disagree, 0, w).sum(0)
        divisor += divisor == 0  # 0 -> 1 (either sign of zero), exact elsewhere
    else:
        mixed = deltas.sum(dim=0)
        divisor = w.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    del deltas
    if kw["normalize"]:
        mixed /= divisor
    if kw["lambda_"] != 1:
        mixed *= kw["lambda_"]
    return mixed.add_(base) if target is None else torch.add(mixed, base, out=target)


def sign_agreement(deltas: Any) -> Any:
    """``1.0`` where an entry agrees with the elected sign of ``sum_i deltas_i`` (nonzero, same sign), else ``0.0``:
    :func:`safemerge.merge.sparsify.sign_agreement` as a float mask, in three elementwise
    passes (the boolean ``where`` and mask-and-fill ops are the slowest of a TIES merge on CPU)."""
    import torch

    sign = torch.where(deltas.sum(dim=0) >= 0, 1.0, -1.0).to(deltas.dtype)
    return (deltas * sign > 0).to(deltas.dtype)
