"""Scoped glibc malloc policies: a policy holds inside its block only, and the one in force before comes back."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import pytest

from safemerge.utils.malloc import (
    GLIBC_DEFAULTS,
    KEEP_FREED,
    M_MMAP_THRESHOLD,
    M_TOP_PAD,
    M_TRIM_THRESHOLD,
    RETURN_FREED,
    REUSE_FREED,
    in_force,
    malloc_policy,
)


def test_a_policy_holds_inside_its_block_and_the_previous_values_come_back():
    start = in_force()
    with malloc_policy(KEEP_FREED):
        assert in_force() == {**start, **dict(KEEP_FREED.settings)}
        with malloc_policy(RETURN_FREED):  # nested: the merge's policy inside training's
            inner = in_force()
            assert inner[M_MMAP_THRESHOLD] == dict(RETURN_FREED.settings)[M_MMAP_THRESHOLD]
            assert inner[M_TOP_PAD] == dict(KEEP_FREED.settings)[M_TOP_PAD]  # not an option RETURN_FREED sets
        assert in_force() == {**start, **dict(KEEP_FREED.settings)}
    assert in_force() == start


def test_the_previous_values_come_back_when_the_block_raises():
    start = in_force()
    with pytest.raises(RuntimeError), malloc_policy(REUSE_FREED):
        raise RuntimeError("merge failed")
    assert in_force() == start


def test_the_record_starts_at_glibcs_defaults_in_a_fresh_process():
    code = "from safemerge.utils.malloc import in_force; print(sorted(in_force().items()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(sorted(dict(GLIBC_DEFAULTS.settings).items()))
    assert dict(GLIBC_DEFAULTS.settings)[M_TRIM_THRESHOLD] == 128 * 1024


def _glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_glibc_follows_the_policy_and_returns_to_the_previous_one():
    """What glibc does with an 8 MiB request: its own mapping below the mmap threshold of RETURN_FREED (128 KiB),
    the heap below REUSE_FREED's (32 MiB); after each block the previous threshold is back. Checked in a fresh
    process (its heap holds no free 8 MiB block), blocks kept so that none is served from a freed one."""
    code = textwrap.dedent("""
        import ctypes
        from safemerge.utils.malloc import RETURN_FREED, REUSE_FREED, malloc_policy

        class MallInfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]

        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = MallInfo2
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        held = []

        def mapped():
            before = libc.mallinfo2().hblks
            held.append(libc.malloc(8 << 20))
            return libc.mallinfo2().hblks - before == 1

        seen = []
        with malloc_policy(RETURN_FREED):
            seen.append(mapped())
            with malloc_policy(REUSE_FREED):
                seen.append(mapped())
            seen.append(mapped())
        with malloc_policy(REUSE_FREED):
            seen.append(mapped())
        seen.append(mapped())
        print(seen)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([True, False, True, False, True])
