"""Tokenizers of a merge: read each input's tokenizer, build the output vocabulary and write its files.

Kinds: every model a ``tokenizers`` JSON file (``tokenizer.json``) can hold (BPE, Unigram, WordPiece, WordLevel) and
SentencePiece models (``tokenizer.model``, BPE or Unigram), alone or together (hub SentencePiece models ship both).
A tokenizer is loaded with transformers (so every layout it loads works) and its backend JSON gives the model type,
BPE merges and Unigram scores; a ``tokenizer.model`` file is read as the SentencePiece protobuf.

Tokens are compared by their text, not their spelling: a byte-level BPE spells " the" ``Ġthe``, SentencePiece
``▁the`` (and a lone byte ``<0xE2>``). Between tokenizers of one spelling the text is the string itself (mergekit's
rule); across spellings a token is converted through its bytes (mergekit compares the strings, so a SentencePiece
model merged onto a byte-level BPE gets almost no row right: its issue #169).

The union (``tokenizer.source: union``) keeps the backbone (the base model's tokenizer, else the first model's):
every backbone token keeps its id; then come, model by model in config order and in each model's id order, the
vocabulary tokens the backbone lacks (as real vocabulary entries, spelled the backbone's way: a BPE gets the source's
merges, and for a token no merge makes, a merge of every split of it into two known tokens; a Unigram model the
source's score, else the lowest score of the backbone; a SentencePiece BPE scores below every existing piece), then
the added tokens the backbone lacks (with their flags), then the ``tokenizer.tokens`` keys that are still missing
(added tokens, as mergekit's ``add_tokens``), then (BPE only) the intermediate tokens of the merge chains that make
new tokens whose text no split builds (:func:`_chain_unreachable`). mergekit instead adds every new token as an
added token, which breaks byte-level spellings (an added ``Ġfoo`` matches the literal text "Ġfoo") and writes only
``tokenizer.json`` (its issue #185): here every file the backbone had is written, updated: ``tokenizer.json``, ``tokenizer.model``
(new pieces appended, ids aligned with the JSON), ``vocab.json`` + ``merges.txt``, ``added_tokens.json``,
``tokenizer_config.json`` (its ``added_tokens_decoder``).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safemerge.errors import InputError

TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
                   "added_tokens.json", "merges.txt", "vocab.json", "chat_template.jinja", "chat_template.json")
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_SP_NORMAL, _SP_CONTROL, _SP_USER_DEFINED, _SP_UNUSED = 1, 3, 4, 5  # SentencePiece piece types
_SP_BPE = 2  # TrainerSpec.model_type


@functools.cache
def _byte_encoder() -> dict[int, str]:
    """GPT-2's printable spelling of each byte (the byte-level BPE alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@functools.cache
def _byte_decoder() -> dict[str, int]:
    return {c: b for b, c in _byte_encoder().items()}


def token_bytes(token: str, style: str) -> bytes | None:
    """The text of a vocabulary token as bytes, from its spelling in a ``style`` tokenizer (None: not a text)."""
    if style == "bytelevel":
        dec = _byte_decoder()
        if not all(c in dec for c in token):
            return None
        return bytes(dec[c] for c in token)
    if style == "metaspace":
        m = _BYTE_PIECE.fullmatch(token)
        if m:
            return bytes([int(m.group(1), 16)])
        return token.replace("▁", " ").encode("utf-8")
    return token.encode("utf-8")


def spell(data: bytes, style: str) -> str | None:
    """The spelling of ``data`` in a ``style`` tokenizer (None: that style cannot spell it as one token)."""
    if style == "bytelevel":
        enc = _byte_encoder()
        return "".join(enc[b] for b in data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"<0x{data[0]:02X}>" if style == "metaspace" and len(data) == 1 else None
    return text.replace(" ", "▁") if style == "metaspace" else text


def convert(token: str, from_style: str, to_style: str) -> str | None:
    """``token`` (a vocabulary token of a ``from_style`` tokenizer) spelled the ``to_style`` way."""
    if from_style == to_style:
        return token
    data = token_bytes(token, from_style)
    return None if data is None else spell(data, to_style)


@dataclass(frozen=True)
class AddedTok:
    """An added token and its matching flags (tokenizers' ``AddedToken``)."""

    content: str
    special: bool = False
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    normalized: bool = False

    def flags(self) -> dict[str, Any]:
        return {"content": self.content, "single_word": self.single_word, "lstrip": self.lstrip,
                "rstrip": self.rstrip, "normalized": self.normalized, "special": self.special}


def _style(tj: dict[str, Any] | None, sp: Any) -> str:
    if tj is None:
        return "metaspace" if sp is not None else "plain"
    text = json.dumps([tj.get("pre_tokenizer"), tj.get("decoder"), tj.get("normalizer")], ensure_ascii=False)
    if '"ByteLevel"' in text:
        return "bytelevel"
    if '"Metaspace"' in text or "▁" in text:
        return "metaspace"
    return "plain"


def _merge_pair(m: Any) -> tuple[str, str]:
    if isinstance(m, str):
        left, _, right = m.partition(" ")
        return left, right
    return str(m[0]), str(m[1])


@dataclass
class SourceTokenizer:
    """One model's tokenizer: vocabulary, added tokens, model type, spelling style, merges / scores."""

    label: str
    dir: Path
    vocab: dict[str, int]
    added: dict[int, AddedTok]
    model_type: str  # BPE | Unigram | WordPiece | WordLevel | SentencePiece (no backend JSON)
    style: str  # bytelevel | metaspace | plain
    merges: list[tuple[str, str]] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    sp: Any = None  # the tokenizer.model protobuf, when the directory has one

    @property
    def size(self) -> int:
        return max(self.vocab.values(), default=-1) + 1

    def model_tokens(self) -> list[tuple[str, int]]:
        """The vocabulary tokens that are not added tokens, in id order."""
        return sorted(((t, i) for t, i in self.vocab.items() if i not in self.added), key=lambda x: x[1])

    def text_index(self, style: str) -> dict[str, int]:
        """Token spelled the ``style`` way -> this tokenizer's id (added tokens by content, first id wins; a byte
        piece ``<0x20>`` only where no other token has its text, e.g. ``▁``)."""
        out: dict[str, int] = {}
        order = sorted(self.vocab.items(), key=lambda x: (_BYTE_PIECE.fullmatch(x[0]) is not None, x[1]))
        for tok, i in order:
            key = tok if i in self.added else convert(tok, self.style, style)
            if key is not None:
                out.setdefault(key, i)
        return out


def sentencepiece_pb() -> Any:
    """sentencepiece's protobuf module (None when sentencepiece / protobuf are not installed)."""
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
    except ImportError:
        return None
    return pb


def load_sentencepiece(path: Path) -> Any:
    """The ``tokenizer.model`` protobuf; None when sentencepiece is not installed (then it is only copied)."""
    pb = sentencepiece_pb()
    if pb is None:
        return None
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - a protobuf DecodeError or OS error: the file is unusable
        raise InputError(f"{path}: not a SentencePiece model ({str(exc).splitlines()[0][:80]}); "
                         "replace or remove tokenizer.model") from None
    return proto


def load_tokenizer(label: str, path: str | Path) -> SourceTokenizer:
    """Read the tokenizer in ``path`` (a model or tokenizer directory); one-line :class:`InputError` if unusable."""
    from transformers import AutoTokenizer

    path = Path(path)
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - any loading failure means the tokenizer files are unusable
        raise InputError(f"{path}: cannot load the tokenizer ({str(exc).splitlines()[0][:100]}); "
                         "add tokenizer files or drop tokenizer_source") from None
    vocab = dict(tok.get_vocab())
    added = {int(i): AddedTok(str(a.content), bool(a.special), bool(a.lstrip), bool(a.rstrip), bool(a.single_word),
                              bool(a.normalized))
             for i, a in tok.added_tokens_decoder.items()}
    sp = load_sentencepiece(path / "tokenizer.model") if (path / "tokenizer.model").is_file() else None
    backend = getattr(tok, "backend_tokenizer", None)
    tj = json.loads(backend.to_str()) if backend is not None else None
    src = SourceTokenizer(label, path, vocab, added, "SentencePiece", _style(tj, sp), sp=sp)
    if tj is not None:
        model = tj.get("model", {})
        src.model_type = str(model.get("type", "BPE"))
        if src.model_type == "BPE":
            src.merges = [_merge_pair(m) for m in model.get("merges", [])]
        elif src.model_type == "Unigram":
            src.scores = {str(p): float(s) for p, s in model.get("vocab", [])}
    if sp is not None and not src.scores:
        src.scores = {p.piece: float(p.score) for p in sp.pieces}
    return src


@dataclass
class OutputTokenizer:
    """The output vocabulary: the backbone's tokens plus what the union or ``tokens:`` added, and how to write it."""

    backbone: SourceTokenizer
    vocab: dict[str, int]
    new_model: list[tuple[str, int, float | None]] = field(default_factory=list)  # (token, id, score)
    new_added: list[tuple[int, AddedTok]] = field(default_factory=list)
    new_merges: list[tuple[str, str]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return max(self.vocab.values(), default=-1) + 1

    @property
    def changed(self) -> bool:
        return bool(self.new_model or self.new_added)

    @property
    def style(self) -> str:
        return self.backbone.style

    def permutation(self, src: SourceTokenizer) -> dict[int, int]:
        """Output id -> ``src``'s id, for every output token ``src`` has (compared by text, see the module doc)."""
        index = src.text_index(self.style)
        added = {a.content for a in self.backbone.added.values()} | {a.content for _, a in self.new_added}
        out = {}
        for tok, i in self.vocab.items():
            j = src.vocab.get(tok) if tok in added else index.get(tok)
            if j is not None:
                out[i] = j
        return out

    # ---- writing ------------------------------------------------------------------------------------------
    def write(self, out_dir: str | Path) -> list[str]:
        """Write the backbone's tokenizer files into ``out_dir``, updated with the new tokens; the names written."""
        src, out = self.backbone.dir, Path(out_dir)
        written = []
        for name in TOKENIZER_FILES:
            p = src / name
            if not p.is_file():
                continue
            if not self.changed or name in ("special_tokens_map.json", "chat_template.jinja", "chat_template.json"):
                shutil.copyfile(p, out / name)
            elif name == "tokenizer.json":
                (out / name).write_text(json.dumps(self._tokenizer_json(json.loads(p.read_text(encoding="utf-8"))),
                                                   ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            elif name == "tokenizer.model":
                (out / name).write_bytes(self._sentencepiece().SerializeToString())
            elif name == "vocab.json":
                vocab = json.loads(p.read_text(encoding="utf-8"))
                vocab.update({t: i for t, i, _ in self.new_model})
                (out / name).write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
            elif name == "merges.txt":
                lines = p.read_text(encoding="utf-8").rstrip("\n").split("\n")
                lines += [f"{a} {b}" for a, b in self.new_merges]
                (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
            elif name == "added_tokens.json":
                data = json.loads(p.read_text(encoding="utf-8"))
                data.update({a.content: i for i, a in self.new_added})
                (out / name).write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            elif name == "tokenizer_config.json":
                (out / name).write_text(json.dumps(self._tokenizer_config(json.loads(p.read_text(encoding="utf-8"))),
                                                   ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            else:
                shutil.copyfile(p, out / name)
            written.append(name)
        return written

    def _placeholders(self) -> dict[int, AddedTok]:
        """Every added token by id (the backbone's and the new ones)."""
        return {**self.backbone.added, **dict(self.new_added)}

    def _tokenizer_json(self, tj: dict[str, Any]) -> dict[str, Any]:
        model = tj["model"]
        kind = model.get("type")
        added = self._placeholders()
        unigram_floor = min((s for s in self.backbone.scores.values()), default=0.0)
        if kind == "Unigram":
            pieces = [list(p) for p in model.get("vocab", [])]
            have = {p[0] for p in pieces}
            entries = sorted([(i, t, s) for t, i, s in self.new_model]
                             + [(i, a.content, 0.0) for i, a in added.items() if a.content not in have])
            for i, tok, score in entries:
                while len(pieces) < i:  # a gap in the ids: an unused piece keeps the positions aligned
                    pieces.append([f"<safemerge_unused_{len(pieces)}>", unigram_floor - 100.0])
                if len(pieces) == i:
                    pieces.append([tok, unigram_floor if score is None else score])
            model["vocab"] = pieces
        elif isinstance(model.get("vocab"), dict):  # BPE, WordPiece, WordLevel
            vocab = model["vocab"]
            for tok, i, _ in self.new_model:
                vocab[tok] = i
            for i, a in added.items():
                vocab.setdefault(a.content, i)
            if kind == "BPE":
                merges = model.setdefault("merges", [])
                as_str = bool(merges) and isinstance(merges[0], str)
                merges.extend(f"{a} {b}" if as_str else [a, b] for a, b in self.new_merges)
        else:
            raise InputError(f"{self.backbone.dir / 'tokenizer.json'}: tokenizer model {kind!r} cannot take new "
                             "tokens; use tokenizer source 'base' or another model's tokenizer")
        listed = {int(t["id"]) for t in tj.get("added_tokens", [])}
        tj.setdefault("added_tokens", []).extend(
            {"id": i, **a.flags()} for i, a in sorted(added.items()) if i not in listed)
        return tj

    def check_writable(self) -> None:
        """A changed vocabulary needs sentencepiece to rewrite a ``tokenizer.model`` (checked before the merge)."""
        if self.changed and self.backbone.sp is None and (self.backbone.dir / "tokenizer.model").is_file():
            raise InputError(f"{self.backbone.dir / 'tokenizer.model'}: the merged vocabulary changes this "
                             "SentencePiece model, which needs the sentencepiece and protobuf packages; "
                             "pip install sentencepiece protobuf")

    def _sentencepiece(self) -> Any:
        pb = sentencepiece_pb()
        proto = pb.ModelProto()
        proto.CopyFrom(self.backbone.sp)
        is_bpe = proto.trainer_spec.model_type == _SP_BPE
        normal = [p.score for p in proto.pieces if p.type == _SP_NORMAL]
        floor = min(normal, default=0.0)
        entries = sorted([(i, t, s, None) for t, i, s in self.new_model]
                         + [(i, a.content, 0.0, a) for i, a in self._placeholders().items()
                            if i >= len(proto.pieces)])
        rank = 0
        for i, tok, score, added in entries:
            while len(proto.pieces) < i:
                proto.pieces.add(piece=f"<safemerge_unused_{len(proto.pieces)}>", score=0.0, type=_SP_UNUSED)
            if len(proto.pieces) != i:
                continue
            if added is not None:
                proto.pieces.add(piece=tok, score=0.0, type=_SP_CONTROL if added.special else _SP_USER_DEFINED)
                continue
            text = tok if self.style == "metaspace" else None
            if text is None:  # a backbone of another spelling with a SentencePiece file: spell it as SentencePiece
                data = token_bytes(tok, self.style)
                text = spell(data, "metaspace") if data is not None else None
            rank += 1
            value = floor - rank if is_bpe else (floor if score is None else score)
            proto.pieces.add(piece=text or f"<safemerge_unused_{i}>", score=value,
                             type=_SP_NORMAL if text else _SP_UNUSED)
        proto.trainer_spec.vocab_size = len(proto.pieces)
        return proto

    def _tokenizer_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
        decoder = cfg.get("added_tokens_decoder")
        if isinstance(decoder, dict) or not (self.backbone.dir / "tokenizer.json").is_file():
            decoder = dict(decoder or {})
            for i, a in self.new_added:
                flags = a.flags()
                decoder[str(i)] = flags
            cfg["added_tokens_decoder"] = decoder
        return cfg


def build_output(backbone: SourceTokenizer, others: list[SourceTokenizer], union: bool,
                 extra_tokens: list[str] | tuple[str, ...] = ()) -> OutputTokenizer:
    """The output vocabulary: ``backbone`` (plus, with ``union``, every token of ``others``) plus ``extra_tokens``
    (see the module doc for the order and the spelling)."""
    out = OutputTokenizer(backbone, dict(backbone.vocab))
    vocab = out.vocab
    next_id = backbone.size
    style = backbone.style
    floor = min(backbone.scores.values(), default=0.0)
    if union:
        for src in others:
            for tok, _ in src.model_tokens():
                t = convert(tok, src.style, style)
                if t is None or t in vocab:
                    continue
                score = src.scores.get(tok) if src.model_type in ("Unigram", "SentencePiece") else None
                vocab[t] = next_id
                out.new_model.append((t, next_id, floor if score is None and backbone.scores else score))
                next_id += 1
        for src in others:
            for i, a in sorted(src.added.items()):
                if a.content not in vocab:
                    vocab[a.content] = next_id
                    out.new_added.append((next_id, a))
                    next_id += 1
    for tok in extra_tokens:
        if tok not in vocab:
            vocab[tok] = next_id
            out.new_added.append((next_id, AddedTok(tok, special=False, normalized=True)))
            next_id += 1
    if out.new_model and backbone.model_type == "BPE":
        out.new_merges = _new_merges(backbone, others, out)
    return out


def _new_merges(backbone: SourceTokenizer, others: list[SourceTokenizer],
                out: OutputTokenizer) -> list[tuple[str, str]]:
    """BPE merges for the new vocabulary tokens: the sources' merges that now apply (converted to the backbone's
    spelling, in source order), then for each new token that no merge makes, every split into two known tokens."""
    vocab, style = out.vocab, backbone.style
    added = {a.content for a in backbone.added.values()} | {a.content for _, a in out.new_added}
    have = set(backbone.merges)
    made = {a + b for a, b in backbone.merges}
    new: list[tuple[str, str]] = []
    fresh = {t for t, _, _ in out.new_model}

    def add(a: str, b: str) -> None:
        if (a, b) not in have and a in vocab and b in vocab and a not in added and b not in added:
            have.add((a, b))
            made.add(a + b)
            new.append((a, b))

    for src in others:
        for a, b in src.merges:
            ca, cb = convert(a, src.style, style), convert(b, src.style, style)
            if ca is not None and cb is not None and ca + cb in fresh:
                add(ca, cb)
    for tok, _, _ in list(out.new_model):
        if tok in made:
            continue
        for k in range(1, len(tok)):
            add(tok[:k], tok[k:])
    _chain_unreachable(backbone, out, new, add)
    return new


def _chain_unreachable(backbone: SourceTokenizer, out: OutputTokenizer, new: list[tuple[str, str]], add: Any) -> None:
    """New tokens the merges so far still cannot build from their own text (a Unigram piece whose halves are no
    tokens): tokenize the text with those merges and chain the pieces left to right, adding each missing
    intermediate token (it is in no input, so its rows are mergekit's default for such tokens: zeros)."""
    from tokenizers.models import BPE

    try:
        model = BPE(vocab=dict(out.vocab), merges=list(backbone.merges) + list(new))
    except Exception:  # noqa: BLE001 - merges the tokenizers library rejects: leave those tokens as they are
        return
    for tok, _, _ in list(out.new_model):
        try:
            pieces = [t.value for t in model.tokenize(tok)]
        except Exception:  # noqa: BLE001 - a character the backbone cannot spell: no chain for that token
            continue
        if len(pieces) < 2 or "".join(pieces) != tok:
            continue
        cur = pieces[0]
        for piece in pieces[1:]:
            nxt = cur + piece
            if nxt not in out.vocab:
                out.vocab[nxt] = out.size
                out.new_model.append((nxt, out.vocab[nxt], None))
            add(cur, piece)
            cur = nxt
