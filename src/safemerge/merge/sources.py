"""Lazy access to checkpoints: headers first, tensors one at a time (the readers;
:func:`safemerge.merge.io.open_source` picks one for a model reference).

A :class:`TensorSource` gives tensor names with shapes/dtypes (read from headers only, so a merge can be planned and
validated before any weight is read) and ``get(name)`` to read one tensor. Implementations:

- :class:`CheckpointSource`: a Hugging Face model dir with ``model.safetensors``, sharded safetensors
  (``model.safetensors.index.json``) or ``pytorch_model*.bin`` (``torch.load(weights_only=True, mmap=True)``).
  safetensors tensors are read with positioned reads (``os.preadv``) straight into a fresh tensor, never through a
  long-lived memory map: file pages stay in the page cache (not in the process's RSS), so resident memory is the
  interpreter plus the tensors in flight, which ``--max-memory`` bounds;
- :class:`GGUFSource`: a llama.cpp ``.gguf`` file, each tensor dequantized (and un-permuted) when it is read, from a
  memory map (:mod:`safemerge.utils.gguf`); its config/tokenizer/generation config come from a cached files dir;
- :class:`safemerge.merge.lora.LoraSource` (built on these): a base checkpoint with a PEFT LoRA adapter applied on
  read;
- :class:`DictSource`: an in-memory state dict (used by :func:`safemerge.merge.merge_state_dicts`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from safemerge.errors import InputError

ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
DTYPE_ST = {v: k for k, v in ST_DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class TensorSource(Protocol):
    label: str  # the model reference as written in the config

    def infos(self) -> dict[str, TensorInfo]: ...

    def get(self, name: str) -> torch.Tensor: ...

    @property
    def config(self) -> dict[str, Any]: ...


class DictSource:
    """A state dict held in memory."""

    def __init__(self, label: str, tensors: dict[str, torch.Tensor], config: dict[str, Any] | None = None):
        self.label = label
        self._tensors = tensors
        self._config = config or {}
        self._infos = {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in tensors.items()}

    def infos(self) -> dict[str, TensorInfo]:
        return self._infos

    def get(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    @property
    def config(self) -> dict[str, Any]:
        return self._config


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found; check the model path") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise InputError(f"{path}: {what} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}); "
                         "re-download or re-save the model") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} must be a JSON object; re-download or re-save the model")
    return data


class CheckpointSource:
    """A Hugging Face checkpoint directory (safetensors single/sharded, or .bin)."""

    def __init__(self, path: str | Path, label: str | None = None):
        self.path = Path(path)
        self.label = label or str(path)
        if not os.path.isdir(self.path):  # os.path: pathlib's raises for a name too long
            raise InputError(f"{self.path}: model directory not found; check the path in the merge config")
        self._spans: dict[str, tuple[int, int]] = {}  # safetensors tensor -> (absolute file offset, nbytes)
        self._bin: dict[Path, dict[str, torch.Tensor]] = {}
        self._file_of: dict[str, Path] = {}
        self._infos: dict[str, TensorInfo] = {}
        self._config: dict[str, Any] | None = None
        self._scan()

    # ---- headers ---------------------------------------------------------------------------------
    def _scan(self) -> None:
        p = self.path
        if (p / "model.safetensors.index.json").is_file():
            self._scan_index(p / "model.safetensors.index.json")
        elif (p / "model.safetensors").is_file():
            self._scan_safetensors(p / "model.safetensors")
        elif (p / "pytorch_model.bin.index.json").is_file():
            self._scan_index(p / "pytorch_model.bin.index.json")
        elif (p / "pytorch_model.bin").is_file():
            self._scan_bin(p / "pytorch_model.bin")
        elif (p / "adapter_model.safetensors").is_file():  # a PEFT adapter dir
            self._scan_safetensors(p / "adapter_model.safetensors")
        elif (p / "adapter_model.bin").is_file():
            self._scan_bin(p / "adapter_model.bin")
        else:
            singles = sorted(p.glob("*.safetensors"))
            if len(singles) == 1:
                self._scan_safetensors(singles[0])
            else:
                raise InputError(f"{p}: no model.safetensors, sharded index or pytorch_model.bin found; "
                                 "point the config at a Hugging Face model directory")

    def _scan_index(self, index: Path) -> None:
        weight_map = read_json(index, "shard index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise InputError(f"{index}: no 'weight_map' in the shard index; re-download or re-save the model")
        bad = next((k for k, v in weight_map.items() if not isinstance(v, str) or not v), None)
        if bad is not None:
            raise InputError(f"{index}: weight_map[{bad!r}] is {weight_map[bad]!r}, not a shard file name; "
                             "re-download or re-save the model")
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            file = self.path / shard
            if not os.path.isfile(file):  # os.path: pathlib's raises for a name too long
                raise InputError(f"{file}: shard listed in {index.name} is missing; re-download the model")
            if shard.endswith(".safetensors"):
                self._scan_safetensors(file)
            else:
                self._scan_bin(file)
        for name, shard in weight_map.items():
            if self._file_of.get(name) != self.path / shard:
                raise InputError(f"{self.path / shard}: tensor {name!r} listed in {index.name} is not in this shard; "
                                 "re-download the model")

    def _scan_safetensors(self, file: Path) -> None:
        from safetensors import SafetensorError, safe_open

        try:  # safetensors validates the header (offsets, sizes, file length); its mmap is dropped right after
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    sl = handle.get_slice(name)
                    dtype = ST_DTYPES.get(sl.get_dtype())
                    if dtype is None:
                        raise InputError(f"{file}: tensor {name!r} has unsupported dtype {sl.get_dtype()}")
                    self._infos[name] = TensorInfo(tuple(sl.get_shape()), dtype)
                    self._file_of[name] = file
            with open(file, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"{file}: corrupt or truncated safetensors file ({str(exc).splitlines()[0]}); "
                             "re-download or re-save the model") from None
        for name, entry in header.items():
            if name != "__metadata__":
                start, end = entry["data_offsets"]
                self._spans[name] = (8 + n + start, end - start)

    def _scan_bin(self, file: Path) -> None:
        try:
            try:
                sd = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
                sd = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a corrupt file for the user
            raise InputError(f"{file}: cannot read PyTorch checkpoint ({str(exc).splitlines()[0][:120]}); "
                             "re-download it or convert it to safetensors") from None
        if not isinstance(sd, dict):
            raise InputError(f"{file}: not a state dict; re-save the model with save_pretrained")
        for name, t in sd.items():
            if isinstance(t, torch.Tensor):
                self._infos[name] = TensorInfo(tuple(t.shape), t.dtype)
                self._file_of[name] = file
        self._bin[file] = sd

    # ---- API -------------------------------------------------------------------------------------
    def infos(self) -> dict[str, TensorInfo]:
        return self._infos

    def get(self, name: str) -> torch.Tensor:
        file = self._file_of[name]
        if file in self._bin:
            return self._bin[file][name]
        info, (offset, nbytes) = self._infos[name], self._spans[name]
        out = torch.empty(info.shape, dtype=info.dtype)
        if nbytes:
            try:
                read_into(file, offset, out.view(-1).view(torch.uint8).numpy())
            except OSError as exc:
                raise InputError(f"{file}: cannot read tensor {name!r} ({exc}); "
                                 "the file is corrupt, re-download it") from None
        return out

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            cfg = self.path / "config.json"
            self._config = read_json(cfg, "config.json") if cfg.is_file() else {}
        return self._config

    def file_of(self, name: str) -> Path:
        return self._file_of[name]

    def span(self, name: str) -> tuple[Path, int, int] | None:
        """Where tensor ``name``'s bytes lie: (safetensors file, absolute offset, byte count), in memory order of
        :meth:`infos`' shape and dtype; ``None`` for a tensor of a ``.bin`` file (read whole with :meth:`get`)."""
        span = self._spans.get(name)
        return None if span is None or self._file_of[name] in self._bin else (self._file_of[name], *span)


def read_into(file: Path, offset: int, buf: Any) -> None:
    """Fill ``buf`` (a writable buffer) with the bytes of ``file`` at ``offset``: positioned reads, no file
    position shared between threads, no memory map."""
    fd = os.open(file, os.O_RDONLY)
    try:
        pread_into(fd, offset, buf)
    finally:
        os.close(fd)


def pread_into(fd: int, offset: int, buf: Any) -> None:
    """Fill ``buf`` (a writable buffer) with the bytes of open file ``fd`` at ``offset`` (``OSError`` if the file
    ends first)."""
    view = memoryview(buf).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise OSError(f"file ends {len(view) - done} bytes early")
        done += got


class GGUFSource:
    """A GGUF file: Hugging Face tensor names and shapes from its header, each tensor dequantized to float32 on read.

    ``path`` is the file (named in errors); ``files_dir`` holds the clean config.json, generation config and
    tokenizer that ``safemerge convert`` would write (built once per file content, cached), which the merge copies.
    """

    def __init__(self, path: str | Path, label: str | None = None):
        from safemerge.utils.gguf import open_gguf

        self.path = Path(path)
        self.label = label or str(path)
        self._model = open_gguf(self.path)
        self.files_dir = self._model.files_dir
        self._infos = {n: TensorInfo(shape, torch.float32) for n, shape in self._model.shapes().items()}

    def infos(self) -> dict[str, TensorInfo]:
        return self._infos

    def get(self, name: str) -> torch.Tensor:
        return self._model.tensor(name)

    @property
    def config(self) -> dict[str, Any]:
        return self._model.config


def files_dir(source: Any) -> Path | None:
    """The directory holding a source's config / tokenizer / generation config files (a checkpoint dir, or the
    cached files dir of a GGUF source; through a LoRA source to its base)."""
    own = getattr(source, "files_dir", None)
    if own is not None:
        return Path(own)
    base = getattr(source, "base", None)
    if base is not None:
        return files_dir(base)
    path = getattr(source, "path", None)
    return Path(path) if path is not None else None
