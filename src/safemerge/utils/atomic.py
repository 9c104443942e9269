"""Atomic file and directory writes: write to a temporary sibling, then rename.

A killed or failed run never leaves a file or directory at the final path that looks complete.

Temporary siblings are named ``.<final name>.<tag>-<8 hex>``: ``tmp`` (being written), ``old`` (the previous
output moved aside while an overwrite swaps the new one in) and ``init`` (a fresh sibling for the microseconds
before it is locked and renamed to ``tmp``). The writing process holds an exclusive ``flock`` on each of them for
as long as it uses it (the kernel drops the lock when the process dies, ``kill -9`` included), so every write to
``final`` first removes the siblings no live process holds: what killed runs left behind (:func:`remove_stale`).

Disk full: ``ENOSPC`` / ``EDQUOT`` / ``EFBIG`` (``RLIMIT_FSIZE``) inside a write become one-line
:class:`~safemerge.errors.SafemergeError`\\ s naming the output (:func:`disk_full_error`); the temporary sibling is
removed, so nothing partial is left.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safemerge.errors import InputError, SafemergeError

_TAGS = ("tmp", "old", "init")
INIT_GRACE_S = 10.0  # an unlocked `init` sibling younger than this may be a live run's, before it took its lock
DISK_FULL = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit reached (ulimit -f / RLIMIT_FSIZE)",
}


def _tmp_sibling(final: Path, tag: str) -> Path:
    return final.parent / f".{final.name}.{tag}-{uuid.uuid4().hex[:8]}"


def _sibling_re(final: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(final.name)}\.({'|'.join(_TAGS)})-[0-9a-f]{{8}}")


# ---- locks ---------------------------------------------------------------------------------------------------
def _lock(path: Path, blocking: bool) -> int | None:
    """An fd of ``path`` (file or directory) holding an exclusive flock; ``None`` if another process holds one
    (non-blocking) or ``path`` is gone. A filesystem without flock gives an unlocked fd (nothing is then removed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:  # no flock here (ENOLCK, EOPNOTSUPP): the writer goes on; the cleaner must not touch it
        if blocking:
            return fd
        os.close(fd)
        return None
    return fd


def _close(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _new_temp(final: Path, is_dir: bool) -> tuple[Path, int | None]:
    """A fresh locked ``tmp`` sibling of ``final`` (created as ``init``, locked, then renamed, so that no cleaner
    can see an unlocked ``tmp``) and the fd that holds its lock."""
    init = _tmp_sibling(final, "init")
    if is_dir:
        init.mkdir()
    else:
        os.close(os.open(init, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    fd = _lock(init, blocking=True)
    tmp = init.with_name(init.name.replace(".init-", ".tmp-", 1))
    try:
        os.rename(init, tmp)
    except BaseException:
        _close(fd)
        _remove(init)
        raise
    return tmp, fd


def remove_stale(final: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of ``final`` that no live process holds (left by killed runs); return them.

    A stale ``old`` sibling while ``final`` is missing is the previous complete output of a run killed in the middle
    of an overwrite: it is moved back to ``final`` instead of removed. Siblings a live run holds are left alone.
    """
    final = Path(final)
    pattern = _sibling_re(final)
    try:
        entries = [e.name for e in os.scandir(final.parent) if pattern.fullmatch(e.name)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed: list[Path] = []
    for name in sorted(entries):
        path = final.parent / name
        fd = _lock(path, blocking=False)
        if fd is None:
            continue  # a live run holds it (or it is already gone)
        try:
            tag = pattern.fullmatch(name).group(1)  # type: ignore[union-attr]
            if tag == "init":
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - path.lstat().st_mtime < INIT_GRACE_S:
                        continue
            if tag == "old" and not os.path.lexists(final):
                with contextlib.suppress(OSError):
                    os.rename(path, final)
                    continue
            _remove(path)
            removed.append(path)
        finally:
            _close(fd)
    return removed


# ---- disk full -----------------------------------------------------------------------------------------------
def disk_full_reason(exc: BaseException | None) -> tuple[str, str | None] | None:
    """``(reason, file name or None)`` when ``exc`` (or an exception it was raised from) is a full disk, a quota or
    the file size limit (also when a library wraps the OS error in its own message, as safetensors does)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return DISK_FULL[exc.errno], exc.filename if isinstance(exc.filename, str) else None
        text = str(exc)
        for code, reason in DISK_FULL.items():
            if os.strerror(code) in text:
                return reason, None
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full_error(exc: BaseException, target: str | os.PathLike) -> SafemergeError | None:
    """A one-line error naming ``target`` for a disk-full / file-size-limit failure, or ``None`` for others."""
    found = None if isinstance(exc, SafemergeError) else disk_full_reason(exc)
    if found is None:
        return None
    reason, filename = found
    what = f" while writing {Path(filename).name}" if filename else ""
    fix = ("raise the limit (ulimit -f)" if "size limit" in reason else "free disk space") + \
        " or write to another location"
    return SafemergeError(f"{target}: {reason}{what}; nothing was written, {fix}")


# ---- atomic writes -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that is renamed to ``final`` only if the block succeeds.

    On any exception (including KeyboardInterrupt) the temporary directory is removed and ``final`` is untouched;
    a full disk / file size limit becomes a one-line :class:`SafemergeError`. Stale temporary siblings of
    ``final`` left by killed runs are removed first (:func:`remove_stale`).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)  # first: it may put back the previous output of a run killed mid-overwrite
    if final.exists() and not overwrite:
        raise InputError(f"{final}: output directory already exists; remove it or choose another path")
    tmp, fd = _new_temp(final, is_dir=True)
    try:
        try:
            yield tmp
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if (err := disk_full_error(exc, final)) is not None:
                raise err from None
            raise
        if final.exists():
            old_fd = _lock(final, blocking=True)  # held while final sits aside as `old`: no cleaner restores it
            try:
                trash = _tmp_sibling(final, "old")
                os.replace(final, trash)
                os.replace(tmp, final)
            finally:
                _close(old_fd)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        _close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp, fd = _new_temp(path, is_dir=False)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if (err := disk_full_error(exc, path)) is not None:
            raise err from None
        raise
    finally:
        _close(fd)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Any) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return atomic_write_text(path, text)


def make_readable(path: str | os.PathLike) -> None:
    """safetensors writes 0600 files; give every file under ``path`` mode 0644 (dirs 0755)."""
    path = Path(path)
    if path.is_file():
        os.chmod(path, 0o644)
        return
    for root, dirs, files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    os.chmod(path, 0o755)
