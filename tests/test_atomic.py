"""safemerge.utils.atomic: killed runs leave temporary siblings that the next write of the same output removes,
unless a live process holds them (flock); a full disk / file size limit is a one-line error leaving nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from safemerge.errors import SafemergeError
from safemerge.utils.atomic import INIT_GRACE_S, atomic_dir, atomic_write_text, remove_stale


def _py(code: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _temps(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


KILLED = {  # a real process that dies by SIGKILL in the middle of an atomic write of FINAL
    "dir": """
        import os, signal
        from safemerge.utils.atomic import atomic_dir
        with atomic_dir(FINAL) as tmp:
            (tmp / "half").write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
    """,
    "file": """
        import os, signal
        from pathlib import Path
        from safemerge.utils.atomic import _new_temp  # the first step of atomic_write_bytes
        tmp, fd = _new_temp(Path(FINAL), is_dir=False)
        tmp.write_bytes(b"x" * 1000)
        os.kill(os.getpid(), signal.SIGKILL)
    """,
}


def _killed_inside(final: Path, kind: str) -> None:
    proc = _py(textwrap.dedent(KILLED[kind]).replace("FINAL", repr(str(final))))
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_the_next_write_removes_what_killed_runs_left(tmp_path, kind):
    final = tmp_path / ("out" if kind == "dir" else "state.json")
    for _ in range(3):
        _killed_inside(final, kind)
    # each killed atomic_dir run already removed its predecessor's leftover on entry; _new_temp alone does not
    assert len(_temps(tmp_path, final.name)) == (1 if kind == "dir" else 3) and not final.exists()
    if kind == "dir":
        with atomic_dir(final) as tmp:
            (tmp / "done").write_text("1")
    else:
        atomic_write_text(final, "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


def test_a_live_runs_temp_dir_is_not_touched(tmp_path):
    final = tmp_path / "out"
    child = _py(f"""
        import sys
        from safemerge.utils.atomic import atomic_dir
        with atomic_dir({str(final)!r}) as tmp:
            (tmp / "part").write_text("being written")
            print(tmp, flush=True)
            sys.stdin.readline()  # hold the temp dir (and its lock) until told
    """)
    try:
        live = Path(child.stdout.readline().strip())
        assert live.is_dir() and live.name.startswith(".out.tmp-")
        assert remove_stale(final) == []
        with atomic_dir(final) as tmp:  # another run of the same output finishes beside it
            (tmp / "done").write_text("1")
        assert live.is_dir() and (live / "part").read_text() == "being written"
        assert (final / "done").is_file()
    finally:
        child.kill()  # SIGKILL: the kernel drops its lock
        child.communicate(timeout=60)
    assert remove_stale(final) == [live] and not live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_only_the_outputs_own_siblings_are_removed(tmp_path):
    for name in (".out.tmp-0123abcd", ".out2.tmp-0123abcd", ".out.tmp.tmp-0123abcd", ".out.tmp-xyz", "out.tmp-0123abcd",
                 ".out.old-0123abcd"):
        (tmp_path / name).mkdir()
    (tmp_path / "out").mkdir()
    removed = sorted(p.name for p in remove_stale(tmp_path / "out"))
    assert removed == [".out.old-0123abcd", ".out.tmp-0123abcd"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-xyz", ".out.tmp.tmp-0123abcd",
                                                          ".out2.tmp-0123abcd", "out", "out.tmp-0123abcd"]


def test_an_overwrite_killed_between_its_renames_keeps_the_previous_output(tmp_path):
    """Killed after moving the previous output aside (``.old-``) but before moving the new one in: the next run
    puts the previous output back instead of deleting it."""
    (tmp_path / ".out.old-0000aaaa").mkdir()
    (tmp_path / ".out.old-0000aaaa" / "model").write_text("previous")
    (tmp_path / ".out.tmp-0000bbbb").mkdir()
    remove_stale(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "model").read_text() == "previous"


def test_a_fresh_init_sibling_gets_its_grace_period(tmp_path):
    young, old = tmp_path / ".out.init-0000aaaa", tmp_path / ".out.init-0000bbbb"
    young.mkdir()
    old.mkdir()
    past = time.time() - INIT_GRACE_S - 5
    os.utime(old, (past, past))
    assert remove_stale(tmp_path / "out") == [old] and young.is_dir()


def test_enospc_inside_atomic_dir_is_one_line_and_leaves_nothing(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(SafemergeError) as exc:
        with atomic_dir(final) as tmp:
            (tmp / "ok").write_text("x")
            with open("/dev/full", "wb") as fh:  # the kernel answers every write with ENOSPC
                fh.write(b"x" * 100)
    msg = str(exc.value)
    assert msg.startswith(f"{final}: no space left on device") and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def _limit_file_size(limit: int):
    def pre() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def test_file_size_limit_in_atomic_write_is_one_line_and_leaves_nothing(tmp_path):
    proc = _py(f"""
        from safemerge.errors import SafemergeError
        from safemerge.utils.atomic import atomic_write_text
        try:
            atomic_write_text({str(tmp_path / 'report.md')!r}, "x" * 50_000)
        except SafemergeError as exc:
            print(exc)
    """, preexec_fn=_limit_file_size(10_000))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.startswith(f"{tmp_path / 'report.md'}: file size limit reached"), out
    assert list(tmp_path.iterdir()) == []
