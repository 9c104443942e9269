"""Vocabulary alignment for ``tokenizer_source`` / ``tokenizer: {source, tokens, pad_to_multiple_of}`` (mergekit's
semantics; the output tokenizer itself is built by :mod:`safemerge.merge.tokenizer`).

The output vocabulary is the chosen tokenizer (``base``: the base model's, else the first model's; a model
reference: that model's; ``union``: the base's plus every token of the others). Each input's embedding and LM-head
rows are permuted onto it (tokens compared by text, so byte-level BPE and SentencePiece spellings match). A token an
input lacks gets, in that input, a default row, as in mergekit: the row of the only input that has it, else the base
model's row when the base has it, else the mean of the rows of the inputs that have it, else zeros (a token no input
has: zeros, mergekit's choice; a fresh row that is not the mean keeps the merged model from preferring it). Entries
of ``tokenizer.tokens`` override that default per token: ``source: <model>`` (that model's row of the token),
``source: {kind: model_token, model: <model>, token: <str> | token_id: <int>}`` (a given row of that model's
embedding), ``source: {kind: zero}``; ``force: true`` gives every input the default row, even inputs that have the
token. ``pad_to_multiple_of`` rounds the number of rows up; padding rows are the mean of that input's token rows
(mergekit's choice). Rows of a model beyond its tokenizer (padding) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from safemerge.errors import ConfigError, InputError
from safemerge.merge.config import MergeConfig, ModelRef
from safemerge.merge.sources import TensorSource, files_dir
from safemerge.merge.tokenizer import OutputTokenizer, SourceTokenizer, build_output, load_tokenizer


@dataclass(frozen=True)
class TokenRule:
    """The default row of one output token, from ``tokenizer.tokens``: ``kind`` ``row`` (row ``row`` of model
    ``label``'s tensor), ``zero`` or ``auto`` (mergekit's rule), and whether every input takes it (``force``)."""

    kind: str
    label: str | None = None
    row: int | None = None
    force: bool = False


@dataclass
class VocabAlignment:
    rows: int  # output rows (the tokenizer's size, padded to pad_to_multiple_of)
    index: dict[str, torch.Tensor]  # per model: output token id -> source row (-1: missing); length = tokenizer size
    base: str | None
    rules: dict[int, TokenRule] = field(default_factory=dict)
    tokenizer: OutputTokenizer | None = None

    @property
    def size(self) -> int:
        return len(next(iter(self.index.values())))

    def align(self, task: Any, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = list(tensors)
        first = tensors[labels[0]]
        size = self.size
        present = {m: self.index[m] >= 0 for m in labels}
        shape = (size, *first.shape[1:])
        total = torch.zeros(shape, dtype=first.dtype)
        count = torch.zeros(size, dtype=first.dtype)
        picked = {}
        for m in labels:
            rows = tensors[m][self.index[m].clamp(min=0)]
            picked[m] = rows
            mask = present[m].to(first.dtype)
            total += rows * mask.reshape(-1, *([1] * (rows.ndim - 1)))
            count += mask
        default = total / count.clamp(min=1).reshape(-1, *([1] * (first.ndim - 1)))
        del total
        if self.base in labels:
            b = present[self.base].reshape(-1, *([1] * (first.ndim - 1)))
            default = torch.where(b, picked[self.base], default)
        forced = torch.zeros(size, dtype=torch.bool)
        for tid, rule in self.rules.items():
            if rule.kind == "zero":
                default[tid] = 0
            elif rule.kind == "row":
                if rule.label not in tensors:
                    raise InputError(f"tokenizer.tokens: the row of token id {tid} comes from {rule.label}, which "
                                     f"is not an input of tensor {getattr(task, 'name', '?')}; name a model of that "
                                     "slice")
                default[tid] = tensors[rule.label][rule.row]
            if rule.force:
                forced[tid] = True
        out = {}
        for m in labels:
            keep = (present[m] & ~forced).reshape(-1, *([1] * (first.ndim - 1)))
            rows = torch.where(keep, picked[m], default)
            if self.rows > size:
                pad = rows.mean(dim=0, keepdim=True).expand(self.rows - size, *rows.shape[1:])
                rows = torch.cat([rows, pad], dim=0)
            out[m] = rows
        return out


def source_choice(cfg: MergeConfig) -> str | None:
    """``union``, ``base``, a model reference (``model:`` prefix dropped) or None (no tokenizer setting)."""
    choice = cfg.tokenizer_choice
    if choice is not None and choice.startswith("model:"):
        return choice[len("model:"):]
    return choice


def backbone_label(cfg: MergeConfig) -> str:
    """The model whose tokenizer the output starts from: the chosen model, else the base, else the first model."""
    choice = source_choice(cfg)
    if choice not in (None, "union", "base"):
        return choice
    return cfg.base_model or cfg.referenced_models()[0]


def tokenizer_dir(cfg: MergeConfig, sources: dict[str, TensorSource]) -> Path:
    """The directory whose tokenizer files the output gets (when they are copied unchanged)."""
    label = backbone_label(cfg)
    src = sources.get(label)
    found = files_dir(src) if src is not None else None
    return found if found is not None else Path(ModelRef.parse(label).path)


def _tokenizer_of(label: str, sources: dict[str, TensorSource]) -> SourceTokenizer:
    src = sources.get(label)
    path = (files_dir(src) if src is not None else None) or Path(ModelRef.parse(label).path)
    if src is None and not path.exists():
        raise ConfigError(f"tokenizer source {label!r} is not one of the merged models and not a directory; use "
                          "'base', 'union' or a model path")
    return load_tokenizer(label, path)


def prepare_vocab(cfg: MergeConfig, sources: dict[str, TensorSource]) -> VocabAlignment | None:
    """Build the alignment when a tokenizer setting is given and the vocabularies, the embedding sizes or the
    ``tokens`` overrides call for one (None: every input already matches the output tokenizer row for row)."""
    choice = source_choice(cfg)
    if choice is None:
        return None
    labels = cfg.referenced_models()
    toks = {label: _tokenizer_of(label, sources) for label in labels}
    main = backbone_label(cfg)
    backbone = toks[main] if main in toks else _tokenizer_of(main, sources)
    block = cfg.tokenizer
    token_specs = dict(block.tokens or {}) if block is not None else {}
    out = build_output(backbone, [toks[m] for m in labels if m != main], union=choice == "union",
                       extra_tokens=list(token_specs))
    out.check_writable()
    size = out.size
    multiple = block.pad_to_multiple_of if block is not None else None
    rows = -(-size // multiple) * multiple if multiple else size
    emb_rows = {label: _embedding_rows(sources[label]) for label in labels}
    index: dict[str, torch.Tensor] = {}
    perms = {}
    for label in labels:
        perm = out.permutation(toks[label])
        perms[label] = perm
        idx = torch.full((size,), -1, dtype=torch.long)
        if perm:
            tids, rows_of = torch.tensor(list(perm)), torch.tensor(list(perm.values()))
            keep = rows_of < emb_rows[label]
            idx[tids[keep]] = rows_of[keep]
        index[label] = idx
    rules = {out.vocab[tok]: _rule(tok, spec, toks, perms, out, emb_rows) for tok, spec in token_specs.items()}
    identity = torch.arange(size)
    if (not out.changed and not rules and all(r == rows for r in emb_rows.values())
            and all(torch.equal(idx, identity) for idx in index.values())):
        return None
    return VocabAlignment(rows, index, cfg.base_model, rules, out)


def _rule(token: str, spec: Any, toks: dict[str, SourceTokenizer], perms: dict[str, dict[int, int]],
          out: OutputTokenizer, emb_rows: dict[str, int]) -> TokenRule:
    where = f"tokenizer.tokens[{token!r}]"
    source = spec.source
    force = bool(spec.force)
    tid = out.vocab[token]
    if source is None:
        return TokenRule("auto", force=force)
    if isinstance(source, str):
        if source not in toks:
            raise ConfigError(f"{where}.source: {source!r} is not one of the merged models; name a model of the config")
        row = perms[source].get(tid)
        if row is None or row >= emb_rows[source]:
            raise ConfigError(f"{where}.source: token {token!r} is not in the vocabulary of {source}; use "
                              "{kind: model_token, model: ..., token: ...} or {kind: zero}")
        return TokenRule("row", source, row, force)
    if source.kind == "zero":
        return TokenRule("zero", force=force)
    model = source.model
    if model not in toks:
        raise ConfigError(f"{where}.source.model: {model!r} is not one of the merged models; name a model of the "
                          "config")
    row = source.token_id
    if row is None:
        row = toks[model].vocab.get(source.token)
        if row is None:
            raise ConfigError(f"{where}.source.token: {source.token!r} is not in the vocabulary of {model}; give a "
                              "token of that model or a token_id")
    if not 0 <= row < emb_rows[model]:
        raise ConfigError(f"{where}.source.token_id: {row} is outside the {emb_rows[model]} embedding rows of "
                          f"{model}; give a row in [0, {emb_rows[model]})")
    return TokenRule("row", model, row, force)


def _embedding_rows(src: TensorSource) -> int:
    from safemerge.merge.plan import HEAD_SUFFIXES, is_vocab_tensor

    for name, info in src.infos().items():
        if is_vocab_tensor(name) and not name.endswith(HEAD_SUFFIXES) and len(info.shape) == 2:
            return info.shape[0]
    raise InputError(f"{getattr(src, 'path', src.label)}: no input embedding tensor found; cannot align vocabularies")
