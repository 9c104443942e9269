"""Running a merge task straight into its place in the output file (:class:`~safemerge.merge.writer.ShardedWriter`).

:func:`write_task` is what a worker of :func:`safemerge.merge.engine.merge` runs for each output tensor: it merges the
tensor and writes it with positioned writes, so reading, math and writing of different tensors overlap across the
workers and no merged tensor waits in memory for the ones before it.

Elementwise methods (:attr:`~safemerge.merge.methods.MethodSpec.entrywise`: every output entry depends only on the
inputs' entries at the same index) are streamed in chunks of :data:`CHUNK` elements: each chunk of every input is
read (positioned reads into a small buffer), converted, merged by the same
:meth:`~safemerge.merge.methods.MethodSpec.call` as a whole tensor, checked for NaN/Inf (the output chunk; the inputs
only where it is not finite) and written, so the float32 temporaries stay in the CPU cache and a task holds a few
MiB whatever its size. The bits are those of the whole-tensor path: each element goes through the same operations
in the same order (tests/merge/test_streamed.py checks chunked against whole on chunk boundaries, odd sizes and every
float dtype).
Everything else (other methods, copies, vocabulary alignment, inputs of other shapes) runs
:func:`~safemerge.merge.task.run_task` on the whole tensor, then writes it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from safemerge.errors import InputError
from safemerge.merge.task import Aligner, all_finite, run_task
from safemerge.merge.plan import DTYPES, MergePlan, TensorTask
from safemerge.merge.sources import pread_into
from safemerge.merge.writer import ShardedWriter

CHUNK = 1 << 18  # elements per chunk: 256 Ki (1 MiB of float32 accumulator, 512 KiB per bf16 input)


def write_task(writer: ShardedWriter, plan: MergePlan, task: TensorTask, seed: int, check_finite: bool = False,
               align: Aligner | None = None, device: str | None = None) -> None:
    """Merge ``task`` and write it at its place in ``writer``'s shards (chunk by chunk where :func:`elementwise` and
    the math runs on the CPU; ``device``: see :func:`~safemerge.merge.task.run_task`)."""
    if device not in (None, "cpu") or not elementwise(plan, task, align):
        writer.write_at(task.name, run_task(plan, task, seed, check_finite, align, device))
        return
    refs = ([task.base] if task.base else []) + list(task.inputs)
    names = {label: name for label, name in refs}  # one read per model, as run_task's dict of inputs
    inputs: dict[str, _Input] = {}
    try:
        for label, name in names.items():
            inputs[label] = _Input(plan.sources[label], name)
        n = task.out.numel
        if any(x.numel != n for x in inputs.values()):  # a source whose tensor is not what its header says
            writer.write_at(task.name, run_task(plan, task, seed, check_finite, align, device))
            return
        compute = DTYPES.get(plan.config.dtype or "")  # as run_task: the recipe's dtype, else the inputs' promoted
        if compute is None:
            compute = inputs[refs[0][0]].dtype
            for x in inputs.values():
                compute = torch.promote_types(compute, x.dtype)
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            raw = {label: x.read(start, stop).to(compute) for label, x in inputs.items()}
            base = raw[task.base[0]] if task.base else None
            tensors = [raw[label] for label, _ in task.inputs]
            with torch.no_grad():
                out = plan.method.call(base, tensors, task.per_model, task.global_params, None).to(task.out.dtype)
            # a NaN/Inf input entry gives a NaN/Inf output entry (MethodSpec.entrywise): one check of the output, the
            # inputs only where it fails (a finite overflow to Inf is a result, not an input error)
            if check_finite and not all_finite(out) and not all(all_finite(raw[label]) for label in names):
                # the whole-tensor path names the first model (in config order) with a NaN/Inf anywhere: same error
                run_task(plan, task, seed, check_finite, align)
                raise AssertionError(f"{task.name}: a chunk is not finite but the whole tensors are")
            writer.write_range(task.name, start, out)
    finally:
        for x in inputs.values():
            x.close()
    writer.done(task.name)


@contextlib.contextmanager
def worker_threads(threads: int, plan: MergePlan, align: Aligner | None = None) -> Iterator[None]:
    """For a merge whose every task is :func:`thread_count_free`, run the block with torch's intra-op threads set to
    the cores left per merge worker (``cores // threads``, at least 1), then restore them; other merges keep torch's
    setting, so that ``--threads`` never changes the output. The workers are the merge's parallelism: with torch's
    default (one thread per core) each worker's kernels also fork a team of one thread per core (2 workers on 2
    cores ran 4 threads). Measured on the bench's 3 x 248M bf16 models, 2 workers, 3 alternating runs: the linear
    merge step 0.61-0.72 s wall with 1 intra-op thread, 0.92-1.17 s with 2; ties 5.8-6.5 vs 7.2-10.2 s."""
    before = torch.get_num_threads()
    if all(thread_count_free(plan, task, align) for task in plan.tasks):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, threads)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def thread_count_free(plan: MergePlan, task: TensorTask, align: Aligner | None = None) -> bool:
    """Whether ``task``'s output bits cannot depend on torch's intra-op thread count: a copy, or a method that sums
    over no tensor's entries with these parameters (:meth:`~safemerge.merge.methods.MethodSpec.thread_count_free`;
    torch splits a sum between its threads, so DARE/DELLA's L1 rescale, slerp's norms, ... round differently with
    another count), and no vocabulary alignment (its padding rows are means)."""
    if align is not None and task.vocab_rows is not None:
        return False
    return task.copy or plan.method.thread_count_free(task.global_params)


def elementwise(plan: MergePlan, task: TensorTask, align: Aligner | None = None) -> bool:
    """Whether ``task`` can be streamed in chunks: an :attr:`~safemerge.merge.methods.MethodSpec.entrywise` method,
    floating inputs of the output's shape, no vocabulary alignment, not a copy."""
    if not plan.method.entrywise or plan.method.random or task.copy:
        return False
    if align is not None and task.vocab_rows is not None:
        return False
    refs = ([task.base] if task.base else []) + list(task.inputs)
    for label, name in refs:
        info = plan.sources[label].infos()[name]
        if not info.dtype.is_floating_point or info.shape != task.out.shape:
            return False
    return task.out.dtype.is_floating_point


class _Input:
    """One input tensor read a chunk at a time: positioned reads of its safetensors bytes into a reused buffer, or
    slices of the whole tensor for a source without byte spans (``.bin``, GGUF, LoRA, in-memory)."""

    def __init__(self, source: Any, name: str):
        self.name = name
        span = source.span(name) if hasattr(source, "span") else None
        self.fd: int | None = None
        if span is None:
            self.flat = source.get(name).reshape(-1)
            self.dtype, self.numel = self.flat.dtype, self.flat.numel()
            return
        info = source.infos()[name]
        self.dtype, self.numel = info.dtype, info.numel
        self.file, self.offset, _ = span
        self.buf = torch.empty(min(CHUNK, self.numel), dtype=self.dtype)
        try:
            self.fd = os.open(self.file, os.O_RDONLY)
        except OSError as exc:
            raise self._error(exc) from None

    def read(self, start: int, stop: int) -> torch.Tensor:
        if self.fd is None:
            return self.flat[start:stop]
        chunk = self.buf[: stop - start]
        try:
            pread_into(self.fd, self.offset + start * self.dtype.itemsize, chunk.view(torch.uint8).numpy())
        except OSError as exc:
            raise self._error(exc) from None
        return chunk

    def _error(self, exc: OSError) -> InputError:  # CheckpointSource.get's message
        return InputError(f"{self.file}: cannot read tensor {self.name!r} ({exc}); the file is corrupt, re-download it")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
