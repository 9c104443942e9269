"""LoRA adapters in, one LoRA adapter out (``output: lora`` in the recipe; mergekit's issue #86).

Every model of the recipe is one base model ``P`` plus (optionally) a PEFT LoRA adapter: ``P+adapter_i``. Write
``D_i = s_i B_i A_i`` for adapter i's delta of a module (zero where it has none). The output is a PEFT adapter
directory (``adapter_config.json`` + ``adapter_model.safetensors``) over ``P`` whose delta is the merge's delta:

- a method that is linear in its inputs for a tensor (``linear``, ``task_arithmetic``; also e.g. ``breadcrumbs``
  with density 1 and gamma 0; found by running the method on random probes, so no method list is kept here) gives
  the merged delta ``sum_i c_i D_i`` with ``c_i`` read off the method itself (it is run on unit vectors, so
  ``weight``, ``normalize``, ``lambda`` and their per-tensor values resolve exactly as in a full merge). Rank
  concatenation makes it exact:
  ``B' = [c_1 s_1 B_1 | c_2 s_2 B_2 | ...]``, ``A' = [A_1; A_2; ...]``, rank ``sum_i r_i``. The coefficients must
  sum to 1 (the base weight itself is not in the adapter): ``linear`` with ``normalize: false`` and weights summing
  to anything else is an error. With ``lora_rank`` below the concatenated rank, the product is truncated to its best
  rank-``lora_rank`` approximation (QR of the factors, SVD of the small core: no full matrix is formed).
- every other method (TIES, DARE, DELLA, breadcrumbs, SCE, random methods, ... and even SLERP) is run on the full
  weights
  ``W + D_i`` in float64 exactly as the full merge runs it (same parameters, same per-tensor random streams); the
  merged delta ``M - W`` is factored by a truncated SVD at ``lora_rank`` (required):
  ``B' = U_k sqrt(S_k)``, ``A' = sqrt(S_k) V_k^T``.

The reconstruction error of each module is ``||D - B'A'||_F / ||D||_F`` (0 for exact concatenation), overall
``sqrt(sum ||D - B'A'||^2 / sum ||D||^2)``; they are written to ``lora_merge.json`` and the model card, and the CLI
prints the overall and the worst module. The adapter's scale is 1: ``lora_alpha = r`` (per module through
``rank_pattern`` / ``alpha_pattern`` where ranks differ), so ``B'`` carries every coefficient. ``target_modules`` is
the adapters' list when it selects exactly the output's modules, else the modules' full names. Tensors an adapter
replaces (``modules_to_save``) are merged in full and saved as ``modules_to_save``. Tensors no adapter touches are
the base's in every model and are not written.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from safemerge.errors import ConfigError, InputError
from safemerge.merge.config import MergeConfig, ModelRef
from safemerge.merge.lora import LoraSource
from safemerge.merge.plan import DTYPES, MergePlan, TensorTask

REPORT_FILE = "lora_merge.json"
_PREFIX = "base_model.model."


@dataclass
class ModuleOut:
    """One output module: LoRA factors in ``B @ A`` orientation (``transposed``: the weight is ``(B @ A)^T``), or a
    full tensor (``modules_to_save``), with its reconstruction error."""

    name: str  # the weight tensor's name (module + ".weight")
    a: torch.Tensor | None = None
    b: torch.Tensor | None = None
    transposed: bool = False
    embedding: bool = False
    full: torch.Tensor | None = None
    exact: bool = True
    err_sq: float = 0.0
    norm_sq: float = 0.0

    @property
    def module(self) -> str:
        return self.name[: -len(".weight")] if self.name.endswith(".weight") else self.name

    @property
    def rank(self) -> int:
        return 0 if self.a is None else int(self.a.shape[0])

    @property
    def rel_error(self) -> float:
        return math.sqrt(self.err_sq / self.norm_sq) if self.norm_sq > 0 else 0.0


@dataclass
class LoraMergeReport:
    method: str
    requested_rank: int | None
    modules: list[ModuleOut] = field(default_factory=list)

    @property
    def overall(self) -> float:
        norm = sum(m.norm_sq for m in self.modules if m.full is None)
        return math.sqrt(sum(m.err_sq for m in self.modules if m.full is None) / norm) if norm > 0 else 0.0

    def worst(self) -> ModuleOut | None:
        lora = [m for m in self.modules if m.full is None]
        return max(lora, key=lambda m: m.rel_error, default=None)

    def as_json(self) -> dict[str, Any]:
        lora = [m for m in self.modules if m.full is None]
        worst = self.worst()
        return {
            "merge_method": self.method,
            "lora_rank": self.requested_rank,
            "exact": all(m.exact for m in lora),
            "max_rank": max((m.rank for m in lora), default=0),
            "overall_relative_error": self.overall,
            "worst_module": worst.module if worst is not None else None,
            "worst_relative_error": worst.rel_error if worst is not None else 0.0,
            "modules": {m.module: {"rank": m.rank, "relative_error": m.rel_error, "exact": m.exact,
                                   "delta_norm": math.sqrt(m.norm_sq)} for m in lora},
            "modules_to_save": [m.module for m in self.modules if m.full is not None],
        }


# ---- planning: everything checked before a tensor is read --------------------------------------------------------
@dataclass
class LoraPlan:
    cfg: MergeConfig
    plan: MergePlan
    base_path: str
    base: Any  # the base model's tensor source
    adapters: dict[str, LoraSource]  # label -> source, for the models with an adapter
    tasks: list[tuple[TensorTask, str]]  # (task, "full" | "concat" | "svd")
    coefficients: dict[str, torch.Tensor]  # "concat" tasks: c over (base?, inputs) in task order


def _labels(task: TensorTask) -> list[str]:
    return ([task.base[0]] if task.base else []) + [label for label, _ in task.inputs]


def _call(plan: MergePlan, task: TensorTask, base: torch.Tensor | None, tensors: list[torch.Tensor],
          generator: torch.Generator | None) -> torch.Tensor:
    with torch.no_grad():
        return plan.method.call(base, tensors, task.per_model, task.global_params, generator)


def _run_on(plan: MergePlan, task: TensorTask, rows: torch.Tensor) -> torch.Tensor:
    """The method of ``task`` (its resolved parameters) on probe vectors: row j of ``rows`` is input j of
    (base?, inputs)."""
    has_base = task.base is not None
    base = rows[0] if has_base else None
    return _call(plan, task, base, [rows[j + has_base] for j in range(len(task.inputs))], None)


def is_linear(plan: MergePlan, task: TensorTask) -> bool:
    """Whether the method, with this tensor's parameters, is linear in its inputs (checked on random probes:
    additive and homogeneous; a random method is not)."""
    if plan.method.random:
        return False
    gen = torch.Generator().manual_seed(0)
    n = len(_labels(task))
    x, y = (torch.randn(n, 16, generator=gen, dtype=torch.float64) for _ in range(2))
    try:
        fx, fy, fxy, f3x = (_run_on(plan, task, v) for v in (x, y, x + y, 3 * x))
    except Exception:  # noqa: BLE001 - a method that cannot even run on probes is treated as non-linear
        return False
    tol = 1e-9 * max(float(fx.abs().max()), float(fy.abs().max()), 1.0)
    return bool((fxy - fx - fy).abs().max() <= tol and (f3x - 3 * fx).abs().max() <= 3 * tol)


def coefficients(plan: MergePlan, task: TensorTask) -> torch.Tensor:
    """``c`` with merged = ``sum_j c_j x_j`` over (base?, inputs), read off the method on unit vectors."""
    return _run_on(plan, task, torch.eye(len(_labels(task)), dtype=torch.float64))


def plan_lora_merge(cfg: MergeConfig) -> LoraPlan:
    """Open the models' headers, build the merge plan and check that its output can be an adapter."""
    from safemerge.merge.engine import open_plan

    cfg, plan = open_plan(cfg)
    refs = {label: ModelRef.parse(label) for label in cfg.referenced_models()}
    base_path = next(iter(refs.values())).path
    adapters = {label: src for label, src in plan.sources.items() if isinstance(src, LoraSource)}
    base = next((src for label, src in plan.sources.items() if refs[label].lora is None), None)
    if base is None:
        base = next(iter(adapters.values())).base
    flags = {bool(a.fan_in_fan_out) for a in adapters.values()}
    if len(flags) > 1:
        raise InputError("output: lora: the adapters disagree on fan_in_fan_out; merge adapters of one model type")
    kinds = {label: src.adapted() for label, src in adapters.items()}
    tasks, coefs = [], {}
    for task in plan.tasks:
        if task.copy:
            continue
        touched = [kinds[label].get(task.name) for label in _labels(task) if label in kinds]
        touched = [k for k in touched if k is not None]
        if not touched:
            continue
        if "full" in touched:
            tasks.append((task, "full"))
            continue
        if not is_linear(plan, task):
            if cfg.lora_rank is None:
                ranks = sum(max((a.adapter.infos()[k].shape[0] for k in a.adapter.infos() if ".lora_A" in k
                                 or "lora_embedding_A" in k), default=0) for a in adapters.values())
                raise ConfigError(f"output: lora with merge_method {plan.method.name} needs lora_rank (its merged "
                                  f"delta of {task.name} is not a sum of the adapters' deltas, so it is truncated "
                                  f"by SVD); add e.g. 'lora_rank: {max(ranks, 1)}' (the sum of the adapters' "
                                  "ranks); see docs/merge.md, 'LoRA adapters out'")
            tasks.append((task, "svd"))
            continue
        tasks.append((task, "concat"))
        c = coefficients(plan, task)
        total = float(c.sum())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"output: lora: merge_method {plan.method.name} gives tensor {task.name} {total:g} x "
                              f"the base weight plus the adapters' deltas (the coefficients sum to {total:g}, not 1), "
                              "which no adapter over the base can hold; set normalize: true or weights that sum to 1")
        coefs[task.name] = c
    if not tasks:
        raise InputError("output: lora: the adapters change no tensor of the base model; check the adapter paths")
    return LoraPlan(cfg, plan, base_path, base, adapters, tasks, coefs)


# ---- the math ----------------------------------------------------------------------------------------------------
def truncate(b: torch.Tensor, a: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """The best rank-``rank`` factors of ``b @ a`` (``b``: out x R, ``a``: R x in) without forming it:
    ``(B', A', ||BA - B'A'||^2, ||BA||^2)``; QR of both factors, SVD of the R x R core."""
    qb, rb = torch.linalg.qr(b)
    qa, ra = torch.linalg.qr(a.T)
    u, s, vh = torch.linalg.svd(rb @ ra.T, full_matrices=False)
    return _split(qb @ u, s, (qa @ vh.T).T, rank)


def svd_factors(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """The best rank-``rank`` factors of ``delta`` by SVD: ``(B', A', error^2, ||delta||^2)``."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return _split(u, s, vh, rank)


def _split(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float,
                                                                                   float]:
    k = max(0, min(rank, int((s > 0).sum())))
    root = s[:k].sqrt()
    sq = s.double().square()
    return u[:, :k] * root, root[:, None] * vh[:k], float(sq[k:].sum()), float(sq.sum())


def _concat(lp: LoraPlan, task: TensorTask) -> ModuleOut | None:
    c = lp.coefficients[task.name]
    a_parts, b_parts, flags = [], [], set()
    for label, coef in zip(_labels(task), c.tolist()):
        src = lp.adapters.get(label)
        f = src.factors(task.name, torch.float64) if src is not None else None
        if f is None or coef == 0:
            continue
        a, b, transposed = f
        a_parts.append(a)
        b_parts.append(b * coef)
        flags.add(transposed)
    if not a_parts:
        return None
    out = ModuleOut(task.name, torch.cat(a_parts), torch.cat(b_parts, dim=1), transposed=flags.pop())
    rank = lp.cfg.lora_rank
    if rank is not None and rank < out.rank:
        out.b, out.a, out.err_sq, out.norm_sq = truncate(out.b, out.a, rank)
        out.exact = False
    else:
        out.norm_sq = float(torch.linalg.matrix_norm(out.b @ out.a).square()) if out.rank else 0.0
    return out


def _merged(lp: LoraPlan, task: TensorTask, seed: int, check_finite: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(the merge of the full float64 weights, the base weight in float64), as the full merge computes them."""
    from safemerge.merge.task import all_finite, task_seed

    w = lp.base.get(task.name).to(torch.float64)
    raw = {}
    for label in _labels(task):
        src = lp.plan.sources[label]
        raw[label] = src.get_exact(task.name, torch.float64) if isinstance(src, LoraSource) else w
        if check_finite and not all_finite(raw[label]):
            raise InputError(f"{label}: tensor {task.name!r} contains NaN/Inf values; fix that adapter or model")
    base = raw[task.base[0]] if task.base else None
    gen = torch.Generator().manual_seed(task_seed(seed, task.name)) if lp.plan.method.random else None
    merged = _call(lp.plan, task, base, [raw[label] for label, _ in task.inputs], gen)
    return merged, w


def _svd(lp: LoraPlan, task: TensorTask, seed: int, check_finite: bool) -> ModuleOut | None:
    merged, w = _merged(lp, task, seed, check_finite)
    transposed = _transposed(lp, task.name)
    delta = merged - w
    if transposed:
        delta = delta.T
    if not bool(delta.any()):
        return None
    compute = torch.float64 if lp.cfg.dtype == "float64" else torch.float32
    b, a, err, norm = svd_factors(delta.to(compute), lp.cfg.lora_rank or 1)
    return ModuleOut(task.name, a, b, transposed=transposed, exact=False, err_sq=err, norm_sq=norm)


def _embedding(lp: LoraPlan, name: str) -> bool:
    return any(a.is_embedding(name) for a in lp.adapters.values())


def _transposed(lp: LoraPlan, name: str) -> bool:
    return _embedding(lp, name) or any(a.fan_in_fan_out for a in lp.adapters.values())


def _own_base_layer(lp: LoraPlan, task: TensorTask) -> bool:
    """Whether an adapter's saved base layer differs from the base weight (then the tensor is merged in full)."""
    holders = [lp.adapters[label] for label in _labels(task) if label in lp.adapters
               and lp.adapters[label].has_base_layer(task.name)]
    if not holders:
        return False
    w = lp.base.get(task.name)
    return any(not torch.equal(src.weight(task.name), w) for src in holders)


# ---- writing -----------------------------------------------------------------------------------------------------
def _out_dtype(lp: LoraPlan) -> torch.dtype:
    chosen = lp.cfg.out_dtype or lp.cfg.dtype
    if chosen:
        return DTYPES[chosen]
    dtype = None
    for src in lp.adapters.values():
        for info in src.adapter.infos().values():
            if info.dtype.is_floating_point:
                dtype = info.dtype if dtype is None else torch.promote_types(dtype, info.dtype)
    return dtype or torch.float32


def _peft_matches(targets: list[str], module: str) -> bool:
    return any(module == t or module.endswith("." + t) for t in targets)


def _target_modules(lp: LoraPlan, lora_modules: set[str], saved: set[str]) -> list[str]:
    lists = [a.adapter_config.get("target_modules") for a in lp.adapters.values()]
    if lists and all(isinstance(t, list) for t in lists):
        union = sorted({str(t) for lst in lists for t in lst})
        candidates = {n[: -len(".weight")] for n in lp.base.infos() if n.endswith(".weight")} - saved
        if {m for m in candidates if _peft_matches(union, m)} == lora_modules:
            return union
    return sorted(lora_modules)


def adapter_config(lp: LoraPlan, modules: list[ModuleOut]) -> dict[str, Any]:
    lora = [m for m in modules if m.full is None]
    saved = [m.module for m in modules if m.full is not None]
    ranks = Counter(m.rank for m in lora)
    r = max(ranks.items(), key=lambda kv: (kv[1], kv[0]))[0] if ranks else 1
    pattern = {re.escape(m.module): m.rank for m in lora if m.rank != r}
    first = next(iter(lp.adapters.values()))
    cfg = dict(first.adapter_config)
    cfg.update({
        "peft_type": "LORA", "base_model_name_or_path": lp.base_path, "r": r, "lora_alpha": r,
        "rank_pattern": pattern, "alpha_pattern": dict(pattern), "use_rslora": False, "use_dora": False,
        "target_modules": _target_modules(lp, {m.module for m in lora}, set(saved)),
        "modules_to_save": saved or None, "layers_to_transform": None, "layers_pattern": None,
        "exclude_modules": None, "fan_in_fan_out": bool(first.fan_in_fan_out), "inference_mode": True,
        "bias": "none",
    })
    for key in ("trainable_token_indices", "target_parameters", "layer_replication"):
        if key in cfg:
            cfg[key] = None
    return cfg


def adapter_tensors(modules: list[ModuleOut], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out = {}
    for m in modules:
        if m.full is not None:
            out[_PREFIX + m.name] = m.full.to(dtype).contiguous()
            continue
        if m.embedding:
            out[f"{_PREFIX}{m.module}.lora_embedding_A"] = m.a.to(dtype).contiguous()
            out[f"{_PREFIX}{m.module}.lora_embedding_B"] = m.b.to(dtype).contiguous()
        else:
            out[f"{_PREFIX}{m.module}.lora_A.weight"] = m.a.to(dtype).contiguous()
            out[f"{_PREFIX}{m.module}.lora_B.weight"] = m.b.to(dtype).contiguous()
    return out


def lora_card(lp: LoraPlan, report: LoraMergeReport, recipe: str, name: str) -> str:
    data = report.as_json()
    lora = sorted((m for m in report.modules if m.full is None), key=lambda m: -m.rel_error)
    how = ("exact rank concatenation" if data["exact"] else f"truncated to rank {report.requested_rank}")
    lines = [
        "---", f"base_model: {lp.base_path}", "library_name: peft", "tags:", "- safemerge", "- mergekit", "- merge",
        "- lora", "---", f"# {name}", "",
        f"A LoRA adapter merged with safemerge from {len(lp.adapters)} adapter(s) of `{lp.base_path}` "
        f"(`merge_method: {report.method}`, {how}).", "",
        f"- overall relative reconstruction error ||D - B'A'||_F / ||D||_F: {data['overall_relative_error']:.4g}",
        f"- worst module: `{data['worst_module']}` ({data['worst_relative_error']:.4g})",
        f"- {len(lora)} LoRA modules (rank up to {data['max_rank']}), "
        f"{len(data['modules_to_save'])} modules_to_save; per-module errors in `{REPORT_FILE}`", "",
        "| module | rank | relative error |", "|---|---|---|",
        *[f"| `{m.module}` | {m.rank} | {m.rel_error:.4g} |" for m in lora[:20]],
        *(["| ... | | |"] if len(lora) > 20 else []),
        "", "## Recipe", "", "```yaml", recipe.rstrip("\n"), "```", "",
    ]
    return "\n".join(lines)


def merge_to_lora(config: Any, out_dir: Any, *, max_shard_size: str | int = "5GB", max_memory: str | int | None = None,
                  threads: int = 1, seed: int = 0, copy_tokenizer: bool = True, overwrite: bool = False,
                  progress: bool = False, check_finite: bool = True, fast_ties: bool = False) -> Path:
    """Merge the adapters of ``config`` (``output: lora``) into a PEFT adapter directory ``out_dir``; the options
    are :func:`safemerge.merge.engine.merge`'s (``max_shard_size``, ``max_memory`` and ``threads`` do not apply: the
    adapter is one file, written once every module is factored one tensor at a time)."""
    from safetensors.torch import save_file

    from safemerge.errors import SafemergeError
    from safemerge.merge.config import config_text, load_config
    from safemerge.merge.engine import with_fast_ties
    from safemerge.merge.sources import files_dir
    from safemerge.merge.tokenizer import TOKENIZER_FILES
    from safemerge.merge.writer import parse_size
    from safemerge.utils.atomic import atomic_dir, make_readable
    from safemerge.utils.progress import make_progress

    del threads
    parse_size(max_shard_size, "--max-shard-size")
    parse_size(max_memory, "--max-memory")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise InputError(f"{out_dir}: output directory already exists; pass --overwrite or choose another path")
    given = load_config(config)
    if given.output != "lora":
        raise SafemergeError("merge_to_lora: the recipe has no 'output: lora'; use safemerge.merge.merge")
    recipe = config_text(config)
    cfg = with_fast_ties(given) if fast_ties else given
    if cfg is not given:
        recipe += "\n# merged by `safemerge merge --fast-ties`: parameters.tie_break = index\n"
    lp = plan_lora_merge(cfg)
    report = LoraMergeReport(cfg.merge_method, cfg.lora_rank)
    with make_progress(disable=not progress) as bar:
        job = bar.add_task(f"merging adapters ({cfg.merge_method})", total=len(lp.tasks))
        for task, mode in lp.tasks:
            if mode == "full" or _own_base_layer(lp, task):
                merged, _ = _merged(lp, task, seed, check_finite)
                out: ModuleOut | None = ModuleOut(task.name, full=merged)
            elif mode == "concat":
                out = _concat(lp, task)
            else:
                out = _svd(lp, task, seed, check_finite)
            if out is not None:
                out.embedding = _embedding(lp, task.name)
                report.modules.append(out)
            bar.advance(job)
    if not report.modules:
        raise InputError("output: lora: the merged deltas are zero in every module (the adapters cancel out); "
                         "change the weights")
    dtype = _out_dtype(lp)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        save_file(adapter_tensors(report.modules, dtype), str(tmp / "adapter_model.safetensors"),
                  metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(adapter_config(lp, report.modules), indent=2) + "\n")
        (tmp / REPORT_FILE).write_text(json.dumps(report.as_json(), indent=2) + "\n")
        (tmp / "mergekit_config.yml").write_text(recipe)
        (tmp / "README.md").write_text(lora_card(lp, report, recipe, out_dir.name))
        tok_dir = files_dir(lp.base)
        if copy_tokenizer and tok_dir is not None:
            for name in TOKENIZER_FILES:
                if (Path(tok_dir) / name).is_file():
                    (tmp / name).write_bytes((Path(tok_dir) / name).read_bytes())
        make_readable(tmp)
    return out_dir
