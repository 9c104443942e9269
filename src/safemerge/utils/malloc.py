"""glibc malloc policies for the two kinds of heavy work (no-op where the C library is not glibc).

The process has one allocator, so each phase sets the policy it needs when it starts: a merge under ``--max-memory``
gives freed tensor buffers back to the OS at once (RSS follows the bytes in flight, so the budget holds); a merge
without a budget and training keep them for reuse (a merge allocates the same tensor shapes layer after layer, a
training step the same buffers every step), which saves the page faults of fresh mappings.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8
KIB, MIB = 1024, 1024 * 1024


def _mallopt(*settings: tuple[int, int]) -> None:
    try:
        libc = ctypes.CDLL(None)
        for option, value in settings:
            libc.mallopt(option, value)
    except (OSError, AttributeError):  # not glibc
        pass


def return_freed_memory() -> None:
    """Make glibc give freed tensor buffers back to the OS at once (the merge engine's policy).

    glibc serves allocations below its adaptive mmap threshold (which climbs to 32 MiB after the first large free)
    from per-thread heaps that it rarely trims, so the buffers of merged tensors pile up in RSS and a merge grows to
    about the input size whatever ``--max-memory`` says. A fixed 128 KiB threshold maps every tensor buffer on its
    own and unmaps it on free: RSS then follows the bytes actually in flight. The trim threshold goes back to
    glibc's default (training raises it).
    """
    _mallopt((M_MMAP_THRESHOLD, 128 * KIB), (M_TRIM_THRESHOLD, 128 * KIB))


def reuse_freed_memory() -> None:
    """Let glibc reuse freed tensor buffers of up to 32 MiB from one heap (the merge engine's policy without a budget).

    With :func:`return_freed_memory` every tensor buffer is a fresh mapping whose pages fault in on first touch:
    measured on the bench's 3 x 248M-param bf16 TIES merge (``/usr/bin/time safemerge merge
    bench/_work/configs/ties.yaml OUT --threads 2 --fast-ties``), 10.4 of 35.0 CPU seconds were system time (20.4 s
    wall); with this policy 1.9 of 25.8 (15.2 s wall), peak RSS 437 MiB instead of 359 MiB (mergekit 0.1.5 on the
    same recipe: 1615 MiB). One arena (instead of one per thread) keeps freed blocks where every worker can reuse them; the heap
    top is trimmed above 64 MiB.
    """
    _mallopt((M_MMAP_THRESHOLD, 32 * MIB), (M_TRIM_THRESHOLD, 64 * MIB), (M_ARENA_MAX, 1))


def keep_freed_memory() -> None:
    """Make glibc keep freed buffers for reuse (the training policy).

    A training step frees and reallocates the same activation and gradient buffers every step; with glibc's
    defaults many are mmapped and unmapped each time, and the page faults cost ~20 % of a tiny model's step as
    system time (measured: one multilingual SFT expert 83.8 s wall / 18.2 s system -> 69.2 s / 1.1 s).
    """
    _mallopt((M_MMAP_THRESHOLD, 32 * MIB),  # the largest glibc accepts
             (M_TRIM_THRESHOLD, 1024 * MIB), (M_TOP_PAD, 64 * MIB))
