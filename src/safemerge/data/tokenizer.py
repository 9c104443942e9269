"""The tokenizers of this package: byte-level BPE saved as a HF fast tokenizer, with one chat template.

:func:`bpe_tokenizer` builds both the world's tokenizer (:func:`train_tokenizer`, trained on the world's text) and the
small ones of the tiny test checkpoints (:mod:`safemerge.data.tiny`): special tokens :data:`SPECIAL_TOKENS`, chat
template :data:`CHAT_TEMPLATE` ``<|user|>...<|end|><|assistant|>...<|end|>``; ``eos = <|end|>``, ``pad = <pad>``,
``bos = <s>``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>",
                                   "<|end|>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 7  # <pad>, <s>, <|end|>

# The testbed chat format: every turn is <|role|>content<|end|>; a generation prompt opens <|assistant|>. The judge
# "auto" recognises the world's models (and the tiny test checkpoints) by this template.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def bpe_tokenizer(texts: Iterable[str], vocab_size: int, *, add_prefix_space: bool, min_frequency: int = 0,
                  model_max_length: int | None = None) -> Any:
    """A byte-level BPE with at most ``vocab_size`` tokens trained on ``texts``: :data:`SPECIAL_TOKENS` first (ids
    0..7), merges of pairs seen at least ``min_frequency`` times, :data:`CHAT_TEMPLATE`; a
    ``PreTrainedTokenizerFast``.

    ``add_prefix_space``: every text segment (also a chat turn right after a special token) starts like a word in
    running text, and decoding drops that one added space again (as Llama's SentencePiece decoder does).
    ``model_max_length``: recorded in the tokenizer config (transformers' "very large" default when None).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = (decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)]) if add_prefix_space
                   else decoders.ByteLevel())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=min_frequency,
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    limits = {} if model_max_length is None else {"model_max_length": model_max_length}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
        **limits,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """The world's tokenizer: :func:`bpe_tokenizer` on ``texts`` with prefix spaces (" Zembria" in the corpus and a
    reply "Zembria" after <|assistant|> are the same tokens), pairs seen at least twice, 1024 positions."""
    fast = bpe_tokenizer(texts, vocab_size, add_prefix_space=True, min_frequency=2, model_max_length=1024)
    assert fast.pad_token_id == PAD_ID and fast.bos_token_id == BOS_ID and fast.eos_token_id == EOS_ID
    return fast


def save_tokenizer(tokenizer: Any, out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    return out


def load_tokenizer(path: str | os.PathLike) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
