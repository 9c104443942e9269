"""glibc malloc policies for the two kinds of heavy work, set for one block of work (no-op where the C library is not
glibc).

The process has one allocator. Each phase runs under the policy it needs, ``with malloc_policy(POLICY): ...``, and
the policy in force before is restored when the block ends, so a phase never inherits the policy of the phase that
ran before it: a merge under ``--max-memory`` gives freed tensor buffers back to the OS at once (RSS follows the
bytes in flight, so the budget holds); a merge without a budget and training keep them for reuse (a merge allocates
the same tensor shapes layer after layer, a training step the same buffers every step), which saves the page faults
of fresh mappings.

glibc has no call that reads its malloc parameters back, so the values in force are recorded here, starting from
glibc's documented defaults (:data:`GLIBC_DEFAULTS`). One thing cannot be restored: glibc raises its mmap threshold
by itself (up to 32 MiB) until the first ``mallopt`` of that threshold, and no call switches this back on; after a
policy ends, the threshold stays at the value in force before (128 KiB, glibc's start value, for the outermost).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8
KIB, MIB = 1024, 1024 * 1024


@dataclass(frozen=True)
class MallocPolicy:
    """A set of glibc ``mallopt(option, value)`` settings; the options it does not name keep their values."""

    name: str
    settings: tuple[tuple[int, int], ...]


# glibc's values before any mallopt (mallopt(3), 64-bit): mmap and trim thresholds 128 KiB, top pad 128 KiB, at most
# 8 arenas per core
GLIBC_DEFAULTS = MallocPolicy("glibc defaults", ((M_MMAP_THRESHOLD, 128 * KIB), (M_TRIM_THRESHOLD, 128 * KIB),
                                                 (M_TOP_PAD, 128 * KIB), (M_ARENA_MAX, 8 * (os.cpu_count() or 1))))

# The merge engine's policy under --max-memory: glibc serves allocations below its adaptive mmap threshold (which
# climbs to 32 MiB after the first large free) from per-thread heaps that it rarely trims, so the buffers of merged
# tensors pile up in RSS and a merge grows to about the input size whatever --max-memory says. A fixed 128 KiB
# threshold maps every tensor buffer on its own and unmaps it on free: RSS then follows the bytes actually in flight.
# The trim threshold is glibc's default.
RETURN_FREED = MallocPolicy("return freed memory", ((M_MMAP_THRESHOLD, 128 * KIB), (M_TRIM_THRESHOLD, 128 * KIB)))

# The merge engine's policy without a budget: glibc reuses freed tensor buffers of up to 32 MiB from one heap. With
# RETURN_FREED every tensor buffer is a fresh mapping whose pages fault in on first touch: measured on the bench's
# 3 x 248M-param bf16 TIES merge (``/usr/bin/time safemerge merge bench/_work/configs/ties.yaml OUT --threads 2
# --fast-ties``), 10.4 of 35.0 CPU seconds were system time (20.4 s wall); with this policy 1.9 of 25.8 (15.2 s
# wall), peak RSS 437 MiB instead of 359 MiB (mergekit 0.1.5 on the same recipe: 1615 MiB). One arena (instead of
# one per thread) keeps freed blocks where every worker can reuse them; the heap top is trimmed above 64 MiB.
REUSE_FREED = MallocPolicy("reuse freed memory", ((M_MMAP_THRESHOLD, 32 * MIB), (M_TRIM_THRESHOLD, 64 * MIB),
                                                  (M_ARENA_MAX, 1)))

# The training policy: a training step frees and reallocates the same activation and gradient buffers every step;
# with glibc's defaults many are mmapped and unmapped each time, and the page faults cost ~20 % of a tiny model's
# step as system time (measured: one multilingual SFT expert 83.8 s wall / 18.2 s system -> 69.2 s / 1.1 s). 32 MiB
# is the largest mmap threshold glibc accepts.
KEEP_FREED = MallocPolicy("keep freed memory", ((M_MMAP_THRESHOLD, 32 * MIB), (M_TRIM_THRESHOLD, 1024 * MIB),
                                                (M_TOP_PAD, 64 * MIB)))

# The values in force in this process's one allocator (glibc cannot be asked): changed only by malloc_policy.
_IN_FORCE = dict(GLIBC_DEFAULTS.settings)
_LOCK = threading.Lock()


def _mallopt(settings: tuple[tuple[int, int], ...]) -> bool:
    """Apply ``settings`` with glibc's ``mallopt``; False where the C library has none (not glibc)."""
    try:
        libc = ctypes.CDLL(None)
        for option, value in settings:
            libc.mallopt(option, value)
    except (OSError, AttributeError):  # not glibc
        return False
    return True


@contextlib.contextmanager
def malloc_policy(policy: MallocPolicy) -> Iterator[None]:
    """Run the block under ``policy``; afterwards the options it set have their previous values again (also when
    the block raises). Nests: an inner policy ends by restoring the outer one's values."""
    with _LOCK:
        before = tuple((option, _IN_FORCE[option]) for option, _ in policy.settings)
        _mallopt(policy.settings)
        _IN_FORCE.update(policy.settings)
    try:
        yield
    finally:
        with _LOCK:
            _mallopt(before)
            _IN_FORCE.update(before)


def in_force() -> dict[int, int]:
    """The malloc parameters in force (option -> value), as far as :func:`malloc_policy` set them."""
    with _LOCK:
        return dict(_IN_FORCE)
