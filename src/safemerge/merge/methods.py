"""Merge methods: short pure functions over the tensors of one weight, plus the registry ``METHODS``.

Names, parameters, defaults and arithmetic follow mergekit 0.1.5 (bit-identical on CPU, see docs/methods.md).
Every method takes ``(base, tensors, **params)``: ``base`` is the base model's tensor (``None`` where the method has
no base or the config gives none), ``tensors`` the other inputs in config order, per-model parameters as lists
aligned with ``tensors``. Inputs are never modified. Random methods draw only from the ``generator`` argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from safemerge.errors import ConfigError
from safemerge.merge import sparsify as sp
from safemerge.merge.config import did_you_mean

BasePolicy = Literal["required", "optional", "ignored"]
_PARALLEL_MIN = 1 << 16  # prune models in threads from this many elements per tensor ...
_PARALLEL_MAX = 1 << 24  # ... up to this many; a larger tensor (a 32k-vocabulary embedding or LM head) runs alone
#                          in the engine and sets a merge's peak memory: its models are pruned one after another
_MERGE_CHUNK = 1 << 20  # entries per step of the sign election / disjoint merge (every step is per entry)
_SLERP_CHUNK = 1024 * 1024  # mergekit's slerp reduction chunk (changes float rounding: keep it)


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _require_float(name: str, x: Tensor) -> None:
    if not x.is_floating_point():
        raise ConfigError(f"merge_method {name}: cannot merge non-floating tensor ({x.dtype}); copy buffers as is")


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


# ----------------------------------------------------------------------------------------------- interpolations
def linear(base: Tensor | None, tensors: Sequence[Tensor], *, weight: Sequence[float],
           normalize: bool = True) -> Tensor:
    """Weighted average ``sum_i w_i x_i / sum_i w_i`` (``/ sum_i w_i`` only with ``normalize``).

    Computed in float32 (float64 for float64 inputs), accumulated in input order, cast back.
    ``base`` is unused (mergekit treats the base as an ordinary input of a linear merge).
    """
    first = tensors[0]
    _require_float("linear", first)
    dtype = _compute_dtype(first)
    w = torch.tensor([list(weight)], dtype=dtype, device=first.device)
    coef = w[0].unsqueeze(-1)  # 1-element 1-D coefficients promote bf16/fp16 inputs to the compute dtype
    acc = torch.mul(first, coef[0])
    for x, c in zip(tensors[1:], coef[1:]):
        acc.addcmul_(x, c)
    if normalize:
        acc.div_(w.sum(dim=1))
    return acc.to(first.dtype)


def slerp(base: Tensor, tensors: Sequence[Tensor], *, t: float) -> Tensor:
    """Spherical interpolation from ``base`` (t=0) to ``tensors[0]`` (t=1) over the whole flattened tensor.

    ``theta = acos(<a/|a|, b/|b|>)``; ``sin((1-t) theta)/sin(theta) a + sin(t theta)/sin(theta) b``, or
    ``(1-t) a + t b`` when ``|cos theta| > 0.9995``. Float32 math (float64 for float64), norms and dot reduced in
    mergekit's 2^20-element chunks; norms below 1e-8 count as 1.
    """
    return slerp_pair(base, tensors[0], t)


def slerp_pair(v0: Tensor, v1: Tensor, t: float, dot_threshold: float = 0.9995, eps: float = 1e-8) -> Tensor:
    """SLERP of two tensors (see :func:`slerp`)."""
    _require_float("slerp", v0)
    dtype = _compute_dtype(v0)
    a, b = v0.reshape(1, -1), v1.reshape(1, -1)
    tt = torch.tensor([[t]], dtype=dtype, device=v0.device)
    n = a.shape[1]
    if n == 0:
        return ((1 - tt) * a + tt * b).reshape(v0.shape).to(v0.dtype)
    bufs = [torch.empty((1, min(n, _SLERP_CHUNK)), dtype=dtype, device=v0.device) for _ in range(2)]

    def chunk(src: Tensor, blk: slice, buf: Tensor) -> Tensor:
        part = src[:, blk]
        if part.dtype == dtype:
            return part
        out = buf[:, : blk.stop - blk.start]
        return out.copy_(part)

    chunks = list(_chunks(n, _SLERP_CHUNK))
    norms_a = [torch.linalg.vector_norm(chunk(a, c, bufs[0]), dim=1, keepdim=True) for c in chunks]
    norms_b = [torch.linalg.vector_norm(chunk(b, c, bufs[1]), dim=1, keepdim=True) for c in chunks]
    na = torch.linalg.vector_norm(torch.stack(norms_a), dim=0)
    nb = torch.linalg.vector_norm(torch.stack(norms_b), dim=0)
    na = torch.where(na > eps, na, 1)
    nb = torch.where(nb > eps, nb, 1)
    xa, xb = (torch.empty_like(bufs[0]) for _ in range(2))
    parts = []
    for c in chunks:
        m = c.stop - c.start
        x = torch.div(chunk(a, c, bufs[0]), na, out=xa[:, :m])
        y = torch.div(chunk(b, c, bufs[1]), nb, out=xb[:, :m])
        parts.append(x.mul_(y).sum(dim=1, keepdim=True))
    dot = torch.stack(parts).sum(dim=0).clamp(-1, 1)
    lin = dot.abs() > dot_threshold
    theta = torch.acos(torch.where(lin, 0, dot))
    sin_theta = torch.sin(theta)
    ca = torch.where(lin, 1 - tt, torch.sin((1 - tt) * theta) / sin_theta)
    cb = torch.where(lin, tt, torch.sin(tt * theta) / sin_theta)
    out = torch.empty_like(a)
    for c in chunks:
        m = c.stop - c.start
        x = torch.mul(chunk(a, c, bufs[0]), ca, out=xa[:, :m])
        y = torch.mul(chunk(b, c, bufs[1]), cb, out=xb[:, :m])
        out[:, c].copy_(x.add_(y))
    return out.reshape(v0.shape)


def _nuslerp_core(t: float, v0: Tensor, v1: Tensor, row_wise: bool, flatten: bool, eps: float = 1e-8) -> Tensor:
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif row_wise:
        v0, v1 = v0.transpose(0, -1), v1.transpose(0, -1)

    def unit(x: Tensor) -> Tensor:
        return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=1e-7)

    cos = torch.sum(unit(v0) * unit(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    spherical = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    out = torch.where(colinear, (1 - t) * v0 + t * v1, spherical)
    if row_wise and not flatten:
        out = out.transpose(0, -1)
    return out.reshape(shape)


def nuslerp(base: Tensor | None, tensors: Sequence[Tensor], *, weight: Sequence[float],
            nuslerp_row_wise: bool = False, nuslerp_flatten: bool = True) -> Tensor:
    """NuSLERP of two models with ``t = w_1 / (w_0 + w_1)`` (0.5 when the sum is ~0), computed in input dtype.

    With a base: ``base + slerp(t, x_0 - base, x_1 - base)`` (task-vector SLERP). ``nuslerp_flatten`` (default)
    interpolates the whole tensor; otherwise per row of the last dim, or of dim 0 with ``nuslerp_row_wise``.
    Collinear pairs (``1 - cos^2 <= 1e-16``) interpolate linearly.
    """
    total = sum(weight)
    t = 0.5 if abs(total) < 1e-6 else weight[1] / total
    x0, x1 = tensors
    if base is None:
        return _nuslerp_core(t, x0, x1, nuslerp_row_wise, nuslerp_flatten)
    return base + _nuslerp_core(t, x0 - base, x1 - base, nuslerp_row_wise, nuslerp_flatten)


def multislerp(base: Tensor | None, tensors: Sequence[Tensor], *, weight: Sequence[float],
               normalize_weights: bool = True, eps: float = 1e-8) -> Tensor:
    """Barycentric interpolation on the hypersphere (input dtype).

    ``u_i = x_i/(|x_i| + eps)`` (``x_i`` minus base if given); ``m = normalise(sum_i w_i u_i)``; tangent
    ``v = sum_i w_i (u_i - <u_i, m> m)``; ``result = (m cos|v| + v sin|v|/|v|) * sum_i w_i |x_i|`` (+ base), with
    ``|v|`` taken ``+ eps``. A single model is returned unchanged; two antipodal models fall back to linear.
    """
    if len(tensors) == 1:
        return tensors[0]
    x = torch.stack(list(tensors), dim=0)
    if base is not None:
        x -= base
    flat = x.view(x.shape[0], -1)
    w = torch.tensor(list(weight), dtype=x.dtype, device=x.device)
    if normalize_weights:
        w = w / w.sum()
    norms = torch.norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * w.view(-1, 1)).sum(0)
    mean_norm = torch.norm(mean)
    if mean_norm < eps:
        if x.shape[0] != 2:
            raise ConfigError("multislerp: the weighted sum of the models is zero (antipodal inputs with balancing "
                              "weights); change the models' weight values")
        out = (x[0] * w[0] + x[1] * w[1]).view(x.shape[1:])
        return out if base is None else out + base
    mean = mean / mean_norm
    tangents = units - (units * mean).sum(-1, keepdim=True) * mean
    v = (tangents * w.view(-1, 1)).sum(0)
    v_norm = torch.norm(v) + eps
    out = mean * torch.cos(v_norm) + v * (torch.sin(v_norm) / v_norm)
    out = (out * (norms.squeeze(-1) * w).sum()).view(x.shape[1:])
    return out if base is None else out + base


def karcher(base: Tensor | None, tensors: Sequence[Tensor], *, max_iter: int = 10, tol: float = 1e-5) -> Tensor:
    """Equal-weight Karcher (Riemannian) mean of the directions, scaled by the mean norm.

    Directions ``u_i = x_i/|x_i|`` of inputs with ``|x_i| > tol``; ``m`` starts at their normalised average and
    moves along ``sum_i a_i theta_i/sin(theta_i) (u_i - cos(theta_i) m)`` by the exponential map until the step
    is below ``tol`` or ``max_iter``; result ``(sum_i |x_i| / n) m``. Norms in float32, directions in input dtype.
    """
    if len(tensors) == 1:
        return tensors[0]
    dtype = _compute_dtype(tensors[0])
    alphas = [1.0 / len(tensors)] * len(tensors)
    norms = [torch.linalg.vector_norm(x.to(dtype)) for x in tensors]
    units = [torch.zeros_like(x) if n.item() == 0.0 else (x / n).to(x.dtype) for x, n in zip(tensors, norms)]
    valid = [i for i, n in enumerate(norms) if n.item() > tol]
    if not valid:
        return torch.zeros_like(tensors[0])
    a_sum = sum(alphas[i] for i in valid)
    a = [alphas[i] / a_sum for i in valid]
    u = [units[i] for i in valid]
    mean = torch.zeros_like(u[0])
    for ai, ui in zip(a, u):
        mean += ai * ui
    mean_norm = torch.linalg.vector_norm(mean.to(dtype))
    mean = u[0].clone() if mean_norm.item() < tol else (mean / mean_norm).to(mean.dtype)
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for ai, ui in zip(a, u):
            cos = torch.clamp(torch.dot(mean.flatten(), ui.flatten()), -1.0, 1.0)
            theta = torch.arccos(cos)
            if theta.item() < tol:
                continue
            tangent += ai * (theta / torch.sin(theta)) * (ui - cos * mean)
        step = torch.linalg.vector_norm(tangent.to(dtype))
        if step.item() < tol:
            break
        mean = (torch.cos(step) * mean + torch.sin(step) * (tangent / step)).to(mean.dtype)
        unit_norm = torch.linalg.vector_norm(mean.to(dtype))
        if unit_norm.item() > tol:
            mean = (mean / unit_norm).to(mean.dtype)
    scale = sum(ai * n for ai, n in zip(alphas, norms))
    return scale * mean


# -------------------------------------------------------------------------------------- task-vector methods
Pruner = Callable[[int, Tensor], Tensor]  # (model index, its delta: a row of the scratch stack, may be pruned in place)


def _task_vectors(base: Tensor, tensors: Sequence[Tensor], weight: Sequence[float], prune: Pruner | None,
                  consensus: bool, normalize: bool, lambda_: float, parallel: bool = False) -> Tensor:
    """Shared core: ``base + lambda * sum_i w_i m_i P(x_i - base) / D`` in the input dtype.

    ``P`` prunes, ``m_i`` is TIES sign agreement (1 without consensus) and ``D`` (only with ``normalize``) is
    ``sum_i w_i m_i`` per entry with consensus, ``sum_i w_i`` without (a ~0 divisor counts as 1). ``parallel``:
    prune the models in threads (only for pruners that draw no random numbers: the draw order is fixed).
    Two steps: :func:`_pruned_deltas` (``P(x_i - base)``), then :func:`_merge_deltas` (the rest).
    """
    if not tensors:
        return base
    deltas = _pruned_deltas(base, tensors, prune, parallel)
    return _merge_deltas(base, deltas, weight, consensus, normalize, lambda_)


def _pruned_deltas(base: Tensor, tensors: Sequence[Tensor], prune: Pruner | None, parallel: bool) -> Tensor:
    """The stacked task vectors ``P(x_i - base)`` [m, ...] in a fresh scratch tensor (TIES step 1: trim)."""
    deltas = torch.empty((len(tensors), *base.shape), dtype=base.dtype, device=base.device)

    def delta(i: int) -> None:
        torch.sub(tensors[i], base, out=deltas[i])
        if prune is not None:
            pruned = prune(i, deltas[i])
            if pruned.data_ptr() != deltas[i].data_ptr():
                deltas[i].copy_(pruned)

    if parallel and prune is not None and pruned_at_once(base.numel(), len(tensors)) > 1:
        # the magnitude sorts are single-threaded: run the models' pruning side by side
        with ThreadPoolExecutor(max_workers=len(tensors), thread_name_prefix="safemerge-prune") as pool:
            list(pool.map(delta, range(len(tensors))))
    else:
        for i in range(len(tensors)):
            delta(i)
    return deltas


def pruned_at_once(numel: int, n_models: int) -> int:
    """How many models' task vectors of a ``numel``-entry tensor a pruning method (``parallel``) prunes at once:
    all of them in threads from :data:`_PARALLEL_MIN` to :data:`_PARALLEL_MAX` entries, else one at a time."""
    return n_models if _PARALLEL_MIN <= numel <= _PARALLEL_MAX else 1


def _merge_deltas(base: Tensor, deltas: Tensor, weight: Sequence[float], consensus: bool, normalize: bool,
                  lambda_: float, chunk: int = _MERGE_CHUNK) -> Tensor:
    """``base + lambda * sum_i w_i m_i d_i / D`` from pruned task vectors ``deltas`` [m, ...] (a scratch tensor,
    overwritten): weight, elect the sign of ``sum_i w_i d_i`` and keep the agreeing entries (``m_i``, TIES steps 2
    and 3: elect sign, disjoint merge; only with ``consensus``), divide by ``D`` (``normalize``), scale, add.

    Every step is per entry, so a tensor of more than ``chunk`` entries is merged ``chunk`` entries at a time (each
    block made contiguous): the same bits, with the election's masks and sums a few MiB instead of several copies
    of the tensor (a 32000 x 1536 bf16 embedding with 2 models: ~0.5 GB)."""
    n = base.numel()
    if n <= chunk or not deltas.is_contiguous():
        return _merge_block(base, deltas, weight, consensus, normalize, lambda_)
    out = torch.empty_like(base)
    flat, stacked, target = base.reshape(-1), deltas.view(deltas.shape[0], -1), out.view(-1)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        target[a:b] = _merge_block(flat[a:b], stacked[:, a:b].contiguous(), weight, consensus, normalize, lambda_)
    return out


def _merge_block(base: Tensor, deltas: Tensor, weight: Sequence[float], consensus: bool, normalize: bool,
                 lambda_: float) -> Tensor:
    """:func:`_merge_deltas` on one block (or the whole tensor)."""
    w = torch.tensor(list(weight), dtype=deltas.dtype, device=deltas.device)
    w = w.view(-1, *([1] * base.dim()))
    deltas.mul_(w)
    if consensus and not normalize and deltas.shape[0] == 2 and deltas.is_floating_point():
        mixed = sp.agreeing_sum_pair(deltas)
    elif consensus:
        agree = sp.sign_agreement(deltas)
        mixed = sp.sum0(sp.mask_(deltas, agree))  # mergekit's weighted_deltas * mask
        if normalize:
            divisor = sp.sum0(w * agree)  # the sum of the agreeing weights
            mixed /= divisor.masked_fill_(divisor == 0, 1)
    else:
        mixed = sp.sum0(deltas)
        if normalize:
            divisor = w.sum(dim=0)
            mixed /= divisor.masked_fill_(divisor.abs() < 1e-8, 1)
    del deltas
    if lambda_ != 1:
        mixed *= lambda_
    return mixed.add_(base)


@dataclass(frozen=True)
class RankedDeltas:
    """Task vectors prepared once for many merges of the same inputs (a merge search's per-pool cache, see
    :class:`safemerge.search.inmemory.PoolCache`).

    ``deltas``: the stacked ``x_i - base`` [m, ...] in the compute dtype (read only); ``ranks``: the position of
    every entry of ``deltas[i]`` in the descending-magnitude order of the trim (int32, 0 = largest, see
    :func:`safemerge.merge.sparsify.magnitude_ranks`); ``l1[i] = ||deltas[i]||_1`` (for ``rescale``).
    """

    deltas: Tensor
    ranks: Tensor
    l1: Tensor


# the hook of a magnitude-trimming method: its tie_break -> the prepared task vectors, or None (then computed here)
RankedHook = Callable[[sp.TieBreak], RankedDeltas | None]


def _ranked_trim(vectors: RankedDeltas, density: Sequence[float], rescale: bool) -> Tensor:
    """:func:`_pruned_deltas` with :func:`_magnitude_pruner` from precomputed ranks, bit for bit:
    ``d_i * (rank_i < k_i)`` (mergekit's ``delta * mask``: a dropped entry is a zero of its own sign),
    ``k_i = kept_count(density_i, n)``, rescaled to ``||d_i||_1`` with ``rescale`` where ``density_i < 1``."""
    stacked, ranks = vectors.deltas, vectors.ranks
    n = stacked[0].numel()
    shape = (-1, *([1] * (stacked.dim() - 1)))
    ks = torch.tensor([sp.kept_count(d, n) for d in density], dtype=torch.int32, device=ranks.device).view(shape)
    deltas = stacked * (ranks < ks).to(stacked.dtype)
    if rescale:
        for i, d in enumerate(density):
            if d < 1 and n:
                sp.l1_rescale_(deltas[i], vectors.l1[i])
    return deltas


def _magnitude_pruner(density: Sequence[float], rescale: bool, tie_break: sp.TieBreak) -> Pruner:
    def prune(i: int, delta: Tensor) -> Tensor:
        if density[i] >= 1:
            return delta
        keep = sp.magnitude_mask(delta, density[i], tie_break)
        before = delta.abs().sum() if rescale else None
        sp.mask_(delta, keep)  # mergekit's tensor * mask
        return delta if before is None else sp.l1_rescale_(delta, before)
    return prune


def _outlier_pruner(density: Sequence[float], gamma: Sequence[float], rescale: bool,
                    tie_break: sp.TieBreak) -> Pruner:
    def prune(i: int, delta: Tensor) -> Tensor:
        if density[i] >= 1:
            return delta
        keep = sp.outlier_mask(delta, density[i], gamma[i], tie_break)
        before = delta.abs().sum() if rescale else None
        sp.mask_(delta, keep)  # mergekit's tensor * mask
        return delta if before is None else sp.l1_rescale_(delta, before)
    return prune


def task_arithmetic(base: Tensor, tensors: Sequence[Tensor], *, weight: Sequence[float], normalize: bool = False,
                    lambda_: float = 1.0, **_: Any) -> Tensor:
    """Task arithmetic: ``base + lambda * sum_i w_i (x_i - base)`` (``/ sum_i w_i`` with ``normalize``)."""
    return _task_vectors(base, tensors, weight, None, False, normalize, lambda_)


def ties(base: Tensor, tensors: Sequence[Tensor], *, weight: Sequence[float], density: Sequence[float],
         normalize: bool = True, lambda_: float = 1.0, rescale: bool = False,
         tie_break: sp.TieBreak = "mergekit", ranked: RankedHook | None = None, **_: Any) -> Tensor:
    """TIES: trim each delta to its ``max(1, int(density_i n))`` largest magnitudes, weight, elect the sign of
    ``sum_i w_i d_i``, sum the agreeing entries and divide by the sum of the agreeing weights (``normalize``).

    ``ranked`` (a merge search's cache): the task vectors with their magnitude ranks for this ``tie_break``; the
    trim is then a rank compare (:func:`_ranked_trim`), the same kept sets, and the rest the same core."""
    vectors = ranked(tie_break) if ranked is not None and tensors else None
    if vectors is not None:
        return _merge_deltas(base, _ranked_trim(vectors, density, rescale), weight, True, normalize, lambda_)
    prune = _magnitude_pruner(density, rescale, tie_break)
    return _task_vectors(base, tensors, weight, prune, True, normalize, lambda_, parallel=True)


def _dare_pruner(density: Sequence[float], rescale: bool, rescale_mode: sp.RescaleMode,
                 generator: torch.Generator | None) -> Pruner:
    return lambda i, d: sp.dare(d, density[i], generator, rescale=rescale, rescale_mode=rescale_mode, inplace=True)


def dare_linear(base: Tensor, tensors: Sequence[Tensor], *, weight: Sequence[float], density: Sequence[float],
                normalize: bool = False, lambda_: float = 1.0, rescale: bool = True,
                rescale_mode: sp.RescaleMode = "l1", generator: torch.Generator | None = None, **_: Any) -> Tensor:
    """DARE + task arithmetic: drop each delta entry with probability ``1 - density_i``, rescale the survivors
    (L1-norm matching by default, ``rescale_mode: inverse_p`` for the paper's ``1/density``), weighted sum."""
    prune = _dare_pruner(density, rescale, rescale_mode, generator)
    return _task_vectors(base, tensors, weight, prune, False, normalize, lambda_)


def dare_ties(base: Tensor, tensors: Sequence[Tensor], *, weight: Sequence[float], density: Sequence[float],
              normalize: bool = False, lambda_: float = 1.0, rescale: bool = True,
              rescale_mode: sp.RescaleMode = "l1", generator: torch.Generator | None = None, **_: Any) -> Tensor:
    """DARE drop-and-rescale of each delta, then TIES sign election and agreeing sum."""
    prune = _dare_pruner(density, rescale, rescale_mode, generator)
    return _task_vectors(base, tensors, weight, prune, True, normalize, lambda_)


def breadcrumbs(base: Tensor, tensors: Sequence[Tensor], *, weight: Sequence[float], density: Sequence[float],
                gamma: Sequence[float], normalize: bool = False, lambda_: float = 1.0, rescale: bool = False,
                tie_break: sp.TieBreak = "mergekit", **_: Any) -> Tensor:
    """Model Breadcrumbs: drop the ``int(gamma_i n)`` largest-magnitude outliers and the smallest entries so that
    ``int(density_i n)`` remain, then task arithmetic."""
    prune = _outlier_pruner(density, gamma, rescale, tie_break)
    return _task_vectors(base, tensors, weight, prune, False, normalize, lambda_, parallel=True)


def breadcrumbs_ties(base: Tensor, tensors: Sequence[Tensor], *, weight: Sequence[float],
                     density: Sequence[float], gamma: Sequence[float], normalize: bool = False,
                     lambda_: float = 1.0, rescale: bool = False, tie_break: sp.TieBreak = "mergekit",
                     **_: Any) -> Tensor:
    """Breadcrumbs pruning followed by TIES sign election."""
    prune = _outlier_pruner(density, gamma, rescale, tie_break)
    return _task_vectors(base, tensors, weight, prune, True, normalize, lambda_, parallel=True)


def _della_pruner(density: Sequence[float], epsilon: Sequence[float], rescale: bool,
                  rescale_mode: sp.RescaleMode, generator: torch.Generator | None, tie_break: sp.TieBreak) -> Pruner:
    return lambda i, d: sp.della(d, density[i], epsilon[i], generator, rescale=rescale, rescale_mode=rescale_mode,
                                 tie_break=tie_break, inplace=True)


def della(base: Tensor, tensors: Sequence[Tensor], *, weight: Sequence[float], density: Sequence[float],
          epsilon: Sequence[float], normalize: bool = True, lambda_: float = 1.0, rescale: bool = True,
          rescale_mode: sp.RescaleMode = "l1", generator: torch.Generator | None = None,
          tie_break: sp.TieBreak = "index", **_: Any) -> Tensor:
    """DELLA: per row, keep entry j with probability ``density - eps + 2 eps (rank_j - 1)/(n - 1)`` (rank of
    ``|delta|``; equal magnitudes ranked by index, or as mergekit's sort does with ``tie_break: mergekit``),
    rescale, then TIES sign election and agreeing sum (normalised by default)."""
    prune = _della_pruner(density, epsilon, rescale, rescale_mode, generator, tie_break)
    return _task_vectors(base, tensors, weight, prune, True, normalize, lambda_)


def della_linear(base: Tensor, tensors: Sequence[Tensor], *, weight: Sequence[float], density: Sequence[float],
                 epsilon: Sequence[float], normalize: bool = False, lambda_: float = 1.0, rescale: bool = True,
                 rescale_mode: sp.RescaleMode = "l1", generator: torch.Generator | None = None,
                 tie_break: sp.TieBreak = "index", **_: Any) -> Tensor:
    """DELLA pruning followed by a plain weighted sum of the deltas."""
    prune = _della_pruner(density, epsilon, rescale, rescale_mode, generator, tie_break)
    return _task_vectors(base, tensors, weight, prune, False, normalize, lambda_)


def sce(base: Tensor, tensors: Sequence[Tensor], *, select_topk: float = 1.0, **_: Any) -> Tensor:
    """SCE: Select the ``int(select_topk * #nonzero)`` entries of highest variance across the task vectors,
    Calculate weights ``w_i ~ mean(d_i^2)`` (sum 1), Erase entries against the elected sign;
    ``base + sum_i w_i m_i d_i / max(sum_i w_i m_i, 1e-6)``."""
    if not tensors:
        return base
    d = torch.stack([x - base for x in tensors], dim=0)
    if select_topk < 1:
        d = d * _sce_mask(d, select_topk).unsqueeze(0)
    agree = sp.sign_agreement(d)
    energy = d.square().reshape(d.shape[0], -1).mean(dim=1)
    total = torch.sum(energy).item()
    w = torch.ones_like(energy) / energy.shape[0] if abs(total) < 1e-6 else energy / total
    w = w.view(-1, *([1] * base.dim())) * agree
    return base + (d * w).sum(dim=0) / torch.sum(w, dim=0).clamp(min=1e-6)


def _sce_mask(d: Tensor, density: float) -> Tensor:
    if density <= 0:
        return torch.zeros_like(d[0], dtype=torch.bool)
    var = torch.var(d, dim=0, unbiased=False)
    k = int(torch.count_nonzero(var) * density)
    keep = torch.zeros_like(var, dtype=torch.bool)
    if k > 0:
        keep.view(-1)[torch.topk(var.abs().view(-1), k=k, largest=True).indices] = True
    return keep


def model_stock(base: Tensor, tensors: Sequence[Tensor], *, filter_wise: bool = False) -> Tensor:
    """Model Stock: ``t = n cos / (1 + (n - 1) cos)`` from the mean pairwise cosine of the deltas;
    ``t * mean_i x_i + (1 - t) * base`` (per row with ``filter_wise``; the base where the denominator is ~0)."""
    shape = base.shape
    if filter_wise:
        w0, ws = (base.unsqueeze(0), [x.unsqueeze(0) for x in tensors]) if base.dim() == 1 else (base, tensors)
    else:
        w0, ws = base.reshape(-1), [x.reshape(-1) for x in tensors]
    deltas = [x - w0 for x in ws]
    cosines = []
    for i, da in enumerate(deltas):
        for db in deltas[i + 1:]:
            norm = torch.norm(da, dim=-1) * torch.norm(db, dim=-1)
            cosines.append(((da * db).sum(dim=-1) / norm.clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    n = len(ws)
    denom = 1 + (n - 1) * cos
    singular = denom.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos), (n * cos) / torch.where(singular, torch.ones_like(denom), denom))
    return (t * (sum(ws) / n) + (1 - t) * w0).reshape(shape)


def nearswap(base: Tensor, tensors: Sequence[Tensor], *, t: float) -> Tensor:
    """NearSwap: ``w = clamp(t / max(|base - x|, 1e-6), 0, 1)``; ``w x + (1 - w) base`` (take the other
    model's value where the two are within ``t``, interpolate towards the base elsewhere)."""
    other = tensors[0]
    w = (t / torch.abs(base - other).clamp(min=1e-6)).clamp(min=0, max=1)
    return w * other + (1 - w) * base


def passthrough(base: Tensor | None, tensors: Sequence[Tensor], *, scale: Sequence[float | None] = (None,)) -> Tensor:
    """Passthrough: the single input, times ``scale`` when given."""
    return tensors[0] if scale[0] is None else tensors[0] * scale[0]


# ---------------------------------------------------------------------------- selective fusion (mergekit 0.1.5)
_FUSION_SAMPLE = 1_000_000  # above this many entries, arcee_fusion's quantiles come from a sample of this size


def arcee_fusion(base: Tensor, tensors: Sequence[Tensor], *, generator: torch.Generator | None = None) -> Tensor:
    """Arcee Fusion: take the other model's change only where it is an outlier of importance.

    ``d = x - base``; importance ``s = |d| * KL(p || q)`` with ``p = softmax(x) + 1e-8``, ``q = softmax(base) + 1e-8``
    over the last dim (one KL per row); Tukey's upper fence ``tau = s_(50) + 1.5 (s_(75) - s_(25))`` with ``s_(k)``
    the sorted ``s`` at index ``floor(k/100 (n - 1))`` (over 10^6 entries drawn with replacement from ``generator``
    when ``s`` has more); result ``base + d * [s >= tau]``. Input dtype, the mask float32 (as mergekit: bf16 inputs
    finish in float32), rounded once to the input dtype.
    """
    x = tensors[0]
    d = x - base
    p = torch.softmax(x, dim=-1) + 1e-8
    q = torch.softmax(base, dim=-1) + 1e-8
    score = d.abs() * torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)
    flat = score.reshape(-1)
    if flat.numel() > _FUSION_SAMPLE:
        flat = flat[torch.randint(flat.numel(), (_FUSION_SAMPLE,), generator=generator).to(flat.device)]
    ordered = torch.sort(flat).values
    q25, q50, q75 = ordered[(torch.tensor([0.25, 0.5, 0.75]) * (ordered.numel() - 1)).long().to(flat.device)]
    keep = (score >= q50 + 1.5 * (q75 - q25)).float()
    return (base + d * keep).to(base.dtype)


def _ram_merge(base: Tensor, tensors: Sequence[Tensor], epsilon: float,
               own_scale: Callable[[Tensor, Tensor, Tensor], Tensor] | None) -> Tensor:
    """``base + sum_i (u d_i s_i + o d_i / c)``: ``d_i = x_i - base`` zeroed where ``|d_i| <= epsilon``, ``c`` the
    number of models that change an entry, ``u = [c == 1]``, ``o = [c > 1]``; ``s_i = own_scale(active, u, o)``
    (per model, ``None``: 1). Rounded once to the input dtype."""
    if not tensors:
        return base
    d = torch.stack([x - base for x in tensors]).reshape(len(tensors), -1)
    active = d.abs() > epsilon
    d = d * active
    count = active.sum(dim=0, keepdim=True)
    unique, overlap = count == 1, count > 1
    own = d * unique if own_scale is None else d * unique * own_scale(active, unique, overlap).unsqueeze(-1)
    merged = (own + d * overlap / count.clamp(min=1)).sum(dim=0)
    return (base + merged.reshape(base.shape)).to(base.dtype)


def ram(base: Tensor, tensors: Sequence[Tensor], *, epsilon: float = 1e-5) -> Tensor:
    """RAM (Reinforced Agent Merging): ``d_i = x_i - base`` with entries ``|d_i| <= epsilon`` counted as unchanged
    (zeroed); an entry changed by one model alone takes its full delta, one changed by ``c > 1`` models their mean:
    ``base + sum_i d_i / max(c, 1)`` (computed as :func:`_ram_merge`, input dtype)."""
    return _ram_merge(base, tensors, epsilon, None)


def ramplus_tl(base: Tensor, tensors: Sequence[Tensor], *, r: float = 0.1, alpha: float = 0.2,
               epsilon: float = 1e-5) -> Tensor:
    """RAM+ (tensor-local): RAM with each model's unique entries amplified by ``lambda_i = 1 + r min(rho_i, alpha)``,
    ``rho_i = shared_i / max(own_i, epsilon)`` (``rho_i >= 0``): ``shared_i``/``own_i`` count the entries of this
    tensor that model ``i`` changes together with others / alone. ``lambda_i`` is float32 (as mergekit: bf16 inputs
    finish in float32), rounded once to the input dtype."""
    def scale(active: Tensor, unique: Tensor, overlap: Tensor) -> Tensor:
        rho = (active & overlap).sum(dim=1) / (active & unique).sum(dim=1).clamp(min=epsilon)
        return 1 + r * rho.clamp(min=0, max=alpha)
    return _ram_merge(base, tensors, epsilon, scale)


# ------------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Range:
    """The values a numeric parameter may take: ``lo``/``hi`` bounds (``None`` = unbounded), open or closed.

    Every numeric parameter must also be finite (no NaN/Inf)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x: object) -> bool:
        if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi))

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return "any finite number"


ANY = Range()
UNIT = Range(0.0, 1.0)  # a fraction: mergekit clamps values outside (density 1.7 acts as 1), so they are errors
NON_NEGATIVE = Range(0.0)


@dataclass(frozen=True)
class ParamSpec:
    """One mergekit YAML parameter of a method, with the facts that validate it before any tensor is read.

    ``kind`` is the scalar type (``float``/``int``/``bool``/``str``; :func:`_p` derives it from ``default``),
    ``range`` the allowed numeric values (see :class:`Range`), ``nullable`` whether ``null`` is allowed (it means
    "unset"), ``meaning`` what the parameter does and what values outside the usual range mean (docs/methods.md).
    """

    name: str
    per_model: bool
    default: float | int | bool | str | None
    required: bool = False
    extension: bool = False  # a safemerge option mergekit 0.1.5 does not know
    choices: tuple[str, ...] | None = None  # the allowed values of a string option
    kind: str = "str"  # float | int | bool | str
    range: Range = ANY
    nullable: bool = False
    meaning: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (already coerced to :attr:`kind`) is not allowed, or ``None``."""
        if value is None:
            return None if self.nullable else "must be given a value (null is not allowed)"
        if self.kind in ("float", "int"):
            if value not in self.range:
                r = self.range
                want = ("a finite number" if r == ANY else f"a number in {r}" if r.lo is not None and r.hi is not None
                        else f"a number {r}")
                return f"must be {want}, got {value!r}" + (f" ({self.meaning})" if self.meaning and r != ANY else "")
        elif self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(repr, self.choices))}, got {value!r}"
        return None


Sparsification = Literal["magnitude", "random", "magnitude_outliers", "della_magprune"]
Constraint = Callable[[Sequence[Mapping[str, Any]], Mapping[str, Any]], "str | None"]
_SORTING = frozenset({"magnitude", "magnitude_outliers", "della_magprune"})  # prunings that sort |delta|


@dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """One merge method: every fact about it, in its one registry entry (mergekit 0.1.5 names and defaults).

    - ``name``: the recipe's ``merge_method``; ``label``: the display name (tables, plots); ``summary``: what it
      computes, one phrase (the model card's "merged ... using <summary>"); ``reference_url``: the paper or source.
    - ``fn``: the pure function ``fn(base, tensors, **params)``.
    - ``base_policy``: ``required`` (needs ``base_model``), ``optional`` (used when given) or ``ignored`` (the base
      model, when configured, is an ordinary input: ``base=None`` and the base inside ``tensors``).
      ``task_vectors``: it merges the differences ``x_i - base`` (when it has a base), so the base must be the
      models' common ancestor; for slerp, nearswap and arcee_fusion the base is one of the two models merged.
    - ``min_models``/``max_models``: bounds on ``tensors`` (the inputs besides the base; for ``ignored``, all).
    - ``params``: the YAML parameters with kinds, defaults and ranges (:class:`ParamSpec`; the task-vector family's
      ``normalize``/``rescale`` defaults included); ``constraints``: joint checks on one tensor's resolved values,
      ``(per-model, shared) -> problem or None``.
    - ``sparsification``/``consensus``: the task-vector family's building blocks, mergekit's names: how each delta
      is pruned (``magnitude`` top-k, ``random`` drop, ``magnitude_outliers``, DELLA's ``della_magprune``) and
      whether TIES sign election keeps only the agreeing entries (``"sum"``).
    - ``random``: ``fn`` draws from its ``generator`` argument; ``takes_ranks``: ``fn`` takes ``ranked=`` (a
      :data:`RankedHook`): its only input-dependent pruning is a magnitude trim, which a merge search serves from
      magnitude ranks computed once per pool.
    - ``entrywise``: every output entry depends only on the inputs' entries at the same index, through ``+``, ``-``
      and products / quotients with finite scalars (linear, task_arithmetic), so a NaN or Inf input entry gives a
      NaN or Inf output entry (IEEE; 0 * Inf is NaN) and the tensor can be merged in chunks
      (:mod:`safemerge.merge.streamed`).
    - ``entry_sums``: ``fn`` sums over a tensor's entries (a norm, a mean, a variance, a count, an L1 ``rescale``),
      and a float sum split between torch's intra-op threads rounds differently, so the output's last bit can
      depend on the thread count (:meth:`thread_count_free`; the task-vector family sums only for ``rescale``).
    """

    name: str
    label: str
    summary: str
    reference_url: str | None = None
    fn: Callable[..., Tensor]
    base_policy: BasePolicy
    task_vectors: bool = False
    min_models: int = 0
    max_models: int | None = None
    params: tuple[ParamSpec, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    sparsification: Sparsification | None = None
    consensus: Literal["sum"] | None = None
    random: bool = False
    takes_ranks: bool = False
    entrywise: bool = False
    entry_sums: bool = True

    def thread_count_free(self, shared: Mapping[str, Any]) -> bool:
        """Whether the output's bits are the same at any torch intra-op thread count, with these resolved shared
        parameters: no sum over entries (``entry_sums``), or only an L1 ``rescale`` that is off (``rescale: false``
        or ``rescale_mode: inverse_p``, which multiplies by ``1 / p``)."""
        if self.entry_sums:
            return False
        return not (shared.get("rescale") and shared.get("rescale_mode", "l1") == "l1")

    @property
    def needs_base(self) -> bool:
        """Whether a recipe must set ``base_model``."""
        return self.base_policy == "required"

    @property
    def sorts_magnitudes(self) -> bool:
        """Whether pruning sorts each delta by magnitude (the engine's memory estimate adds one sort per model)."""
        return self.sparsification in _SORTING

    def separates_base(self, base: str | None) -> bool:
        """Whether the base model (``None``: not configured) is passed apart as ``base``, not as an ordinary input."""
        return self.base_policy == "required" or (self.base_policy == "optional" and base is not None)

    def problem(self, per_model: Sequence[Mapping[str, Any]], global_params: Mapping[str, Any]) -> str | None:
        """The first violated joint constraint for one tensor's resolved parameters, or ``None``."""
        for check in self.constraints:
            if (msg := check(per_model, global_params)) is not None:
                return msg
        return None

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise ConfigError(f"merge_method {self.name}: unknown parameter '{name}'; "
                          f"known: {', '.join(p.name for p in self.params)}")

    def resolve(self, n_models: int, per_model: Sequence[Mapping[str, Any]],
                global_params: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every parameter's value for one weight of a method-level call: ``(per-model, shared)`` with defaults
        filled (a per-model key given globally is every model's default, as in mergekit); ConfigError on unknown
        keys, missing required values or a wrong count. (A merge plan resolves and checks a recipe once, when it is
        built: :func:`safemerge.merge.plan.build_plan`.)"""
        if len(per_model) != n_models:
            raise ConfigError(f"merge_method {self.name}: {len(per_model)} per-model parameter sets for "
                              f"{n_models} models")
        for key in global_params:  # per-model keys are allowed globally: the default for every model
            self.param(key)
        models: list[dict[str, Any]] = [{} for _ in per_model]
        shared: dict[str, Any] = {}
        for p in self.params:
            if p.per_model:
                for i, params in enumerate(per_model):
                    value = params.get(p.name, global_params.get(p.name, p.default))
                    if value is None and p.required:
                        raise ConfigError(f"merge_method {self.name}: parameter '{p.name}' is required for model "
                                          f"{i}; set it under that model's parameters")
                    models[i][p.name] = value
            else:
                value = global_params.get(p.name, p.default)
                if value is None and p.required:
                    raise ConfigError(f"merge_method {self.name}: parameter '{p.name}' is required; set it under "
                                      "parameters")
                shared[p.name] = value
        for params in per_model:
            for key in params:
                self.param(key)
        return models, shared

    def apply(self, base: Tensor | None, tensors: Sequence[Tensor], per_model: Sequence[Mapping[str, Any]],
              global_params: Mapping[str, Any], generator: torch.Generator | None = None,
              ranked: RankedHook | None = None) -> Tensor:
        """Merge one weight (the method-level API): check the base and the model count, fill defaults
        (:meth:`resolve`), then :meth:`call`."""
        if self.needs_base and base is None:
            raise ConfigError(f"merge_method {self.name}: needs base_model; set base_model in the config")
        if len(tensors) < self.min_models or (self.max_models is not None and len(tensors) > self.max_models):
            bound = f"{self.min_models}..{self.max_models if self.max_models is not None else 'any'}"
            raise ConfigError(f"merge_method {self.name}: takes {bound} models besides the base, got {len(tensors)}")
        models, shared = self.resolve(len(tensors), per_model, global_params)
        return self.call(base, tensors, models, shared, generator, ranked)

    def call(self, base: Tensor | None, tensors: Sequence[Tensor], per_model: Sequence[Mapping[str, Any]],
             shared: Mapping[str, Any], generator: torch.Generator | None = None,
             ranked: RankedHook | None = None) -> Tensor:
        """Merge one weight with parameters already resolved and checked (every one of :attr:`params` present, as a
        merge plan holds them: nothing is looked up or checked again per tensor). Inputs are promoted to a common
        dtype first (as mergekit does); ``fn`` gets per-model values as lists. ``ranked``: precomputed task vectors
        and magnitude ranks of these inputs, used by the methods that :attr:`takes_ranks`."""
        kwargs: dict[str, Any] = {
            "lambda_" if p.name == "lambda" else p.name: [m[p.name] for m in per_model] if p.per_model
            else shared[p.name] for p in self.params}
        everything = [x for x in (base, *tensors) if x is not None]
        dtype = everything[0].dtype
        for x in everything[1:]:
            dtype = torch.promote_types(dtype, x.dtype)
        base = base.to(dtype) if base is not None else None
        tensors = [x.to(dtype) for x in tensors]
        if self.random:
            kwargs["generator"] = generator
        if self.takes_ranks and ranked is not None:
            kwargs["ranked"] = ranked
        return self.fn(base, tensors, **kwargs)


def _p(name: str, default: Any = None, *, per_model: bool = False, required: bool = False,
       extension: bool = False, choices: tuple[str, ...] | None = None, kind: str | None = None,
       range: Range = ANY, nullable: bool = False, meaning: str = "") -> ParamSpec:  # noqa: A002
    if kind is None:
        kind = ("bool" if isinstance(default, bool) else "int" if isinstance(default, int)
                else "float" if isinstance(default, float) else "str")
    return ParamSpec(name, per_model, default, required, extension, choices, kind, range, nullable, meaning)


def _weight_sum_nonzero(flag: str, min_models: int) -> Constraint:
    """``flag`` (normalize / normalize_weights) divides by the sum of the weights (from ``min_models`` models on):
    the sum must not be ~0."""
    def check(per_model: Sequence[Mapping[str, Any]], shared: Mapping[str, Any]) -> str | None:
        weights = [p.get("weight", shared.get("weight")) for p in per_model]
        if shared.get(flag, True) and len(weights) >= min_models and all(isinstance(w, (int, float)) for w in weights) \
                and abs(sum(weights)) < 1e-8:
            return (f"the weights {weights} sum to 0 and {flag}: true divides by their sum (the result would be "
                    f"Inf/NaN); change the weights or set {flag}: false")
        return None
    return check


def _della_band(per_model: Sequence[Mapping[str, Any]], shared: Mapping[str, Any]) -> str | None:
    """DELLA keeps entries with probabilities in [density - epsilon, density + epsilon]: inside (0, 1)."""
    for p in per_model:
        density, epsilon = p.get("density", shared.get("density", 1.0)), p.get("epsilon", shared.get("epsilon", 0.15))
        if 0 < density < 1 and not (density - epsilon > 0 and density + epsilon < 1):
            return (f"density={density:g}, epsilon={epsilon:g}: DELLA needs density - epsilon > 0 and "
                    "density + epsilon < 1; lower epsilon or change density")
    return None


_WEIGHT = _p("weight", per_model=True, required=True, kind="float",
             meaning="negative weights subtract a model's delta, weights above 1 amplify it, as in mergekit")
_TIE = _p("tie_break", "mergekit", extension=True, choices=("mergekit", "index"))
# DELLA's output cannot equal mergekit's file anyway (its random stream is seeded per tensor, see the engine), so
# its default ranks equal magnitudes by index (O(n) radix sort); "mergekit" gives mergekit's exact per-tensor masks
_TIE_DELLA = _p("tie_break", "index", extension=True, choices=("mergekit", "index"))
_RESCALE_MODE = _p("rescale_mode", "l1", extension=True, choices=("l1", "inverse_p"))
_DENSITY = _p("density", 1.0, per_model=True, range=UNIT,
              meaning="the fraction of each delta kept: 0 keeps none (the base), 1 keeps all")
_LAMBDA = _p("lambda", 1.0, meaning="scales the merged delta: 0 gives the base, negative reverses it, as in mergekit")


def _gta(*, normalize: bool, rescale: bool, extra: tuple[ParamSpec, ...] = ()) -> tuple[ParamSpec, ...]:
    """The parameters of mergekit's generalized task arithmetic, with this method's ``normalize``/``rescale``
    defaults, then its own ``extra`` ones."""
    return (_p("int8_mask", False), _p("normalize", normalize), _p("rescale", rescale), _LAMBDA,
            _WEIGHT, _DENSITY, *extra)


_GAMMA = _p("gamma", 0.01, per_model=True, range=UNIT, meaning="the fraction of largest-magnitude entries dropped")
_EPSILON = _p("epsilon", 0.15, per_model=True, range=Range(0.0, 0.5, hi_open=True),
              meaning="half-width of DELLA's keep-probability band around density")
_SLERP_T = _p("t", required=True, kind="float",
              meaning="0 gives the base, 1 the other model; outside [0, 1] SLERP extrapolates along the arc, "
                      "as in mergekit")
_NEARSWAP_T = _p("t", required=True, kind="float", range=NON_NEGATIVE,
                 meaning="the distance below which the other model's value is taken; negative would always give "
                         "the base")
_RAM_EPSILON = _p("epsilon", 1e-5, range=NON_NEGATIVE,
                  meaning="the |delta| up to which an entry counts as unchanged; negative would count every entry")
_ARXIV = "https://arxiv.org/abs/"

METHODS: dict[str, MethodSpec] = {s.name: s for s in (
    MethodSpec(name="linear", label="Linear", fn=linear, base_policy="ignored", min_models=1,
               summary="a weighted average of the models' weights", reference_url=_ARXIV + "2203.05482",
               params=(_WEIGHT, _p("normalize", True)), constraints=(_weight_sum_nonzero("normalize", 1),),
               entrywise=True, entry_sums=False),
    MethodSpec(name="slerp", label="SLERP", fn=slerp, base_policy="required", min_models=1, max_models=1,
               summary="spherical linear interpolation between the base and one other model",
               reference_url="https://en.wikipedia.org/wiki/Slerp", params=(_SLERP_T,)),
    MethodSpec(name="nuslerp", label="NuSLERP", fn=nuslerp, base_policy="optional", task_vectors=True,
               min_models=2, max_models=2,
               summary="spherical interpolation of two models (of their task vectors when a base is given)",
               params=(_WEIGHT, _p("nuslerp_row_wise", False), _p("nuslerp_flatten", True))),
    MethodSpec(name="multislerp", label="Multi-SLERP", fn=multislerp, base_policy="optional", task_vectors=True,
               min_models=1,
               summary="barycentric spherical interpolation of the models (of their task vectors when a base is given)",
               reference_url="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
               params=(_WEIGHT, _p("normalize_weights", True),
                       _p("eps", 1e-8, range=Range(0.0, lo_open=True), meaning="a division guard; 0 divides by zero")),
               constraints=(_weight_sum_nonzero("normalize_weights", 2),)),
    MethodSpec(name="karcher", label="Karcher mean", fn=karcher, base_policy="ignored", min_models=1,
               summary="the Karcher (Riemannian) mean of the models' weight directions, at their mean norm",
               reference_url=_ARXIV + "2603.04972",
               params=(_p("max_iter", 10, range=NON_NEGATIVE, meaning="iterations of the mean's refinement"),
                       _p("tol", 1e-5, range=NON_NEGATIVE, meaning="the convergence tolerance"))),
    MethodSpec(name="task_arithmetic", label="Task arithmetic", fn=task_arithmetic, base_policy="required",
               task_vectors=True, summary="task arithmetic: the base plus weighted task vectors",
               reference_url=_ARXIV + "2212.04089", params=_gta(normalize=False, rescale=False), entrywise=True,
               entry_sums=False),
    MethodSpec(name="ties", label="TIES", fn=ties, base_policy="required", task_vectors=True,
               summary="TIES: trimmed task vectors with sign election", reference_url=_ARXIV + "2306.01708",
               sparsification="magnitude", consensus="sum", takes_ranks=True,
               params=_gta(normalize=True, rescale=False, extra=(_TIE,)), entry_sums=False),
    MethodSpec(name="dare_linear", label="DARE-linear", fn=dare_linear, base_policy="required", task_vectors=True,
               summary="DARE: randomly dropped, rescaled task vectors, summed linearly",
               reference_url=_ARXIV + "2311.03099", sparsification="random", random=True,
               params=_gta(normalize=False, rescale=True, extra=(_RESCALE_MODE,)), entry_sums=False),
    MethodSpec(name="dare_ties", label="DARE-TIES", fn=dare_ties, base_policy="required", task_vectors=True,
               summary="DARE-TIES: randomly dropped, rescaled task vectors with sign election",
               reference_url=_ARXIV + "2311.03099", sparsification="random", consensus="sum", random=True,
               params=_gta(normalize=False, rescale=True, extra=(_RESCALE_MODE,)), entry_sums=False),
    MethodSpec(name="breadcrumbs", label="Breadcrumbs", fn=breadcrumbs, base_policy="required", task_vectors=True,
               summary="Model Breadcrumbs: task vectors without their largest and smallest entries, summed linearly",
               reference_url=_ARXIV + "2312.06795", sparsification="magnitude_outliers",
               params=_gta(normalize=False, rescale=False, extra=(_GAMMA, _TIE)), entry_sums=False),
    MethodSpec(name="breadcrumbs_ties", label="Breadcrumbs-TIES", fn=breadcrumbs_ties, base_policy="required",
               task_vectors=True,
               summary="Model Breadcrumbs: task vectors without their largest and smallest entries, with sign "
                       "election",
               reference_url=_ARXIV + "2312.06795", sparsification="magnitude_outliers", consensus="sum",
               params=_gta(normalize=False, rescale=False, extra=(_GAMMA, _TIE)), entry_sums=False),
    MethodSpec(name="della", label="DELLA", fn=della, base_policy="required", task_vectors=True,
               summary="DELLA: task vectors dropped with magnitude-ranked probabilities, rescaled, with sign election",
               reference_url=_ARXIV + "2406.11617", sparsification="della_magprune", consensus="sum", random=True,
               params=_gta(normalize=True, rescale=True, extra=(_EPSILON, _RESCALE_MODE, _TIE_DELLA)),
               constraints=(_della_band,), entry_sums=False),
    MethodSpec(name="della_linear", label="DELLA-linear", fn=della_linear, base_policy="required",
               task_vectors=True,
               summary="DELLA: task vectors dropped with magnitude-ranked probabilities, rescaled, summed linearly",
               reference_url=_ARXIV + "2406.11617", sparsification="della_magprune", random=True,
               params=_gta(normalize=False, rescale=True, extra=(_EPSILON, _RESCALE_MODE, _TIE_DELLA)),
               constraints=(_della_band,), entry_sums=False),
    MethodSpec(name="sce", label="SCE", fn=sce, base_policy="required", task_vectors=True,
               summary="SCE: the task vectors' highest-variance entries, weighted by energy, with sign election",
               reference_url=_ARXIV + "2408.07990",
               params=(_p("int8_mask", False),
                       _p("select_topk", 1.0, range=UNIT, meaning="the fraction of highest-variance entries kept"))),
    MethodSpec(name="model_stock", label="Model Stock", fn=model_stock, base_policy="required", task_vectors=True,
               min_models=2,
               summary="Model Stock: the models' average moved towards the base by the angle of their task vectors",
               reference_url=_ARXIV + "2403.19522", params=(_p("filter_wise", False),)),
    MethodSpec(name="nearswap", label="NearSwap", fn=nearswap, base_policy="required", min_models=1, max_models=1,
               summary="NearSwap: the other model's values where they are near the base's, interpolated elsewhere",
               reference_url="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001", params=(_NEARSWAP_T,),
               entry_sums=False),
    MethodSpec(name="passthrough", label="Passthrough", fn=passthrough, base_policy="ignored", min_models=1,
               max_models=1, summary="passthrough: one model's tensors, unchanged or scaled (layer stacking)",
               params=(_p("scale", per_model=True, kind="float", nullable=True,
                          meaning="multiplies the tensor (negative flips its sign); null leaves it unchanged"),),
               entry_sums=False),
    MethodSpec(name="arcee_fusion", label="Arcee Fusion", fn=arcee_fusion, base_policy="required", min_models=1,
               max_models=1, random=True,  # draws only for tensors above 10^6 entries (quantile sample)
               summary="Arcee Fusion: the other model's changes where their importance is an outlier, the base "
                       "elsewhere",
               reference_url="https://arcee.ai"),
    MethodSpec(name="ram", label="RAM", fn=ram, base_policy="required", task_vectors=True,
               summary="RAM: the task vectors' changed entries, averaged where several models change them",
               reference_url=_ARXIV + "2601.13572", params=(_RAM_EPSILON,)),
    MethodSpec(name="ramplus_tl", label="RAM+ (tensor-local)", fn=ramplus_tl, base_policy="required",
               task_vectors=True,
               summary="RAM+: RAM with each model's unique changes amplified by its share of overlapping changes",
               reference_url=_ARXIV + "2601.13572",
               params=(_p("r", 0.1, range=NON_NEGATIVE,
                          meaning="how much unique changes are amplified: 1 + r min(rho, alpha); 0 gives RAM"),
                       _p("alpha", 0.2, range=NON_NEGATIVE, meaning="the cap on the overlap ratio rho"),
                       _p("epsilon", 1e-5, range=Range(0.0, lo_open=True),
                          meaning="the |delta| up to which an entry counts as unchanged, and the floor of the "
                                  "unique count; 0 divides by zero"))),
)}


def method_names() -> tuple[str, ...]:
    """Every registered merge method, in registry order."""
    return tuple(METHODS)


def get_method(name: str, where: str = "merge_method") -> MethodSpec:
    """The registered method ``name`` (the one method lookup); otherwise a one-line ConfigError that starts with
    ``where`` (the key that named it) and lists the choices."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"{where}: unknown merge method {name!r}; choose one of {', '.join(sorted(METHODS))}"
                          f"{did_you_mean(name, METHODS)}") from None
