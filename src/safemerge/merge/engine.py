"""The executor: run a :class:`~safemerge.merge.plan.MergePlan` tensor by tensor.

Worker threads do the math (torch kernels release the GIL) inside a bounded window: a task is submitted only while
the estimated bytes in flight stay under the memory budget, and results are consumed in plan order, so the output is
written deterministically whatever the thread count. Random methods get a generator seeded from
``(seed, tensor name)``: the same seed gives bit-identical output with 1 or N threads.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from safemerge.errors import InputError, SafemergeError
from safemerge.merge.config import MergeConfig, load_config
from safemerge.merge.sources import DictSource
from safemerge.merge.plan import DTYPES, MergePlan, TensorTask, build_plan
from safemerge.utils.malloc import RETURN_FREED, REUSE_FREED, malloc_policy

Aligner = Callable[[TensorTask, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def task_seed(seed: int, name: str) -> int:
    """A 63-bit seed for one tensor: independent of execution order."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


SORTING_METHODS = frozenset({"ties", "breadcrumbs", "breadcrumbs_ties", "della", "della_linear"})
_SORT_SCRATCH = 25  # bytes per element of one model's magnitude sort: |d| f32, int64 order, sort buffers, mask


def task_cost(task: TensorTask, method: str | None = None) -> int:
    """Estimated peak bytes of one task: inputs in compute precision, method scratch (~2 tensors per input), output;
    plus, for ``method``s that sort magnitudes, one sort's scratch per model (the models are pruned in parallel)."""
    n_in = len(task.inputs) + (task.base is not None)
    numel = max(task.out.numel, 1)
    width = max(task.out.dtype.itemsize, 4)
    sort = _SORT_SCRATCH * numel * len(task.inputs) if method in SORTING_METHODS and not task.copy else 0
    return task.in_bytes + numel * width * (2 * n_in + 1) + task.out.nbytes + sort


def all_finite(x: torch.Tensor) -> bool:
    """Whether ``x`` has no NaN/Inf, in one pass: ``aminmax`` propagates NaN, and an infinity is the min or the max
    (on a 1024x4096 bf16 weight, one thread: 1.7 ms; a float32 sum 4.1 ms, ``isfinite(x).all()`` 41.6 ms)."""
    if x.numel() == 0 or not x.is_floating_point():
        return True
    lo, hi = torch.aminmax(x)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def run_task(plan: MergePlan, task: TensorTask, seed: int, check_finite: bool = False,
             align: Aligner | None = None) -> torch.Tensor:
    """Read the inputs of one task, apply the method and return the output tensor (in the output dtype)."""
    compute = DTYPES.get(plan.config.dtype or "")
    refs = ([task.base] if task.base else []) + list(task.inputs)
    raw = {label: plan.sources[label].get(name) for label, name in refs}
    floating = all(t.is_floating_point() for t in raw.values())
    if floating:
        dtype = compute
        if dtype is None:
            dtype = next(iter(raw.values())).dtype
            for t in raw.values():
                dtype = torch.promote_types(dtype, t.dtype)
        raw = {k: v.to(dtype) for k, v in raw.items()}
    if check_finite and floating:
        for (label, name) in refs:
            if not all_finite(raw[label]):
                where = getattr(plan.sources[label], "path", label)
                raise InputError(f"{where}: tensor {name!r} contains NaN/Inf values; fix or re-download that model")
    if align is not None and task.vocab_rows is not None:
        raw = align(task, raw)
    if task.copy:
        return raw[refs[0][0]].to(task.out.dtype)
    base = raw[task.base[0]] if task.base else None
    tensors = [raw[label] for label, _ in task.inputs]
    gen = torch.Generator().manual_seed(task_seed(seed, task.name)) if plan.method.random else None
    with torch.no_grad():
        out = plan.method.apply(base, tensors, [dict(p) for p in task.per_model], dict(task.global_params), gen)
    return out.to(task.out.dtype)


def execute(plan: MergePlan, emit: Callable[[TensorTask, torch.Tensor], None], *, seed: int = 0, threads: int = 1,
            max_memory: int | None = None, check_finite: bool = False, align: Aligner | None = None,
            on_done: Callable[[TensorTask], None] | None = None, stats: dict[str, int] | None = None) -> None:
    """Run every task; ``emit`` receives results in plan order. At most ``max_memory`` estimated bytes in flight.

    ``stats`` (optional) receives ``peak_in_flight``: the largest estimated bytes in flight at any time.
    """
    stats = stats if stats is not None else {}
    stats["peak_in_flight"] = 0
    if max_memory is not None:
        worst = max((task_cost(t, plan.method.name) for t in plan.tasks), default=0)
        if worst > max_memory:
            raise SafemergeError(f"--max-memory {max_memory} bytes is below the {worst} bytes needed by the largest "
                                 "tensor; raise --max-memory")
    threads = max(1, threads)  # one code path for any thread count (threads=1: one worker, window of 2)
    with _cyclic_gc_paused():
        _execute(plan, emit, seed, threads, max_memory, check_finite, align, on_done, stats)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while tensors are merged (restored afterwards).

    The loop creates no reference cycles (tensors are freed by reference counting), but every tensor op allocates
    Python objects, and the resulting collections scan the hundreds of thousands of objects that torch and
    transformers import: 7 % of a dare_ties merge's CPU samples (py-spy, bench size) were in ``gc_collect_main``.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _execute(plan: MergePlan, emit: Callable[[TensorTask, torch.Tensor], None], seed: int, threads: int,
             max_memory: int | None, check_finite: bool, align: Aligner | None,
             on_done: Callable[[TensorTask], None] | None, stats: dict[str, int]) -> None:
    budget = max_memory if max_memory is not None else 1 << 62
    window = 2 * threads
    pending: deque[tuple[TensorTask, Future[torch.Tensor], int]] = deque()
    in_flight = 0
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="safemerge") as pool:
        try:
            def drain_one() -> None:
                nonlocal in_flight
                task, fut, cost = pending.popleft()
                emit(task, fut.result())
                in_flight -= cost
                if on_done:
                    on_done(task)

            for task in plan.tasks:
                cost = task_cost(task, plan.method.name)
                while pending and (len(pending) >= window or in_flight + cost > budget):
                    drain_one()
                pending.append((task, pool.submit(run_task, plan, task, seed, check_finite, align), cost))
                in_flight += cost
                stats["peak_in_flight"] = max(stats["peak_in_flight"], in_flight)
            while pending:
                drain_one()
        except BaseException:
            for _, fut, _ in pending:
                fut.cancel()
            raise


def with_fast_ties(cfg: MergeConfig) -> MergeConfig:
    """``cfg`` with ``tie_break: index`` (O(n) magnitude pruning, see docs/methods.md) when its method takes
    ``tie_break`` and the recipe does not set it at any level."""
    from safemerge.merge.methods import METHODS

    spec = METHODS.get(cfg.merge_method)
    if spec is None or not any(p.name == "tie_break" for p in spec.params):
        return cfg
    scopes = [cfg.parameters] + [m.parameters for m in cfg.models or []]
    for s in cfg.slices or []:
        scopes += [s.parameters] + [src.parameters for src in s.sources]
    if any(scope and "tie_break" in scope for scope in scopes):
        return cfg
    return cfg.model_copy(update={"parameters": {**(cfg.parameters or {}), "tie_break": "index"}})


def merge_state_dicts(config: Any, state_dicts: dict[str, dict[str, torch.Tensor]], seed: int = 0, *,
                      out: dict[str, torch.Tensor] | None = None, threads: int = 1,
                      check_finite: bool = False, fast_ties: bool = False) -> dict[str, torch.Tensor]:
    """Merge in memory with exactly the semantics of :func:`safemerge.merge.merge`.

    ``config`` is a mergekit-style config (path, YAML text, dict or :class:`MergeConfig`) whose model references
    are keys of ``state_dicts``. With ``out`` (e.g. a resident model's ``state_dict()``), results are copied into
    the existing tensors of the same name (no new allocation kept) and ``out`` is returned. ``fast_ties``: see
    :func:`with_fast_ties`.
    """
    cfg: MergeConfig = load_config(config)
    cfg = with_fast_ties(cfg) if fast_ties else cfg
    sources = {label: DictSource(label, sd) for label, sd in state_dicts.items()}
    plan = build_plan(cfg, sources)
    result: dict[str, torch.Tensor] = out if out is not None else {}

    def emit(task: TensorTask, tensor: torch.Tensor) -> None:
        target = result.get(task.name) if out is not None else None
        if target is not None:
            with torch.no_grad():
                target.copy_(tensor)
        else:
            result[task.name] = tensor

    execute(plan, emit, seed=seed, threads=threads, check_finite=check_finite)
    return result


# ---- merge to disk ---------------------------------------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
                   "added_tokens.json", "merges.txt", "vocab.json", "chat_template.jinja", "chat_template.json")


def open_plan(config: Any) -> tuple[MergeConfig, MergePlan]:
    """Parse the config, open every model's headers and build the plan (no tensor data is read)."""
    from safemerge.merge.io import open_source
    from safemerge.merge.plan import check_parameter_values
    from safemerge.merge.vocab import prepare_vocab

    cfg = load_config(config)
    check_parameter_values(cfg)  # before any model is opened; build_plan checks again (cheap)
    sources = {ref: open_source(ref) for ref in cfg.referenced_models()}
    vocab = prepare_vocab(cfg, sources)
    plan = build_plan(cfg, sources, vocab_rows=vocab.rows if vocab else None)
    plan.vocab = vocab  # type: ignore[attr-defined]
    return cfg, plan


def donor_label(cfg: MergeConfig) -> str:
    """The model whose config.json / generation config the output inherits (base, else the first model)."""
    return cfg.base_model or cfg.referenced_models()[0]


def output_config(plan: MergePlan) -> dict[str, Any]:
    cfg = plan.config
    out = dict(plan.sources[donor_label(cfg)].config)
    dtype = cfg.out_dtype or cfg.dtype
    if dtype:
        out["dtype"] = dtype
        if "torch_dtype" in out:
            out["torch_dtype"] = dtype
    if cfg.slices and plan.num_layers is not None:
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if key in out:
                out[key] = plan.num_layers
                break
        if isinstance(out.get("layer_types"), list):
            types = [plan.sources[m].config.get("layer_types") for m, _ in plan.layer_sources]
            if all(isinstance(t, list) and len(t) > i for t, (_, i) in zip(types, plan.layer_sources)):
                out["layer_types"] = [t[i] for t, (_, i) in zip(types, plan.layer_sources)]
            else:
                out["layer_types"] = out["layer_types"][: plan.num_layers]
    vocab = getattr(plan, "vocab", None)
    if vocab is not None:
        out["vocab_size"] = vocab.rows
    return out


def _copy_files(src_dir: Any, dst: Any, names: tuple[str, ...]) -> None:
    import shutil
    from pathlib import Path

    for name in names:
        p = Path(src_dir) / name
        if p.is_file():
            shutil.copyfile(p, Path(dst) / name)


def merge(config: Any, out_dir: Any, *, max_shard_size: str | int = "5GB", max_memory: str | int | None = None,
          threads: int = 1, seed: int = 0, copy_tokenizer: bool = True, overwrite: bool = False,
          progress: bool = False, check_finite: bool = True, fast_ties: bool = False) -> Any:
    """Merge the models of a mergekit YAML config into ``out_dir`` (a loadable HF model dir) and return its path.

    Streaming: one tensor per worker at a time, positioned reads (no memory map), shards of at most
    ``max_shard_size`` bytes, at most ``max_memory`` estimated bytes in flight (peak RSS <= the interpreter's
    baseline + ``max_memory``: freed buffers go back to the OS, see :data:`~safemerge.utils.malloc.RETURN_FREED`;
    without a budget they are reused, see :data:`~safemerge.utils.malloc.REUSE_FREED`; the policy holds while the
    tensors are merged and written, then the previous one is restored). Everything checkable from headers is
    validated before any tensor is read; a failure leaves no output directory (atomic rename at the end).
    ``fast_ties``: magnitude pruning keeps the lowest-index entries among equal ``|delta|`` at the cut
    (``tie_break: index``, O(n)) unless the recipe sets ``tie_break``; the default keeps exactly mergekit's entries.
    """
    import json
    from pathlib import Path

    from safemerge.merge.card import model_card
    from safemerge.merge.config import ModelRef, config_text
    from safemerge.merge.sources import files_dir
    from safemerge.merge.writer import ShardedWriter, parse_size
    from safemerge.utils.atomic import atomic_dir, make_readable
    from safemerge.utils.progress import make_progress

    out_dir = Path(out_dir)
    shard_bytes = parse_size(max_shard_size, "--max-shard-size")
    mem_bytes = parse_size(max_memory, "--max-memory")
    if threads < 1:
        raise SafemergeError(f"--threads must be >= 1, got {threads}")
    if out_dir.exists() and not overwrite:
        raise InputError(f"{out_dir}: output directory already exists; pass --overwrite or choose another path")
    given = load_config(config)
    cfg, plan = open_plan(with_fast_ties(given) if fast_ties else given)
    recipe = config_text(config)
    if cfg is not given:
        recipe += "\n# merged by `safemerge merge --fast-ties`: parameters.tie_break = index\n"
    out_cfg = output_config(plan)
    donor = plan.sources[donor_label(cfg)]
    tok_choice = cfg.tokenizer_choice
    tok_label = cfg.base_model if tok_choice in (None, "base") else tok_choice
    tok_source = plan.sources.get(tok_label or donor_label(cfg), donor)
    vocab = getattr(plan, "vocab", None)
    policy = RETURN_FREED if mem_bytes is not None else REUSE_FREED  # see safemerge.utils.malloc

    with malloc_policy(policy), atomic_dir(out_dir, overwrite=overwrite) as tmp:
        writer = ShardedWriter(tmp, [(t.name, t.out) for t in plan.tasks], shard_bytes or (5 * 10**9))
        with make_progress(disable=not progress) as bar:
            job = bar.add_task(f"merging ({cfg.merge_method})", total=len(plan.tasks))
            try:
                execute(plan, lambda task, t: writer.write(task.name, t), seed=seed, threads=threads,
                        max_memory=mem_bytes, check_finite=check_finite,
                        align=vocab.align if vocab is not None else None,
                        on_done=lambda _task: bar.advance(job))
            finally:
                writer.abort()
        writer.close()
        (tmp / "config.json").write_text(json.dumps(out_cfg, indent=2, sort_keys=True) + "\n")
        donor_dir = files_dir(donor)
        if donor_dir is not None:
            _copy_files(donor_dir, tmp, ("generation_config.json",))
        if copy_tokenizer or tok_choice is not None:
            tok_dir = files_dir(tok_source)
            if tok_dir is None:
                tok_dir = ModelRef.parse(tok_source.label).path
            _copy_files(tok_dir, tmp, TOKENIZER_FILES)
            if cfg.chat_template:
                _set_chat_template(tmp, cfg.chat_template)
        (tmp / "mergekit_config.yml").write_text(recipe)
        (tmp / "README.md").write_text(model_card(cfg, recipe, out_dir.name, len(plan.tasks), plan.bytes_written))
        make_readable(tmp)
    return out_dir


def _set_chat_template(model_dir: Any, template: str) -> None:
    import json
    from pathlib import Path

    if "{" not in template:
        raise SafemergeError(f"chat_template: {template!r} is not supported; give a Jinja template string")
    (Path(model_dir) / "chat_template.jinja").write_text(template)
    cfg_path = Path(model_dir) / "tokenizer_config.json"
    if cfg_path.is_file():
        data = json.loads(cfg_path.read_text())
        data.pop("chat_template", None)
        cfg_path.write_text(json.dumps(data, indent=2) + "\n")
