"""The executor: run a :class:`~safemerge.merge.plan.MergePlan` tensor by tensor.

Worker threads do the math (torch kernels release the GIL) inside a bounded window: a task is submitted only while
the estimated bytes in flight stay under the memory budget, and results are consumed in plan order, so the output is
written deterministically whatever the thread count. Random methods get a generator seeded from
``(seed, tensor name)``: the same seed gives bit-identical output with 1 or N threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import torch

from safemerge.errors import InputError, SafemergeError
from safemerge.merge.config import MergeConfig, load_config
from safemerge.merge.methods import MethodSpec, pruned_at_once
from safemerge.merge.sources import DictSource
from safemerge.merge.plan import MergePlan, TensorTask, build_plan
from safemerge.merge.sparsify import trim_scratch_bytes
from safemerge.merge.task import Aligner, run_task
from safemerge.merge.tokenizer import TOKENIZER_FILES
from safemerge.utils.malloc import RETURN_FREED, REUSE_FREED, malloc_policy

def task_cost(task: TensorTask, method: MethodSpec | None = None) -> int:
    """Estimated peak bytes of one task: inputs in compute precision, method scratch (~2 tensors per input), output;
    plus, for a ``method`` that sorts magnitudes (:attr:`MethodSpec.sorts_magnitudes`), one trim's scratch
    (:func:`~safemerge.merge.sparsify.trim_scratch_bytes`) per model pruned at once
    (:func:`~safemerge.merge.methods.pruned_at_once`)."""
    n_in = len(task.inputs) + (task.base is not None)
    numel = max(task.out.numel, 1)
    width = max(task.out.dtype.itemsize, 4)
    sorts = method is not None and method.sorts_magnitudes and not task.copy
    at_once = pruned_at_once(numel, len(task.inputs))
    sort = trim_scratch_bytes(numel, task.out.dtype.itemsize) * at_once if sorts else 0
    return task.in_bytes + numel * width * (2 * n_in + 1) + task.out.nbytes + sort


def execute(plan: MergePlan, emit: Callable[[TensorTask, torch.Tensor], None], *, seed: int = 0, threads: int = 1,
            max_memory: int | None = None, check_finite: bool = False, align: Aligner | None = None,
            on_done: Callable[[TensorTask], None] | None = None, stats: dict[str, int] | None = None,
            device: str | None = None, work: Callable[..., Any] | None = None) -> None:
    """Run every task; ``emit`` receives results in plan order. At most ``max_memory`` estimated bytes in flight.
    ``device``: where the math runs (:func:`run_task`). ``work``: what a worker runs per task instead of
    :func:`run_task`, with the same arguments (``merge`` writes each tensor from its worker, see
    :func:`safemerge.merge.streamed.write_task`); ``emit`` then gets what it returns.

    ``stats`` (optional) receives ``peak_in_flight``: the largest estimated bytes in flight at any time.
    """
    stats = stats if stats is not None else {}
    stats["peak_in_flight"] = 0
    if max_memory is not None:
        worst = max((task_cost(t, plan.method) for t in plan.tasks), default=0)
        if worst > max_memory:
            raise SafemergeError(f"--max-memory {max_memory} bytes is below the {worst} bytes needed by the largest "
                                 "tensor; raise --max-memory")
    threads = max(1, threads)  # one code path for any thread count (threads=1: one worker, window of 2)
    with _cyclic_gc_paused():
        _execute(plan, emit, seed, threads, max_memory, check_finite, align, on_done, stats, device, work or run_task)


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
             on_done: Callable[[TensorTask], None] | None, stats: dict[str, int], device: str | None = None,
             work: Callable[..., Any] = run_task) -> None:
    window = 2 * threads
    budget = max_memory if max_memory is not None else outlier_budget([task_cost(t, plan.method) for t in plan.tasks],
                                                                       window)
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
                cost = task_cost(task, plan.method)
                while pending and (len(pending) >= window or in_flight + cost > budget):
                    drain_one()
                if cost >= budget and max_memory is None:  # an outlier about to run alone (outlier_budget)
                    release_free_heap()
                pending.append((task, pool.submit(work, plan, task, seed, check_finite, align, device), cost))
                in_flight += cost
                stats["peak_in_flight"] = max(stats["peak_in_flight"], in_flight)
            while pending:
                drain_one()
        except BaseException:
            for _, fut, _ in pending:
                fut.cancel()
            raise


def release_free_heap() -> None:
    """glibc ``malloc_trim(0)``: return the free pages the heap keeps for reuse (the reuse policy's buffers of earlier
    tensors, ~250 MiB after the layers of the bench's 0.5B models) before an outlier runs; a no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def outlier_budget(costs: list[int], window: int) -> int:
    """The bytes in flight without ``--max-memory``: unbounded (the window of ``window`` tasks bounds it), except
    that a task estimated above the whole window of typical tasks (``window`` x the median estimate) runs alone: the
    budget is then that task's estimate. Such outliers are the embedding and output head of a large vocabulary (a
    32k x 1536 embedding has ~50M entries, a layer's largest weight ~6M): beside ``window - 1`` other tasks they set
    the peak RSS (the bench's 0.5B DELLA merge: 1586 MiB with them in company, 1374 MiB alone after
    :func:`release_free_heap`; bench/RESULTS.md)."""
    if not costs:
        return 0
    largest, median = max(costs), sorted(costs)[len(costs) // 2]
    return largest if largest > window * median else 1 << 62


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
    if cfg.output == "lora":
        raise SafemergeError("output: lora writes an adapter to disk; merge_state_dicts returns full tensors: remove "
                             "'output' or use safemerge merge")
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
          progress: bool = False, check_finite: bool = True, fast_ties: bool = False,
          device: str | None = None) -> Any:
    """Merge the models of a mergekit YAML config into ``out_dir`` (a loadable HF model dir) and return its path.

    Streaming: one tensor per worker at a time, positioned reads (no memory map), shards of at most
    ``max_shard_size`` bytes, at most ``max_memory`` estimated bytes in flight (peak RSS <= the interpreter's
    baseline + ``max_memory``: freed buffers go back to the OS, see :data:`~safemerge.utils.malloc.RETURN_FREED`;
    without a budget they are reused, see :data:`~safemerge.utils.malloc.REUSE_FREED`; the policy holds while the
    tensors are merged and written, then the previous one is restored). Everything checkable from headers is
    validated before any tensor is read; a failure leaves no output directory (atomic rename at the end).
    ``fast_ties``: magnitude pruning keeps the lowest-index entries among equal ``|delta|`` at the cut
    (``tie_break: index``, O(n)) unless the recipe sets ``tie_break``; the default keeps exactly mergekit's entries.
    ``device`` (``cuda``, ``cuda:N``; like mergekit's ``--cuda``): still streaming, each tensor's math runs there
    and the result is written from the CPU (:func:`run_task`); None = the CPU.
    """
    import json
    from pathlib import Path

    from safemerge.merge.card import model_card
    from safemerge.merge.config import config_text
    from safemerge.merge.sources import files_dir
    from safemerge.merge.vocab import tokenizer_dir
    from safemerge.merge.streamed import worker_threads, write_task
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
    if given.output == "lora":  # a PEFT adapter out: safemerge.merge.merge dispatches it to lora_merge
        raise SafemergeError("output: lora writes an adapter: call safemerge.merge.merge (or the CLI), not "
                             "safemerge.merge.engine.merge")
    cfg, plan = open_plan(with_fast_ties(given) if fast_ties else given)
    recipe = config_text(config)
    if cfg is not given:
        recipe += "\n# merged by `safemerge merge --fast-ties`: parameters.tie_break = index\n"
    out_cfg = output_config(plan)
    donor = plan.sources[donor_label(cfg)]
    tok_choice = cfg.tokenizer_choice
    vocab = getattr(plan, "vocab", None)
    policy = RETURN_FREED if mem_bytes is not None else REUSE_FREED  # see safemerge.utils.malloc

    align = vocab.align if vocab is not None else None
    with malloc_policy(policy), worker_threads(threads, plan, align), atomic_dir(out_dir, overwrite=overwrite) as tmp:
        writer = ShardedWriter(tmp, [(t.name, t.out) for t in plan.tasks], shard_bytes or (5 * 10**9))
        with make_progress(disable=not progress) as bar:
            job = bar.add_task(f"merging ({cfg.merge_method})", total=len(plan.tasks))
            try:
                execute(plan, lambda _task, _none: None, seed=seed, threads=threads,  # workers write (pwrite)
                        max_memory=mem_bytes, check_finite=check_finite,
                        align=align,
                        on_done=lambda _task: bar.advance(job), device=device, work=partial(write_task, writer))
            finally:
                writer.abort()
        writer.close()
        (tmp / "config.json").write_text(json.dumps(out_cfg, indent=2, sort_keys=True) + "\n")
        donor_dir = files_dir(donor)
        if donor_dir is not None:
            _copy_files(donor_dir, tmp, ("generation_config.json",))
        if copy_tokenizer or tok_choice is not None:
            if vocab is not None and vocab.tokenizer is not None:  # union / added tokens: written updated
                vocab.tokenizer.write(tmp)
            else:
                _copy_files(tokenizer_dir(cfg, plan.sources), tmp, TOKENIZER_FILES)
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
