"""Vocabulary alignment for ``tokenizer_source: base | <model>`` (mergekit semantics, without a token table).

The output vocabulary is the chosen model's tokenizer. Each input's embedding / LM-head rows are permuted onto it:
a token the input has keeps that input's row; a token some input lacks gets, in that input, a default row: the
only input's row that has it, else the base model's row when the base has it, else the mean of the inputs that
have it, else zeros. Rows beyond the tokenizer's size (padding) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from safemerge.errors import ConfigError, InputError
from safemerge.merge.config import MergeConfig, ModelRef
from safemerge.merge.sources import TensorSource, files_dir


def tokenizer_vocab(label: str, source: TensorSource) -> dict[str, int]:
    from transformers import AutoTokenizer

    path = files_dir(source) or ModelRef.parse(label).path
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - any loading failure means the tokenizer files are unusable
        raise InputError(f"{path}: cannot load the tokenizer ({str(exc).splitlines()[0][:100]}); "
                         "add tokenizer files or drop tokenizer_source") from None
    return dict(tok.get_vocab())


@dataclass
class VocabAlignment:
    rows: int
    index: dict[str, torch.Tensor]  # per model: target token id -> source row (-1: missing)
    base: str | None

    def align(self, task: Any, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = list(tensors)
        idx = torch.stack([self.index[m] for m in labels])  # [M, V]
        present = idx >= 0
        rows = torch.stack([tensors[m][idx[k].clamp(min=0)] for k, m in enumerate(labels)])  # [M, V, ...]
        if bool(present.all()):
            return {m: rows[k] for k, m in enumerate(labels)}
        mask = present.reshape(*present.shape, *([1] * (rows.ndim - 2))).to(rows.dtype)
        count = present.sum(0).reshape(-1, *([1] * (rows.ndim - 2))).to(rows.dtype)
        default = (rows * mask).sum(0) / count.clamp(min=1)
        if self.base in labels:
            b = labels.index(self.base)
            default = torch.where(present[b].reshape_as(count) > 0, rows[b], default)
        return {m: torch.where(mask[k] > 0, rows[k], default) for k, m in enumerate(labels)}


def prepare_vocab(cfg: MergeConfig, sources: dict[str, TensorSource]) -> VocabAlignment | None:
    """Build the alignment when a tokenizer source is set and the vocabularies or embedding sizes differ."""
    choice = cfg.tokenizer_choice
    if choice is None:
        return None
    if choice == "union":
        raise ConfigError("tokenizer_source: 'union' is not supported; use 'base' or a model path")
    target_label = cfg.base_model if choice == "base" else choice
    if target_label is None:
        raise ConfigError("tokenizer_source: 'base' needs a base_model; set base_model or name a model")
    if target_label not in sources:
        raise ConfigError(f"tokenizer_source: {choice!r} is not one of the merged models; use 'base' or a model "
                          "listed in the config")
    vocabs = {label: tokenizer_vocab(label, src) for label, src in sources.items()}
    target = vocabs[target_label]
    rows = len(target)
    emb_rows = {label: _embedding_rows(src) for label, src in sources.items()}
    if all(v == target for v in vocabs.values()) and set(emb_rows.values()) == {rows}:
        return None
    index = {}
    for label, vocab in vocabs.items():
        idx = torch.full((rows,), -1, dtype=torch.long)
        for token, tid in target.items():
            src = vocab.get(token)
            if src is not None and src < emb_rows[label]:
                idx[tid] = src
        index[label] = idx
    return VocabAlignment(rows, index, cfg.base_model)


def _embedding_rows(src: TensorSource) -> int:
    from safemerge.merge.plan import HEAD_SUFFIXES, is_vocab_tensor

    for name, info in src.infos().items():
        if is_vocab_tensor(name) and not name.endswith(HEAD_SUFFIXES) and len(info.shape) == 2:
            return info.shape[0]
    raise InputError(f"{getattr(src, 'path', src.label)}: no input embedding tensor found; cannot align vocabularies")
