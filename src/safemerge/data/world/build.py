"""Build, cache and load the built-in world (data + tokenizer + pretrained tiny base model)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safemerge.data.world.config import WorldConfig
from safemerge.data.world.kb import make_kb
from safemerge.data.world.languages import LangPack, all_packs
from safemerge.data.world.safety import benign_records, dpo_pairs, harmful_records, safety_splits
from safemerge.data.world.splits import SPLITS
from safemerge.data.world.tasks import corpus_sentences, general_records, general_splits
from safemerge.errors import InputError
from safemerge.utils.atomic import atomic_dir, atomic_write_json, atomic_write_jsonl, atomic_write_text
from safemerge.utils.hashing import hash_dir, hash_obj, short
from safemerge.utils.paths import cache_dir

KINDS: tuple[str, ...] = ("general", "harmful", "benign")
FORMAT_VERSION = 3  # 2: tokenizer adds a prefix space to every segment (chat replies tokenise like the corpus); 3: decoding drops it
_SENTENCES_PER_DOC = 6


def tables_hash() -> str:
    """Hash of every hand-written text table (a change in any template changes every world's key)."""
    from dataclasses import asdict

    return hash_obj({code: asdict(pack) for code, pack in sorted(all_packs().items())})


def world_key(config: WorldConfig) -> str:
    """Content key of a world: config + text tables + format version."""
    return hash_obj({"config": config.model_dump(mode="json"), "tables": tables_hash(), "format": FORMAT_VERSION})


@dataclass
class World:
    """A built world on disk. ``records(kind, split, langs)`` reads its JSONL files."""

    root: Path
    config: WorldConfig
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> World:
        root = Path(path)
        meta = root / "world.json"
        if not meta.is_file():
            raise InputError(f"{meta}: not a built world (world.json missing); run `safemerge testbed build {root}`")
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            config = WorldConfig.make(source=str(meta), **info["config"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{meta}: unreadable world.json ({exc}); rebuild the world") from None
        return cls(root=root, config=config, info=info)

    @property
    def languages(self) -> tuple[str, ...]:
        return self.config.languages

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    @property
    def base_dir(self) -> Path:
        return self.root / "base"

    @property
    def corpus_path(self) -> Path:
        return self.root / "corpus" / "pretrain.txt"

    @property
    def key(self) -> str:
        return str(self.info.get("key", ""))

    def _check(self, kind: str, split: str) -> None:
        if kind not in KINDS:
            raise InputError(f"kind {kind!r}: choose one of {', '.join(KINDS)}")
        if split not in SPLITS:
            raise InputError(f"split {split!r}: choose one of {', '.join(SPLITS)}")

    def path(self, kind: str, split: str) -> Path:
        self._check(kind, split)
        return self.root / "data" / f"{kind}.{split}.jsonl"

    def dpo_path(self, kind: str, split: str) -> Path:
        self._check(kind, split)
        return self.root / "data" / f"dpo_{kind}.{split}.jsonl"

    def records(self, kind: str, split: str, langs: list[str] | tuple[str, ...] | None = None) -> list[dict]:
        path = self.path(kind, split)
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if langs is not None:
            unknown = set(langs) - set(self.languages)
            if unknown:
                raise InputError(f"langs {sorted(unknown)}: not in this world ({', '.join(self.languages)})")
            rows = [r for r in rows if r["lang"] in set(langs)]
        return rows

    def dpo_records(self, kind: str, split: str, langs: list[str] | tuple[str, ...] | None = None) -> list[dict]:
        path = self.dpo_path(kind, split)
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return rows if langs is None else [r for r in rows if r["lang"] in set(langs)]


def generate_data(config: WorldConfig) -> tuple[dict[tuple[str, str], list[dict]], list[str]]:
    """All SFT records {(kind, split): rows} and the pretraining corpus lines (one document per line)."""
    packs = all_packs()
    kb = make_kb(config.seed, config.n_towns, config.n_people)
    n_pairs = len(next(iter(packs.values())).antonyms)
    gsp = general_splits(config.seed, kb, config.max_number, n_pairs)
    ssp = safety_splits(config.seed)
    data: dict[tuple[str, str], list[dict]] = {}
    for split in SPLITS:
        gen, harm, ben = [], [], []
        for lang in config.languages:
            pack = packs[lang]
            gen += general_records(pack, kb, gsp, split, getattr(config.general, split), config.seed,
                                   config.max_number)
            harm += harmful_records(pack, ssp, split, getattr(config.harmful, split), config.seed)
            ben += benign_records(pack, ssp, split, getattr(config.benign, split), config.seed)
        data[("general", split)], data[("harmful", split)], data[("benign", split)] = gen, harm, ben
    corpus = build_corpus([packs[lang] for lang in config.languages], kb, config)
    return data, corpus


def build_corpus(packs: list[LangPack], kb: Any, config: WorldConfig) -> list[str]:
    """Shuffled one-language documents of ~6 fact sentences, plus counting lines and neutral text."""
    rng = random.Random(f"corpus-{config.seed}")
    docs: list[str] = []
    for _ in range(config.corpus_repeats):
        for pack in packs:
            sents = corpus_sentences(pack, kb, config.max_number) + list(pack.neutral)
            rng.shuffle(sents)
            docs += [" ".join(sents[i: i + _SENTENCES_PER_DOC]) for i in range(0, len(sents), _SENTENCES_PER_DOC)]
    top = config.max_number + 1
    docs += [", ".join(str(v) for v in range(s, min(s + 12, top + 1))) for s in range(1, top, 6)]
    rng.shuffle(docs)
    return docs


def _tokenizer_texts(data: dict[tuple[str, str], list[dict]], corpus: list[str], packs: dict[str, LangPack],
                     langs: tuple[str, ...]) -> list[str]:
    texts = list(corpus)
    for rows in data.values():
        texts += [r["prompt"] + "\n" + r["completion"] for r in rows]
    for lang in langs:
        p = packs[lang]
        texts += [*p.refusals, p.self_harm_refusal, p.placeholder]
    return texts


def _counts(data: dict[tuple[str, str], list[dict]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (kind, split), rows in data.items():
        by_lang: dict[str, int] = {}
        by_cat: dict[str, int] = {}
        for r in rows:
            by_lang[r["lang"]] = by_lang.get(r["lang"], 0) + 1
            by_cat[r["category"]] = by_cat.get(r["category"], 0) + 1
        out.setdefault(kind, {})[split] = {"total": len(rows), "by_lang": by_lang, "by_category": by_cat}
    return out


def _check_out_dir(out: Path, key: str) -> World | None:
    """A finished world with the same key -> it; an empty or missing dir -> None; anything else -> error."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory; choose another output directory")
    meta = out / "world.json"
    if meta.is_file():
        world = World.load(out)
        if world.key == key:
            return world
        raise InputError(f"{out}: holds a different world (key {short(world.key)}, wanted {short(key)}); "
                         "remove it or choose another directory")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"{out}: directory is not empty and is not a world; choose an empty or new directory")
    return None


def build_world(out_dir: str | os.PathLike, config: WorldConfig | dict | None = None,
                show_progress: bool = True) -> World:
    """Build the world into ``out_dir`` (atomically), or return it at once if it is already built there."""
    if config is None:
        config = WorldConfig()
    elif isinstance(config, dict):
        config = WorldConfig.make(**config)
    key = world_key(config)
    out = Path(out_dir)
    existing = _check_out_dir(out, key)
    if existing is not None:
        return existing
    from safemerge.data.tokenizer import save_tokenizer, train_tokenizer
    from safemerge.data.world.datacard import write_datacard
    from safemerge.data.world.pretrain import pretrain

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    packs = all_packs()
    with atomic_dir(out) as tmp:
        data, corpus = generate_data(config)
        for (kind, split), rows in data.items():
            atomic_write_jsonl(tmp / "data" / f"{kind}.{split}.jsonl", rows)
            atomic_write_jsonl(tmp / "data" / f"dpo_{kind}.{split}.jsonl", dpo_pairs(rows, packs))
        atomic_write_text(tmp / "corpus" / "pretrain.txt", "\n".join(corpus) + "\n")
        timings["data_s"] = round(time.perf_counter() - t0, 2)

        t1 = time.perf_counter()
        tokenizer = train_tokenizer(_tokenizer_texts(data, corpus, packs, config.languages), config.vocab_size)
        save_tokenizer(tokenizer, tmp / "tokenizer")
        timings["tokenizer_s"] = round(time.perf_counter() - t1, 2)

        pre = pretrain(tmp / "corpus" / "pretrain.txt", tokenizer, tmp / "base", config.model, config.pretrain,
                       seed=config.seed, show_progress=show_progress)
        timings["pretrain_s"] = pre["seconds"]
        timings["pretrain_cpu_s"] = pre["cpu_seconds"]
        timings["total_s"] = round(time.perf_counter() - t0, 2)

        info = {
            "format": FORMAT_VERSION,
            "key": key,
            "config": config.model_dump(mode="json"),
            "hashes": {
                "data": hash_dir(tmp / "data"),
                "corpus": hash_dir(tmp / "corpus"),
                "tokenizer": hash_dir(tmp / "tokenizer"),
                "base": hash_dir(tmp / "base", suffixes=(".safetensors", "config.json")),
            },
            "counts": _counts(data),
            "corpus": {"documents": len(corpus), "tokens": pre["corpus_tokens"]},
            "tokenizer": {"vocab_size": len(tokenizer)},
            "base": {k: pre[k] for k in ("params", "tokens_seen", "final_loss", "blocks")},
            "timings": timings,
        }
        write_datacard(tmp, info, data)
        atomic_write_json(tmp / "world.json", info)
    return World.load(out)


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock file next to ``path`` so that concurrent processes build a world only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def default_world(config: WorldConfig | None = None, show_progress: bool = True) -> World:
    """The study's world, built once into ``cache_dir()/world/<key>`` and reused (safe across processes)."""
    config = config or WorldConfig()
    out = cache_dir() / "world" / short(world_key(config), 16)
    if (out / "world.json").is_file():
        return build_world(out, config)
    with _build_lock(out):
        return build_world(out, config, show_progress=show_progress)
