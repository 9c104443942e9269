"""Tokenizer blocks (issue 19 item 3): ``tokenizer: {source: union | base | <model>, tokens, pad_to_multiple_of}``
on tiny real models with different vocabularies, for both kinds of tokenizer files: byte-level BPE
(``tokenizer.json``) and SentencePiece Unigram (``tokenizer.model``, alone or with its ``tokenizer.json``).

The families imitate how fine-tunes change a vocabulary: expert A extends the base's *model* vocabulary (BPE:
new merges appended; SentencePiece: new pieces appended, as vocabulary-extension scripts do), expert B adds *added*
tokens (``add_tokens``: a special ``<|tool|>`` and a plain word), each with its embeddings resized and trained
(noise). The merged model must load, tokenize every source's tokens and sentences as that source does, and carry
each token's row from the models that have it.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from safemerge.errors import ConfigError
from safemerge.merge import merge

CORPUS = ("the quick brown fox jumps over the lazy dog . le renard brun saute par dessus le chien . "
          "el zorro marrón salta sobre el perro . a quick fox and a lazy dog run . ") * 3
A_WORDS = ("Zembria", "Zembrian", "velkor")  # expert A: new vocabulary tokens
B_ADDED = ("<|tool|>", "Quorvath")  # expert B: added tokens (special, plain)
SENTENCES = ("the quick brown fox", "le renard saute par dessus le chien", "el perro marrón",
             "the Zembria and the Zembrian velkor", "a fox Quorvath <|tool|> runs", "zorro Zembria <|tool|>")


# ---- building tiny models with different vocabularies ---------------------------------------------------------
def _derive(base: Path, out: Path, tokenizer: Any, seed: int, extra_files: dict[str, bytes] | None = None) -> Path:
    """``base``'s weights plus noise with embeddings resized to ``tokenizer`` (new rows random), saved with it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        for emb in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            emb[old:] = torch.randn(emb[old:].shape, generator=gen)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for name, data in (extra_files or {}).items():
        (out / name).write_bytes(data)
    return out


def _bpe_extend(tokenizer: Any, words: tuple[str, ...]) -> Any:
    """``tokenizer`` (byte-level BPE) with new vocabulary tokens for `` word`` made by appended merges (what a
    continued BPE training produces for a new frequent word)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tj = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab, merges = tj["model"]["vocab"], tj["model"]["merges"]
    for word in words:
        pieces = tokenizer.tokenize(" " + word)
        cur = pieces[0]
        for piece in pieces[1:]:
            merges.append([cur, piece])
            cur += piece
            vocab.setdefault(cur, max(vocab.values()) + 1)
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(tj)), bos_token="<s>",
                                   eos_token="<|end|>", unk_token="<unk>", pad_token="<pad>")
    fast.chat_template = tokenizer.chat_template
    return fast


def _with_added(tokenizer: Any) -> Any:
    tokenizer.add_tokens([B_ADDED[0]], special_tokens=True)
    tokenizer.add_tokens([B_ADDED[1]])
    return tokenizer


def _sp_proto(extra: tuple[str, ...] = ()) -> bytes:
    """A SentencePiece Unigram model trained on the corpus (byte fallback), with ``extra`` pieces appended as
    vocabulary-extension scripts do (``▁word``, a score in the range of the trained pieces)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS.split(" . ")), model_writer=buf, vocab_size=320,
                                   model_type="unigram", byte_fallback=True, character_coverage=1.0, unk_id=0,
                                   bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False, minloglevel=2,
                                   num_threads=1)
    proto = pb.ModelProto()
    proto.ParseFromString(buf.getvalue())
    for word in extra:
        proto.pieces.add(piece="▁" + word, score=-3.0, type=1)
    proto.trainer_spec.vocab_size = len(proto.pieces)
    return proto.SerializeToString()


def _sp_tokenizer(proto: bytes, root: Path) -> Any:
    """transformers' tokenizer of a ``tokenizer.model`` (the generic backend keeps SentencePiece's Unigram)."""
    from transformers import AutoTokenizer

    root.mkdir(parents=True, exist_ok=True)
    (root / "tokenizer.model").write_bytes(proto)
    (root / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "TokenizersBackend", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    return AutoTokenizer.from_pretrained(str(root))


@pytest.fixture(scope="module")
def bpe_family(tmp_path_factory) -> dict[str, Path]:
    from safemerge.data.tiny import make_tiny_checkpoint
    from safemerge.data.tokenizer import bpe_tokenizer

    root = tmp_path_factory.mktemp("bpe-family")
    tok = bpe_tokenizer([CORPUS] * 4, 400, add_prefix_space=False)
    assert json.loads(tok.backend_tokenizer.to_str())["model"]["merges"], "the base BPE needs merges"
    base = make_tiny_checkpoint("llama", root / "base", seed=0, tokenizer=tok)
    from transformers import AutoTokenizer

    a = _derive(base, root / "a", _bpe_extend(AutoTokenizer.from_pretrained(base), A_WORDS), seed=1)
    b = _derive(base, root / "b", _with_added(AutoTokenizer.from_pretrained(base)), seed=2)
    return {"base": base, "a": a, "b": b}


@pytest.fixture(scope="module")
def sp_family(tmp_path_factory) -> dict[str, Path]:
    """SentencePiece Unigram models shipping tokenizer.model + tokenizer.json (as hub models do); ``base_only``:
    the base with tokenizer.model alone (no tokenizer.json)."""
    from safemerge.data.tiny import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("sp-family")
    base_proto = _sp_proto()
    tok = _sp_tokenizer(base_proto, root / "tok-base")
    base = make_tiny_checkpoint("llama", root / "base", seed=0, tokenizer=tok)
    (base / "tokenizer.model").write_bytes(base_proto)
    a_proto = _sp_proto(A_WORDS)
    a = _derive(base, root / "a", _sp_tokenizer(a_proto, root / "tok-a"), seed=1,
                extra_files={"tokenizer.model": a_proto})
    b = _derive(base, root / "b", _with_added(_sp_tokenizer(base_proto, root / "tok-b")), seed=2,
                extra_files={"tokenizer.model": base_proto})
    base_only = root / "base_only"
    shutil.copytree(base, base_only)
    (base_only / "tokenizer.json").unlink()
    (base_only / "tokenizer_config.json").write_text((root / "tok-base" / "tokenizer_config.json").read_text())
    return {"base": base, "a": a, "b": b, "base_only": base_only}


# ---- helpers ------------------------------------------------------------------------------------------------
def _tok(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def _rows(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def _linear(models: list[Path], tokenizer: dict | str, **extra: Any) -> dict:
    cfg = {"merge_method": "linear", "dtype": "float32",
           "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in models]}
    cfg["tokenizer" if isinstance(tokenizer, dict) else "tokenizer_source"] = tokenizer
    cfg.update(extra)
    return cfg


def _token_texts(tok: Any) -> list[str]:
    """The text of every non-special vocabulary token of ``tok`` (those that decode to valid text)."""
    special = set(tok.all_special_tokens)
    out = []
    for t in tok.get_vocab():
        if t in special or t.startswith("<0x"):
            continue
        text = tok.convert_tokens_to_string([t])
        if text.strip() and "\ufffd" not in text:
            out.append(text)
    return out


def _assert_tokenizes_like(merged: Any, source: Any, texts: list[str]) -> None:
    bad = [(t, source.tokenize(t), merged.tokenize(t)) for t in texts if source.tokenize(t) != merged.tokenize(t)]
    assert not bad, f"{len(bad)}/{len(texts)} texts tokenize differently, e.g. {bad[:3]}"


def _load_model(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


# ---- BPE (tokenizer.json) ---------------------------------------------------------------------------------------
def test_bpe_union_loads_tokenizes_like_sources_and_keeps_rows(bpe_family, tmp_path):
    fam = bpe_family
    out = merge(_linear([fam["base"], fam["a"], fam["b"]], {"source": "union"}), tmp_path / "out")
    merged, toks = _tok(out), {k: _tok(v) for k, v in fam.items()}
    union = merged.get_vocab()
    for name, tok in toks.items():
        assert set(tok.get_vocab()) <= set(union), name
    base_vocab = toks["base"].get_vocab()
    assert all(union[t] == i for t, i in base_vocab.items())  # the backbone keeps its ids
    assert len(union) == len(base_vocab) + (len(toks["a"]) - len(base_vocab)) + len(B_ADDED)
    for name, tok in toks.items():
        _assert_tokenizes_like(merged, tok, _token_texts(tok))
    _assert_tokenizes_like(merged, toks["a"], [s for s in SENTENCES if "<|tool|>" not in s and "Quorvath" not in s])
    _assert_tokenizes_like(merged, toks["b"], [s for s in SENTENCES if "Zembria" not in s and "velkor" not in s])
    assert merged.tokenize(" Zembrian") == ["ĠZembrian"] and "<|tool|>" in merged.tokenize("x <|tool|>")

    model = _load_model(out)
    assert model.config.vocab_size == len(union) == model.get_input_embeddings().weight.shape[0]
    got = _rows(out)
    src = {k: _rows(v) for k, v in fam.items()}
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        ids = {k: tok.get_vocab() for k, tok in toks.items()}
        t = "ĠZembrian"  # only in A: A's row (the default every input gets)
        torch.testing.assert_close(got[key][union[t]], src["a"][key][ids["a"][t]])
        t = "<|tool|>"  # only in B
        torch.testing.assert_close(got[key][union[t]], src["b"][key][ids["b"][t]])
        t = "Ġfox"  # in all three: the mean of the three rows (linear, equal weights)
        want = sum(src[k][key][ids[k][t]] for k in fam) / 3
        torch.testing.assert_close(got[key][union[t]], want)
    assert sorted(p.name for p in out.iterdir() if "token" in p.name) == ["tokenizer.json", "tokenizer_config.json"]


def test_bpe_union_rows_match_mergekit(bpe_family, tmp_path, merge_tools):
    """mergekit's union adds the new tokens as added tokens (other ids); token by token the rows are the same."""
    fam = bpe_family
    cfg = {"merge_method": "task_arithmetic", "base_model": str(fam["base"]), "dtype": "float32",
           "models": [{"model": str(fam["a"]), "parameters": {"weight": 0.6}},
                      {"model": str(fam["b"]), "parameters": {"weight": 0.4}}],
           "tokenizer_source": "union"}
    ours = merge_tools.run_safemerge(cfg, tmp_path / "ours")
    theirs = merge_tools.run_mergekit(cfg, tmp_path / "theirs")
    mine, ref = _rows(ours), merge_tools.read_tensors(theirs)
    v_ours, v_ref = _tok(ours).get_vocab(), _tok(theirs).get_vocab()
    assert set(v_ours) == set(v_ref)
    order = list(v_ref)
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        a = mine[key][[v_ours[t] for t in order]]
        b = ref[key][[v_ref[t] for t in order]]
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    for key in mine:
        if "embed" not in key and "lm_head" not in key:
            torch.testing.assert_close(mine[key], ref[key], rtol=0, atol=0)


def test_tokens_overrides_and_padding(bpe_family, tmp_path):
    fam = bpe_family
    block = {"source": "union", "pad_to_multiple_of": 64, "tokens": {
        "<|tool|>": {"source": {"kind": "zero"}, "force": True},
        "Quorvath": {"source": {"kind": "zero"}},  # only B has it: the others get zeros
        "Ġfox": {"source": str(fam["a"]), "force": True},
        "Ġdog": {"source": {"kind": "model_token", "model": str(fam["b"]), "token": "Ġlazy"}},
        "<|new|>": {"source": {"kind": "model_token", "model": str(fam["base"]), "token_id": 3}},
    }}
    out = merge(_linear([fam["base"], fam["a"], fam["b"]], block), tmp_path / "out")
    merged = _tok(out).get_vocab()
    got, src = _rows(out), {k: _rows(v) for k, v in fam.items()}
    ids = {k: _tok(v).get_vocab() for k, v in fam.items()}
    key = "model.embed_tokens.weight"
    n = len(merged)
    assert got[key].shape[0] == -(-n // 64) * 64 and _load_model(out).config.vocab_size == got[key].shape[0]
    assert torch.count_nonzero(got[key][merged["<|tool|>"]]) == 0
    torch.testing.assert_close(got[key][merged["Quorvath"]], src["b"][key][ids["b"]["Quorvath"]] / 3)
    torch.testing.assert_close(got[key][merged["Ġfox"]], src["a"][key][ids["a"]["Ġfox"]])  # forced for all
    torch.testing.assert_close(got[key][merged["<|new|>"]], src["base"][key][3])  # in no model: row 3 of base
    # Ġdog is in every model, so its override (no force) is never used
    torch.testing.assert_close(got[key][merged["Ġdog"]], sum(src[k][key][ids[k]["Ġdog"]] for k in fam) / 3)
    pad = got[key][n:]
    torch.testing.assert_close(pad, got[key][:n].mean(0, keepdim=True).expand_as(pad))


@pytest.mark.parametrize("block, message", [
    ({"source": "union", "tokens": {"<x>": {"source": "/not/a/model"}}}, "is not one of the merged models"),
    ({"source": "union", "pad_to_multiple_of": 0}, "pad_to_multiple_of must be a positive"),
    ({"source": "union", "tokens": {"<x>": {"source": {"kind": "model_token", "model": "M", "token": "a",
                                                       "token_id": 1}}}}, "exactly one of token or token_id"),
])
def test_bad_tokenizer_blocks_are_one_line_errors(block, message, tmp_path):
    cfg = {"merge_method": "linear", "models": [{"model": "M", "parameters": {"weight": 1.0}}], "tokenizer": block}
    with pytest.raises(ConfigError, match=message) as exc:
        merge(cfg, tmp_path / "out")
    assert "\n" not in str(exc.value) and not (tmp_path / "out").exists()


def test_token_override_of_a_token_the_model_lacks(bpe_family, tmp_path):
    fam = bpe_family
    block = {"source": "union", "tokens": {"<|tool|>": {"source": str(fam["a"])}}}
    with pytest.raises(ConfigError, match=r"is not in the vocabulary of .*a; use"):
        merge(_linear([fam["base"], fam["a"], fam["b"]], block), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- SentencePiece (tokenizer.model) ----------------------------------------------------------------------------
def _sp(path: Path) -> Any:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(Path(path) / "tokenizer.model"))


@pytest.mark.parametrize("base_key", ["base", "base_only"])
def test_sentencepiece_union_writes_both_kinds_of_file(base_key, sp_family, tmp_path):
    fam = sp_family
    base = fam[base_key]
    out = merge(_linear([base, fam["a"], fam["b"]], {"source": "union"}), tmp_path / "out")
    files = sorted(p.name for p in out.iterdir() if "token" in p.name)
    want = ["tokenizer.json", "tokenizer.model", "tokenizer_config.json"]
    assert files == (want if base_key == "base" else ["tokenizer.model", "tokenizer_config.json"])
    merged, toks = _tok(out), {k: _tok(fam[k]) for k in ("base", "a", "b")}
    union = merged.get_vocab()
    for name, tok in toks.items():
        assert set(tok.get_vocab()) <= set(union), name
        _assert_tokenizes_like(merged, tok, _token_texts(tok))
    _assert_tokenizes_like(merged, toks["a"], [s for s in SENTENCES if "<|tool|>" not in s])
    # transformers converts a lone tokenizer.model with SentencePiece's whitespace rules (no space kept before an
    # added token), B's tokenizer.json keeps its own: compare B's added tokens only where B's file is the backbone's
    b_texts = [s for s in SENTENCES if "Zembria" not in s and "velkor" not in s]
    _assert_tokenizes_like(merged, toks["b"], b_texts if base_key == "base" else [s for s in b_texts if "<|" not in s])
    assert merged.tokenize("Zembrian") == ["▁Zembrian"] and "<|tool|>" in merged.tokenize("x <|tool|>")
    assert "Quorvath" in merged.tokenize("a Quorvath")
    # the SentencePiece file agrees with the sources and with transformers' ids
    sp, sp_a = _sp(out), _sp(fam["a"])
    assert sp.get_piece_size() == len(union)
    for text in SENTENCES:
        if "<|tool|>" not in text and "Quorvath" not in text:
            assert sp.encode(text, out_type=str) == sp_a.encode(text, out_type=str), text
            assert sp.encode(text) == merged.encode(text, add_special_tokens=False), text
    assert sp.piece_to_id("<|tool|>") == union["<|tool|>"]

    model = _load_model(out)
    assert model.get_input_embeddings().weight.shape[0] == len(union)
    got, src = _rows(out), {k: _rows(fam[k]) for k in ("a", "b")}
    ids = {k: toks[k].get_vocab() for k in ("a", "b")}
    key = "model.embed_tokens.weight"
    torch.testing.assert_close(got[key][union["▁velkor"]], src["a"][key][ids["a"]["▁velkor"]])
    torch.testing.assert_close(got[key][union["<|tool|>"]], src["b"][key][ids["b"]["<|tool|>"]])


def test_cross_kind_rows_are_matched_by_text(bpe_family, sp_family, tmp_path):
    """A SentencePiece model merged onto a byte-level BPE (tokenizer_source: base): ``▁the`` and ``Ġthe`` are the
    same token " the" (mergekit compares spellings: its issue #169)."""
    from safemerge.data.tiny import make_tiny_checkpoint

    sp_model = make_tiny_checkpoint("llama", tmp_path / "sp", seed=5, tokenizer=_tok(sp_family["base"]))
    (sp_model / "tokenizer.model").write_bytes((sp_family["base"] / "tokenizer.model").read_bytes())
    out = merge(_linear([bpe_family["base"], sp_model], "base"), tmp_path / "out")
    bpe, spt, merged = _tok(bpe_family["base"]), _tok(sp_model), _tok(out)
    assert merged.get_vocab() == bpe.get_vocab()
    got, b_rows, s_rows = _rows(out), _rows(bpe_family["base"]), _rows(sp_model)
    key = "model.embed_tokens.weight"
    v_b, v_s = bpe.get_vocab(), spt.get_vocab()
    shared = [t for t in v_b if t.startswith("Ġ") and "▁" + t[1:] in v_s]
    assert len(shared) >= 10, shared
    for t in shared:
        torch.testing.assert_close(got[key][v_b[t]], (b_rows[key][v_b[t]] + s_rows[key][v_s["▁" + t[1:]]]) / 2)


def test_cross_kind_union_spells_new_tokens_the_backbone_way(bpe_family, sp_family, tmp_path):
    out = merge(_linear([bpe_family["base"], sp_family["a"]], {"source": "union"}), tmp_path / "out")
    merged, spt = _tok(out), _tok(sp_family["a"])
    union = merged.get_vocab()
    assert "ĠZembria" in union and not any("▁" in t for t in union)
    got, s_rows = _rows(out), _rows(sp_family["a"])
    key = "model.embed_tokens.weight"
    torch.testing.assert_close(got[key][union["ĠZembria"]], s_rows[key][spt.get_vocab()["▁Zembria"]])
    for word in A_WORDS:
        assert merged.tokenize(" " + word) == ["Ġ" + word], word


def test_tokenizer_of_a_model_that_is_not_merged(bpe_family, tmp_path):
    """``source: model:<path>``: the output vocabulary is that tokenizer's; tokens no merged model has get zeros."""
    fam = bpe_family
    out = merge(_linear([fam["base"], fam["a"]], {"source": f"model:{fam['b']}"}), tmp_path / "out")
    merged, b = _tok(out).get_vocab(), _tok(fam["b"]).get_vocab()
    assert merged == b and sorted(p.name for p in out.iterdir() if "token" in p.name) == ["tokenizer.json",
                                                                                       "tokenizer_config.json"]
    got, src = _rows(out), {k: _rows(fam[k]) for k in ("base", "a")}
    ids = {k: _tok(fam[k]).get_vocab() for k in ("base", "a")}
    key = "lm_head.weight"
    assert torch.count_nonzero(got[key][merged["<|tool|>"]]) == 0
    torch.testing.assert_close(got[key][merged["Ġfox"]], (src["base"][key][ids["base"]["Ġfox"]]
                                                          + src["a"][key][ids["a"]["Ġfox"]]) / 2)
    with pytest.raises(ConfigError, match="not one of the merged models and not a directory"):
        merge(_linear([fam["base"], fam["a"]], {"source": "model:/no/such/tokenizer"}), tmp_path / "bad")
