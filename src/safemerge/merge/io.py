"""Opening the models of a merge: :func:`open_source` turns a model reference (a model dir, a ``.gguf`` file, or
``path+adapter``) into a :class:`~safemerge.merge.sources.TensorSource` that reads headers first and tensors one
at a time. The readers are :mod:`safemerge.merge.sources` (re-exported here) and :mod:`safemerge.merge.lora`.
"""

from __future__ import annotations

from typing import Any

from safemerge.merge.sources import (
    DTYPE_ST,
    ST_DTYPES,
    CheckpointSource,
    DictSource,
    GGUFSource,
    TensorInfo,
    TensorSource,
    files_dir,
    read_json,
)

__all__ = ["DTYPE_ST", "ST_DTYPES", "CheckpointSource", "DictSource", "GGUFSource", "TensorInfo", "TensorSource",
           "files_dir", "load_state_dict", "open_source", "read_json"]


def _open_model(path: str, label: str) -> Any:
    """A GGUF file streamed tensor by tensor where its architecture allows, else converted once (cached)."""
    from safemerge.utils.gguf import is_gguf_path, read_header, resolve_model, streamable

    if not is_gguf_path(path):
        return CheckpointSource(path, label=label)
    header = read_header(path)
    if streamable(header):
        return GGUFSource(path, label=label)
    return CheckpointSource(resolve_model(path), label=label)


def open_source(ref: str) -> TensorSource:
    """Open ``path`` (a model dir or a ``.gguf`` file) or ``path+adapter`` (headers only)."""
    from safemerge.merge.config import ModelRef
    from safemerge.merge.lora import LoraSource

    parsed = ModelRef.parse(ref)
    base = _open_model(parsed.path, label=ref)
    if parsed.lora is None:
        return base
    return LoraSource(base, parsed.lora, label=ref)


def load_state_dict(ref: str) -> dict[str, Any]:
    """Every tensor of model ``ref`` (same forms as :func:`open_source`) in memory, by name, in its stored dtype."""
    src = open_source(ref)
    return {name: src.get(name) for name in src.infos()}
