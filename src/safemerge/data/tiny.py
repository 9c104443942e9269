"""Tiny random Hugging Face checkpoints for tests, benchmarks and examples (no hub needed).

``make_tiny_checkpoint("llama", out_dir, seed=0)`` writes a loadable causal-LM directory (config, safetensors
weights, tokenizer with a chat template). Architectures: llama, qwen2, mistral, gemma2, cohere (Aya), plus
``llama_guard`` (a Llama model whose tokenizer has the words ``safe``/``unsafe`` as single tokens). The tokenizer
and chat template are the world's (:mod:`safemerge.data.tokenizer`), so this module sits in the data layer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from safemerge.data.tokenizer import CHAT_TEMPLATE, bpe_tokenizer
from safemerge.utils.atomic import atomic_dir, make_readable

__all__ = ["ARCHITECTURES", "CHAT_TEMPLATE", "build_tokenizer", "make_tiny_checkpoint", "tiny_config"]

ARCHITECTURES = ("llama", "qwen2", "mistral", "gemma2", "cohere")

_CORPUS = (
    "the quick brown fox jumps over the lazy dog . safe unsafe yes no user assistant system "
    "le renard brun saute . el zorro marrón salta . быстрая лиса прыгает . तेज़ लोमड़ी कूदती है . الثعلب يقفز . "
    "0 1 2 3 4 5 6 7 8 9 a b c d e f g h i j k l m n o p q r s t u v w x y z"
)


def build_tokenizer(vocab_size: int = 256, extra_words: tuple[str, ...] = ()) -> Any:
    """A small byte-level BPE fast tokenizer with the special tokens and the chat template of
    :mod:`safemerge.data.tokenizer`, trained on a few words of every world language (and ``extra_words``)."""
    return bpe_tokenizer([_CORPUS] * 4 + [" ".join(extra_words)] * 8, vocab_size, add_prefix_space=False)


def tiny_config(arch: str, vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                intermediate: int = 128, tie_word_embeddings: bool | None = None) -> Any:
    """A transformers config for a tiny model of ``arch``."""
    import transformers as tf

    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=7,
        pad_token_id=0,
    )
    arch = arch.lower()
    if arch in ("llama", "llama_guard"):
        cfg = tf.LlamaConfig(**common, tie_word_embeddings=bool(tie_word_embeddings))
    elif arch == "qwen2":
        cfg = tf.Qwen2Config(**common, tie_word_embeddings=True if tie_word_embeddings is None else tie_word_embeddings)
    elif arch == "mistral":
        cfg = tf.MistralConfig(**common, tie_word_embeddings=bool(tie_word_embeddings))
    elif arch == "gemma2":
        cfg = tf.Gemma2Config(**common, head_dim=hidden // heads,
                              tie_word_embeddings=True if tie_word_embeddings is None else tie_word_embeddings)
    elif arch == "cohere":
        cfg = tf.CohereConfig(**common, tie_word_embeddings=True if tie_word_embeddings is None else tie_word_embeddings)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {ARCHITECTURES + ('llama_guard',)}")
    return cfg


def make_tiny_checkpoint(
    arch: str,
    out_dir: str | os.PathLike,
    seed: int = 0,
    dtype: str = "float32",
    hidden: int = 64,
    layers: int = 2,
    intermediate: int = 128,
    max_shard_size: str | int | None = None,
    tokenizer: Any = None,
    tie_word_embeddings: bool | None = None,
    init_from: str | os.PathLike | None = None,
    noise: float = 0.02,
) -> Path:
    """Write a random tiny causal LM checkpoint to ``out_dir`` and return the path.

    With ``init_from``, start from that checkpoint's weights and add Gaussian noise of scale ``noise``
    (gives "fine-tuned experts" that share a base, as merging needs).
    """
    import torch
    from transformers import AutoModelForCausalLM

    if tokenizer is None:
        if arch == "llama_guard":  # 'safe'/'unsafe' must be single tokens for a Llama-Guard-style judge
            tokenizer = build_tokenizer(vocab_size=300, extra_words=("safe", "unsafe", "\nunsafe", "\nsafe"))
        else:
            tokenizer = build_tokenizer()
    torch_dtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(seed)
    if init_from is not None:
        model = AutoModelForCausalLM.from_pretrained(init_from, dtype=torch.float32)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * noise)
    else:
        cfg = tiny_config(arch, len(tokenizer), hidden=hidden, layers=layers, intermediate=intermediate,
                          tie_word_embeddings=tie_word_embeddings)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg)
        with torch.no_grad():  # non-trivial norms so merges of norm weights are exercised
            for name, p in model.named_parameters():
                if p.ndim == 1:
                    p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    model = model.to(torch_dtype)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        kwargs: dict[str, Any] = {"safe_serialization": True}
        if max_shard_size is not None:
            kwargs["max_shard_size"] = max_shard_size
        model.save_pretrained(tmp, **kwargs)
        tokenizer.save_pretrained(tmp)
        make_readable(tmp)
    return out_dir
