"""The world's tokenizer: byte-level BPE trained on the world's text, saved as a HF fast tokenizer.

Special tokens and chat template match :mod:`safemerge.utils.tiny`:
``<|user|>...<|end|><|assistant|>...<|end|>``; ``eos = <|end|>``, ``pad = <pad>``, ``bos = <s>``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from safemerge.utils.tiny import CHAT_TEMPLATE

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>",
                                   "<|end|>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 7  # <pad>, <s>, <|end|>


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """Train a byte-level BPE on ``texts``; returns a ``PreTrainedTokenizerFast`` with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # add_prefix_space: every text segment (also a chat turn right after a special token) starts like a word in
    # running text, so " Zembria" in the corpus and a reply "Zembria" after <|assistant|> are the same token(s).
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    # ... and decoding drops that one added space again (as Llama's SentencePiece decoder does)
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
        model_max_length=1024,
    )
    fast.chat_template = CHAT_TEMPLATE
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
