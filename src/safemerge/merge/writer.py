"""Streaming sharded safetensors writer.

The plan knows every output tensor's name, shape and dtype before the merge starts, so each shard's header (written
when its file is created, with its first tensor) and each tensor's place in its shard are fixed up front. Workers
write tensors with positioned writes (``os.pwrite``) straight to their places, in any order and from any thread: a
whole tensor (:meth:`ShardedWriter.write_at`) or a chunk at a time (:meth:`ShardedWriter.write_range`). Every byte
is written once and nothing waits for the tensors before it, so peak memory is the tensors in flight, not one shard.
Shards are cut at ``max_shard_size`` bytes (a tensor larger than the budget gets a shard of its own); with more than
one shard a ``model.safetensors.index.json`` maps tensor names to files, as ``save_pretrained`` does.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import torch

from safemerge.errors import ConfigError
from safemerge.merge.sources import DTYPE_ST, TensorInfo

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 10**3, "M": 10**6, "G": 10**9}


def parse_size(value: str | int | None, option: str = "--max-shard-size") -> int | None:
    """``"5GB"``, ``"500MiB"``, ``"1e9"`` or an int -> bytes (``None`` stays ``None``)."""
    if value is None or isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*([0-9.]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
    unit = m.group(2).upper() if m else ""
    if not m or unit not in _UNITS:
        raise ConfigError(f"{option}: cannot parse size {value!r}; use e.g. 5GB, 500MB, 2GiB or a byte count")
    try:  # the pattern lets through "." and "1.2.3" (ValueError) and "1e999" (inf: OverflowError)
        size = int(float(m.group(1)) * _UNITS[unit])
    except (ValueError, OverflowError):
        raise ConfigError(f"{option}: cannot parse size {value!r}; use e.g. 5GB, 500MB, 2GiB or a byte count") from None
    if size <= 0:
        raise ConfigError(f"{option}: size must be positive, got {value!r}")
    return size


def assign_shards(layout: list[tuple[str, TensorInfo]], max_shard_size: int) -> list[list[tuple[str, TensorInfo]]]:
    """Split ``layout`` (in order) into shards of at most ``max_shard_size`` bytes each."""
    shards: list[list[tuple[str, TensorInfo]]] = [[]]
    size = 0
    for name, info in layout:
        if shards[-1] and size + info.nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append((name, info))
        size += info.nbytes
    return shards


def _header(entries: list[tuple[str, TensorInfo]]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, info in entries:
        header[name] = {"dtype": DTYPE_ST[info.dtype], "shape": list(info.shape),
                        "data_offsets": [offset, offset + info.nbytes]}
        offset += info.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    return len(blob).to_bytes(8, "little") + blob


def pwrite_all(fd: int, data: Any, offset: int) -> None:
    """Write all of ``data`` (a buffer) at ``offset`` of ``fd``; a short write (a file size limit, a signal) is
    continued, and the next write reports the error (``ENOSPC``, ``EFBIG``)."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def tensor_bytes(tensor: torch.Tensor) -> Any:
    """The bytes of ``tensor`` in memory order, as a buffer (no copy for a contiguous tensor)."""
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()


class ShardedWriter:
    """Safetensors shards under ``out_dir`` laid out from ``layout`` (name, info) in order; tensors are written at
    their places in any order (thread-safe), each exactly once; :meth:`close` checks that every one was."""

    def __init__(self, out_dir: str | Path, layout: list[tuple[str, TensorInfo]], max_shard_size: int):
        self.out_dir = Path(out_dir)
        self.shards = assign_shards(layout, max_shard_size) if layout else []
        n = len(self.shards)
        self.files = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors"
                                                           for i in range(n)]
        self._queue = [(si, name, info) for si, shard in enumerate(self.shards) for name, info in shard]
        self._place: dict[str, tuple[int, int, TensorInfo]] = {}  # name -> (shard, absolute offset, info)
        self._headers: list[bytes] = []
        for si, shard in enumerate(self.shards):
            header = _header(shard)
            self._headers.append(header)
            offset = len(header)
            for name, info in shard:
                self._place[name] = (si, offset, info)
                offset += info.nbytes
        self._fds: list[int | None] = [None] * n
        self._created = [False] * n
        self._lock = threading.Lock()
        self._written: set[str] = set()
        self._pos = 0  # next tensor of :meth:`write` (the in-order API)

    def _fd(self, shard: int) -> int:
        """The shard's file, created with its header on first use."""
        fd = self._fds[shard]
        if fd is None:
            with self._lock:
                fd = self._fds[shard]
                if fd is None:
                    if self._created[shard]:
                        raise RuntimeError(f"writer: {self.files[shard]} was closed")
                    self._created[shard] = True
                    fd = os.open(self.out_dir / self.files[shard], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    try:
                        pwrite_all(fd, self._headers[shard], 0)
                    except BaseException:
                        os.close(fd)
                        raise
                    self._fds[shard] = fd
        return fd

    def _check(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[int, int, TensorInfo]:
        place = self._place.get(name)
        if place is None or shape != place[2].shape or dtype != place[2].dtype:
            want = f"{place[2].shape} {place[2].dtype}" if place else "no such tensor"
            raise RuntimeError(f"writer: got {name} {shape} {dtype}, expected {want}")
        return place

    def write_at(self, name: str, tensor: torch.Tensor) -> None:
        """Write the whole tensor ``name`` at its place (any thread, any order)."""
        shard, offset, info = self._check(name, tuple(tensor.shape), tensor.dtype)
        if info.nbytes:
            pwrite_all(self._fd(shard), tensor_bytes(tensor), offset)
        self.done(name)

    def write_range(self, name: str, start: int, chunk: torch.Tensor) -> None:
        """Write ``chunk`` (1-D, the tensor's dtype) as elements ``start:start + len(chunk)`` of tensor ``name`` in
        memory order; call :meth:`done` once every element was written."""
        shard, offset, info = self._place[name]
        if chunk.dtype != info.dtype or chunk.dim() != 1 or not 0 <= start <= start + chunk.numel() <= info.numel:
            raise RuntimeError(f"writer: bad range {start}+{chunk.numel()} {chunk.dtype} of {name} {info.shape} "
                               f"{info.dtype}")
        if chunk.numel():
            pwrite_all(self._fd(shard), tensor_bytes(chunk), offset + start * info.dtype.itemsize)

    def done(self, name: str) -> None:
        with self._lock:
            if name in self._written:
                raise RuntimeError(f"writer: {name} written twice")
            self._written.add(name)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write the next tensor of the layout (the in-order API: ``name`` must be the next one)."""
        _, expected, info = self._queue[self._pos]
        if name != expected:
            raise RuntimeError(f"writer: got {name} {tuple(tensor.shape)} {tensor.dtype}, "
                               f"expected {expected} {info.shape} {info.dtype}")
        self.write_at(name, tensor)
        self._pos += 1

    def close(self) -> list[str]:
        """Finish the shards and write the index (when sharded); returns the file names."""
        missing = len(self._queue) - len(self._written)
        if missing:
            raise RuntimeError(f"writer: {missing} tensors were never written")
        for si in range(len(self.shards)):
            if not self._created[si]:
                self._fd(si)  # a shard of empty tensors only: its header
        self.abort()
        if len(self.files) > 1:
            weight_map = {name: self.files[si] for si, name, _ in self._queue}
            total = sum(info.nbytes for _, _, info in self._queue)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return list(self.files)

    def abort(self) -> None:
        """Close every open shard file (what was written stays; the caller removes the directory)."""
        with self._lock:
            fds, self._fds = self._fds, [None] * len(self._fds)
        for fd in fds:
            if fd is not None:
                os.close(fd)
