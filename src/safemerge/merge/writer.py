"""Streaming sharded safetensors writer.

The plan knows every output tensor's name, shape and dtype before the merge starts, so each shard's header is
written first and tensors are then appended one at a time: peak memory is one tensor, not one shard. Shards are cut
at ``max_shard_size`` bytes (a tensor larger than the budget gets a shard of its own); with more than one shard a
``model.safetensors.index.json`` maps tensor names to files, as ``save_pretrained`` does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import BinaryIO

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


class ShardedWriter:
    """Write tensors, in layout order, into pre-laid-out safetensors shards under ``out_dir``."""

    def __init__(self, out_dir: str | Path, layout: list[tuple[str, TensorInfo]], max_shard_size: int):
        self.out_dir = Path(out_dir)
        self.shards = assign_shards(layout, max_shard_size) if layout else []
        n = len(self.shards)
        self.files = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors"
                                                           for i in range(n)]
        self._queue = [(si, name, info) for si, shard in enumerate(self.shards) for name, info in shard]
        self._pos = 0
        self._open: tuple[int, BinaryIO] | None = None

    def _file(self, shard: int) -> BinaryIO:
        if self._open is not None and self._open[0] == shard:
            return self._open[1]
        if self._open is not None:
            self._open[1].close()
        fh = open(self.out_dir / self.files[shard], "wb")  # noqa: SIM115 - closed on shard change / close()
        fh.write(_header(self.shards[shard]))
        self._open = (shard, fh)
        return fh

    def write(self, name: str, tensor: torch.Tensor) -> None:
        shard, expected, info = self._queue[self._pos]
        if name != expected or tuple(tensor.shape) != info.shape or tensor.dtype != info.dtype:
            raise RuntimeError(f"writer: got {name} {tuple(tensor.shape)} {tensor.dtype}, "
                               f"expected {expected} {info.shape} {info.dtype}")
        fh = self._file(shard)
        if info.nbytes:
            data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
            fh.write(memoryview(data))
        self._pos += 1

    def close(self) -> list[str]:
        """Finish the last shard and write the index (when sharded); returns the file names."""
        if self._pos != len(self._queue):
            raise RuntimeError(f"writer: {len(self._queue) - self._pos} tensors were never written")
        if self._open is not None:
            self._open[1].close()
            self._open = None
        if len(self.files) > 1:
            weight_map = {name: self.files[si] for si, name, _ in self._queue}
            total = sum(info.nbytes for _, _, info in self._queue)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return list(self.files)

    def abort(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None
