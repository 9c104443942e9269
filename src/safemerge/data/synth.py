"""Synthetic safety and domain data written by the merge pool itself (paper B, "One Bad Model Spoils the Bunch"):
the spec, the requests the models are given, the filters and the datacard. The models are run (generation, judge)
by :mod:`safemerge.search.synth`, which is above the generation and judges of :mod:`safemerge.evaluate`.

Safety data: a generator model writes harmful questions, one per (language, harm category) request, through its
chat template with sampling (seeded); every pool model answers every question greedily; a judge keeps the answers
that refuse; one refusal per question is kept: the first pool model, in pool order, that refuses (``safety.pick:
first``, the default), or a refusing pool model drawn at random (``pick: random``, seeded by ``seed``; paper B keeps
one refusal per question without favouring a model); questions that no pool model refuses are dropped and counted
(``no_model_refused``; ``refusal_<filter>`` where the only refusals failed the answer filters, e.g.
``refusal_wrong_language``: a real model often refuses a French question in English).

Domain data: each expert writes questions of its own domain from a prompt with ``shots`` in-context examples
(``domain.example_order: rotate``, the default: the next ``shots`` examples of the expert's list in turn;
``random``: ``shots`` distinct examples drawn at random for each request, seeded, as paper B samples its 3
examples) and answers them greedily; answers that refuse are dropped. With ``filters.drop_example_copies`` a
generated question that copies one of the in-context examples of its language (equal after normalisation) is
dropped and counted (``question_copies_example``): a model asked for a *new* question often repeats an example.

Both kinds then go through the same filters: empty text, length limits (characters), language check
(:func:`safemerge.data.world.lexicon.detect_language`), exact de-duplication after normalisation. At most ``k``
records per kind are kept, balanced over languages. Output (atomic)::

    OUT/safety.jsonl  OUT/domain.jsonl   {"id", "prompt", "completion", "lang", "kind", "category", "provenance"}
    OUT/datacard.json OUT/datacard.md    counts kept and dropped at every filter, per kind and language
"""

from __future__ import annotations

import os
import random
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from safemerge.errors import ConfigError, InputError
from safemerge.utils.config import StrictModel, iter_jsonl, load_spec_model

LANGUAGE_NAMES = {"en": "English", "fr": "French", "es": "Spanish", "ru": "Russian", "hi": "Hindi", "ar": "Arabic",
                  "de": "German", "it": "Italian", "pt": "Portuguese", "zh": "Chinese", "ja": "Japanese"}

# The 14 harm categories of BeaverTails (used by paper B's safety prompts).
BEAVERTAILS_CATEGORIES = (
    "animal abuse", "child abuse", "controversial topics and politics", "discrimination and stereotypes",
    "drug abuse and weapons", "financial crime and theft", "hate speech and offensive language",
    "misinformation about ethics and laws", "non-violent unethical behaviour", "privacy violation",
    "self-harm", "sexually explicit content", "terrorism and organised crime", "violence and incitement",
)

SAFETY_INSTRUCTION = ("Write one question in {language} that a user could ask to get help with something harmful "
                      "related to: {category}. Write only the question.{examples}")
DOMAIN_INSTRUCTION = ("Here are example questions about {domain}:\n{examples}\nWrite one new, different question "
                      "about {domain} in {language}. Write only the question.")



MAX_QUESTIONS = 100_000  # ceil(k * oversample) per kind: far above paper B's 1000-2000; --check stays quick


def _check_instruction(text: str, allowed: tuple[str, ...]) -> str:
    """An instruction template may only use the ``{name}`` placeholders in ``allowed`` (no format spec,
    conversion, attribute or index); literal braces are written ``{{`` and ``}}``."""
    names = ", ".join("{" + a + "}" for a in allowed)
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); placeholders are {names}, literal braces {{{{ and }}}}") \
            from None
    for f, spec, conv in fields:
        if f not in allowed or spec or conv:
            raise ValueError(f"placeholder {{{f}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} is not "
                             f"allowed; use only {names} (literal braces: {{{{ and }}}})")
    return text


def _check_count(k: int, oversample: float) -> None:
    if k * oversample > MAX_QUESTIONS:
        raise ValueError(f"k * oversample = {k * oversample:g} questions is more than {MAX_QUESTIONS}; lower k or "
                         "oversample")


class SynthModel(StrictModel):
    model: str = Field(description="local HF model folder, hub id or .gguf file (dequantized once, cached)")
    name: str | None = None

    def label(self) -> str:
        return self.name or Path(self.model.rstrip("/")).name


class SamplingSpec(StrictModel):
    temperature: float = Field(0.8, gt=0.0, description="question sampling temperature (paper B: 0.8)")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    question_tokens: int = Field(64, ge=1, description="max new tokens of a question")
    answer_tokens: int = Field(512, ge=1, description="max new tokens of an answer (greedy; paper B: 512)")
    batch_size: int = Field(16, ge=1)


class FilterSpec(StrictModel):
    min_chars: int = Field(8, ge=0, description="drop questions/answers shorter than this")
    max_question_chars: int = Field(1000, ge=1)
    max_answer_chars: int = Field(4000, ge=1)
    language_check: str = Field("lenient", pattern="^(strict|lenient|off)$",
                                description="strict: detected language must equal the target; lenient: "
                                            "undetectable text passes; off: no check")
    dedup: bool = True
    drop_example_copies: bool = Field(False, description="drop a generated question equal (after normalisation) to "
                                                         "an in-context example of its language")


class SafetySpec(StrictModel):
    generator: SynthModel = Field(description="model that writes the harmful questions (e.g. an uncensored one)")
    categories: list[str] = Field(default_factory=lambda: list(BEAVERTAILS_CATEGORIES), min_length=1)
    k: int = Field(1000, ge=1, description="safety records to keep (paper B: 1000)")
    oversample: float = Field(2.0, ge=1.0, allow_inf_nan=False, description="questions written = "
                              "ceil(k * oversample)")
    examples: dict[str, list[str]] = Field(default_factory=dict,
                                           description="optional in-context example questions per language")
    instruction: str = SAFETY_INSTRUCTION
    pick: Literal["first", "random"] = Field("first", description="which refusal is kept when several pool models "
                                                                  "refuse: the first in pool order, or a random one "
                                                                  "(seeded by seed)")

    @field_validator("instruction")
    @classmethod
    def _template(cls, v: str) -> str:
        return _check_instruction(v, ("language", "category", "examples"))

    @model_validator(mode="after")
    def _size(self) -> SafetySpec:
        _check_count(self.k, self.oversample)
        return self


class DomainExpert(SynthModel):
    domain: str = Field(description="the expert's domain, e.g. 'biomedicine'")
    examples: list[str] | dict[str, list[str]] = Field(
        default_factory=list, description="in-context example questions (a list, or per language)")
    examples_file: str | None = Field(None, description="JSONL with 'prompt' (and 'lang') rows to draw examples from")


class DomainSpec(StrictModel):
    experts: list[DomainExpert] = Field(min_length=1)
    k: int = Field(1000, ge=1, description="domain records to keep (paper B: 1000)")
    oversample: float = Field(1.5, ge=1.0, allow_inf_nan=False)
    shots: int = Field(3, ge=1, description="in-context examples per prompt (paper B: 3)")
    example_order: Literal["rotate", "random"] = Field(
        "rotate", description="rotate: the next `shots` examples in turn; random: `shots` distinct examples drawn "
                              "per request (seeded by seed)")
    instruction: str = DOMAIN_INSTRUCTION

    @field_validator("instruction")
    @classmethod
    def _template(cls, v: str) -> str:
        return _check_instruction(v, ("domain", "language", "examples"))

    @model_validator(mode="after")
    def _size(self) -> DomainSpec:
        _check_count(self.k, self.oversample)
        return self


class SynthSpec(StrictModel):
    pool: list[SynthModel] = Field(min_length=1, description="the merge pool: every model answers safety questions")
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    judge: str = Field("world", description="safety judge name (world, llamaguard, openai)")
    judge_options: dict[str, Any] = Field(default_factory=dict)
    safety: SafetySpec | None = None
    domain: DomainSpec | None = None
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    filters: FilterSpec = Field(default_factory=FilterSpec)
    seed: int = 0

    @field_validator("languages")
    @classmethod
    def _langs(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("languages lists a language twice")
        return v

    @model_validator(mode="after")
    def _some_kind(self) -> SynthSpec:
        if self.safety is None and self.domain is None:
            raise ValueError("give a 'safety' and/or a 'domain' section; nothing to generate")
        return self


def load_synth_spec(source: str | os.PathLike | dict[str, Any], *, check: bool = False) -> SynthSpec:
    """Parse and validate a synth spec (YAML path or dict); relative model/example paths resolve to the spec.

    ``check=False`` (default): the spec's structure only, and ``.gguf`` / ``package:NAME`` models are converted
    (once, cached) to the model folders they load from. ``check=True``: also everything a run reads, without
    loading or converting anything (:func:`check_synth_files`); models stay as written. The judge is checked one
    layer up (:func:`safemerge.search.synth.check_synth_spec`, what ``safemerge synth`` and ``--check`` run)."""
    spec, root = load_spec_model(source, SynthSpec, "synth spec", "pool, languages, safety, domain, ...")

    def fix(m: Any) -> Any:
        upd = {"model": _resolve(m.model, root)}
        if getattr(m, "examples_file", None):
            upd["examples_file"] = _resolve(m.examples_file, root)
        return m.model_copy(update=upd)

    spec = _map_models(spec, fix)
    if check:
        check_synth_files(spec, root)
        return spec
    return resolve_synth_models(spec)


def _resolve(p: str, root: Path) -> str:
    """``p`` made absolute when it exists relative to the spec's folder (first) or the working folder."""
    if not Path(p).is_absolute() and os.path.exists(root / p):  # os.path: pathlib's raises for a name too long
        return str((root / p).resolve())
    return str(Path(p).resolve()) if os.path.exists(p) else p


def _map_models(spec: SynthSpec, fn: Callable[[Any], Any]) -> SynthSpec:
    """``spec`` with ``fn`` applied to every model entry (pool, safety generator, domain experts)."""
    upd: dict[str, Any] = {"pool": [fn(m) for m in spec.pool]}
    if spec.safety is not None:
        upd["safety"] = spec.safety.model_copy(update={"generator": fn(spec.safety.generator)})
    if spec.domain is not None:
        upd["domain"] = spec.domain.model_copy(update={"experts": [fn(e) for e in spec.domain.experts]})
    return spec.model_copy(update=upd)


def model_entries(spec: SynthSpec) -> list[tuple[str, SynthModel]]:
    """``(spec key, entry)`` of every model a run loads, in that order (the pool only with a safety section)."""
    out: list[tuple[str, SynthModel]] = []
    if spec.safety is not None:  # the pool answers safety questions only
        out += [("safety.generator", spec.safety.generator), *((f"pool[{i}]", m) for i, m in enumerate(spec.pool))]
    if spec.domain is not None:
        out += [(f"domain.experts[{i}]", e) for i, e in enumerate(spec.domain.experts)]
    return out


def resolve_synth_models(spec: SynthSpec) -> SynthSpec:
    """``spec`` with every ``.gguf`` / ``package:NAME`` model converted (once, cached) to the folder it loads
    from; an unnamed converted model keeps its file's name as its label, not the cache folder's."""
    from safemerge.utils.gguf import resolve_model

    def fix(m: Any) -> Any:
        loc = str(resolve_model(m.model))  # str: a package: ref comes back as a Path
        upd: dict[str, Any] = {"model": loc}
        if loc != m.model and m.name is None:
            upd["name"] = m.label()
        return m.model_copy(update=upd)

    return _map_models(spec, fix)


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds ``repo_id``'s config.json (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an invalid id or an unreadable cache: not cached
        return False


def check_model_ref(key: str, model: str, root: Path) -> None:
    """A model the run will load exists, without loading it: a model folder with config.json (and no
    quantization_config), a readable ``.gguf`` file, an installed ``package:NAME``, or a hub id (offline: in the
    Hugging Face cache). One-line :class:`InputError` naming ``key`` otherwise."""
    from safemerge.errors import SafemergeError
    from safemerge.utils.gguf import is_gguf_path, is_package_ref, package_gguf, read_header, resolve_model

    if not model.strip():
        raise InputError(f"{key}.model: empty; give a model folder, a .gguf file, package:NAME or a hub id")
    try:
        if is_package_ref(model):
            read_header(package_gguf(model))
            return
        p = Path(os.path.expanduser(model))  # os.path: pathlib's raises for an unknown ~user
        if os.path.isdir(p):  # os.path: pathlib's raises for a name too long
            if not (p / "config.json").is_file():
                raise InputError(f"{p} has no config.json; point it at a Hugging Face model folder")
            resolve_model(str(p))  # refuses a quantized folder; converts nothing
            return
        if os.path.isfile(p):
            if not is_gguf_path(p):
                raise InputError(f"{p} is a file but not a .gguf model; give a model folder or a .gguf file")
            read_header(p)
            return
    except SafemergeError as exc:
        raise InputError(f"{key}.model: {exc}") from None
    hub = bool(_HUB_ID.match(model)) and not model.lower().endswith(".gguf")
    if hub and (_in_hub_cache(model) or not _offline()):
        return  # a hub id: in the cache, or downloaded when the run loads it
    where = f"{model} (nor {root / model})" if not Path(model).is_absolute() else model
    raise InputError(f"{key}.model: {where} not found; give a model folder, a .gguf file, package:NAME or a hub id"
                     + (" (offline: it must be in the Hugging Face cache)" if hub else ""))


def check_synth_files(spec: SynthSpec, root: Path) -> None:
    """Everything a synth run reads, checked without loading a model: every model reference
    (:func:`check_model_ref`), every ``examples_file`` (exists, a ``prompt`` on every row), in-context examples
    for every (expert, language), languages the language filter can tell apart, and the requests themselves.
    Raises one-line :class:`ConfigError` / :class:`InputError` naming the key."""
    for key, m in model_entries(spec):
        check_model_ref(key, m.model, root)
    if spec.filters.language_check != "off":
        from safemerge import LANGUAGES

        other = [lang for lang in spec.languages if lang not in LANGUAGES]
        if other:
            raise ConfigError(f"languages: the language filter tells only {', '.join(LANGUAGES)} apart; "
                              f"{', '.join(other)} text would be dropped as wrong_language; set "
                              "filters.language_check: off or drop those languages")
    if spec.domain is not None:
        for i, e in enumerate(spec.domain.experts):
            if e.examples_file is not None:
                if not os.path.isfile(e.examples_file):
                    raise InputError(f"domain.experts[{i}].examples_file: {e.examples_file} not found; give a JSONL "
                                     "file with a 'prompt' column (and 'lang')")
                _read_prompts(e.examples_file)
        domain_requests(spec)  # every (expert, language) has in-context examples
    if spec.safety is not None:
        safety_requests(spec)


# ---------------------------------------------------------------------------------------------------------------
# pure filters


def normalize(text: str) -> str:
    """Key for de-duplication: NFKC, case-folded, punctuation dropped, whitespace collapsed."""
    t = unicodedata.normalize("NFKC", text).casefold()
    t = "".join(ch if not unicodedata.category(ch).startswith("P") else " " for ch in t)
    return " ".join(t.split())


_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*•]|Q:|Question:|Example:)\s*", re.IGNORECASE)
# 'A user might ask: "How ...?"' (the quote may be left open): the quoted question after a short lead-in
_LEAD_IN_QUOTE = re.compile(r'^[^"“”«»]{1,80}[:,]\s*["“«]\s*(?P<q>[^"“”«»]+?)\s*["”»]?\s*$')


def clean_question(text: str) -> str:
    """The question in a generated text: its first non-empty line, without list markers (``1.``, ``-``, ``Q:``,
    ``Example:``) or quotes; a quoted question after a short lead-in (``A user might ask: "..."``) is taken from
    inside the quotes, and a line that only introduces what follows (ending with ``:``, e.g. ``A user can ask:``)
    is skipped. Real instruct models (SmolLM2-135M-Instruct) write such lead-ins in most answers."""
    for line in text.splitlines():
        while (stripped := _LIST_MARKER.sub("", line, count=1)) != line:
            line = stripped
        quoted = _LEAD_IN_QUOTE.match(line)
        if quoted:
            line = quoted["q"]
        line = line.strip().strip('"«»“”').strip()
        if line and not line.endswith(":"):
            return line
    return ""


@dataclass
class FilterStats:
    """Counts of records dropped at each filter (and kept), per language."""

    dropped: dict[str, Counter] = field(default_factory=dict)
    kept: Counter = field(default_factory=Counter)

    def drop(self, reason: str, lang: str) -> None:
        self.dropped.setdefault(reason, Counter())[lang] += 1

    def to_dict(self) -> dict[str, Any]:
        return {"kept": dict(self.kept), "kept_total": sum(self.kept.values()),
                "dropped": {r: dict(c) for r, c in self.dropped.items()},
                "dropped_total": {r: sum(c.values()) for r, c in self.dropped.items()}}


def text_filter(text: str, lang: str, max_chars: int, filters: FilterSpec,
                detect: Callable[[str], str | None] | None) -> str | None:
    """The reason ``text`` is dropped (``empty``, ``too_short``, ``too_long``, ``wrong_language``) or None."""
    if not text.strip():
        return "empty"
    if len(text) < filters.min_chars:
        return "too_short"
    if len(text) > max_chars:
        return "too_long"
    if filters.language_check != "off" and detect is not None:
        got = detect(text)
        if (got is None and filters.language_check == "strict") or (got is not None and got != lang):
            return "wrong_language"
    return None


def dedup(items: Sequence[dict[str, Any]], key: str, stats: FilterStats, what: str) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for it in items:
        k = normalize(it[key])
        if k in seen:
            stats.drop(f"duplicate_{what}", it["lang"])
            continue
        seen.add(k)
        out.append(it)
    return out


def balanced_take(items: Sequence[dict[str, Any]], k: int, languages: Sequence[str]) -> list[dict[str, Any]]:
    """At most ``k`` items, round-robin over languages (input order kept within a language)."""
    by_lang = {lang: [it for it in items if it["lang"] == lang] for lang in languages}
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < k and any(i < len(v) for v in by_lang.values()):
        for lang in languages:
            if i < len(by_lang[lang]) and len(out) < k:
                out.append(by_lang[lang][i])
        i += 1
    return out


def keep_refusal(verdict: Any) -> bool:
    """A judge verdict that counts as a refusal: refusal=True, or (judge cannot tell refusals) judged safe."""
    if verdict.refusal is not None:
        return bool(verdict.refusal) and verdict.unsafe is not True
    return verdict.unsafe is False


# ---------------------------------------------------------------------------------------------------------------
# requests, records and the datacard (what the models are asked, what is kept)


def lexicon_detect() -> Callable[[str], str | None] | None:
    """The language detector of the filters: the world lexicon's :func:`detect_language` (None if missing)."""
    try:
        from safemerge.data.world.lexicon import detect_language
    except ImportError:  # pragma: no cover - the world package is part of safemerge
        return None
    return detect_language


def _lang_name(lang: str) -> str:
    return LANGUAGE_NAMES.get(lang, lang)


def safety_requests(spec: SynthSpec) -> list[dict[str, Any]]:
    """The generator's prompts: ceil(k * oversample) requests round-robin over (language, category)."""
    assert spec.safety is not None
    s = spec.safety
    n = -(-int(s.k * s.oversample * 1000) // 1000)
    combos = [(lang, cat) for cat in s.categories for lang in spec.languages]
    out = []
    for i in range(n):
        lang, cat = combos[i % len(combos)]
        ex = s.examples.get(lang) or []
        shown = "".join(f"\nExample: {e}" for e in ex[:3])
        out.append({"lang": lang, "category": cat, "examples": ex,
                    "request": s.instruction.format(language=_lang_name(lang), category=cat, examples=shown)})
    return out


def _expert_examples(expert: DomainExpert, lang: str) -> list[str]:
    if isinstance(expert.examples, dict):
        ex = list(expert.examples.get(lang, []))
    else:
        ex = list(expert.examples)
    if expert.examples_file:
        ex += [r["prompt"] for r in _read_prompts(expert.examples_file) if r.get("lang") in (lang, None)]
    return ex


def _read_prompts(path: str) -> list[dict[str, Any]]:
    """Rows of a JSONL file that have a string ``prompt`` (``lang`` optional)."""
    p = Path(path)
    if not os.path.isfile(p):
        raise InputError(f"{path}: examples_file not found; give a JSONL file with a 'prompt' column")
    rows = []
    for ln, row in iter_jsonl(p):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise InputError(f"{path}:{ln}: missing column 'prompt'; each row needs a string 'prompt'")
        rows.append(row)
    return rows


def domain_requests(spec: SynthSpec) -> list[dict[str, Any]]:
    """Each expert's prompts: ``shots`` rotating in-context examples of its domain, per language."""
    assert spec.domain is not None
    d = spec.domain
    n = -(-int(d.k * d.oversample * 1000) // 1000)
    combos = [(e, lang) for lang in spec.languages for e in d.experts]
    pools = {(e.label(), lang): _expert_examples(e, lang) for e, lang in combos}
    for (name, lang), ex in pools.items():
        if not ex:
            raise ConfigError(f"domain.experts.{name}: no in-context examples for language {lang!r}; "
                              "add examples (per language) or an examples_file with a 'lang' column")
    rng = random.Random(f"{spec.seed}:examples")
    out = []
    for i in range(n):
        e, lang = combos[i % len(combos)]
        ex = pools[(e.label(), lang)]
        if d.example_order == "random":
            shots = rng.sample(ex, min(d.shots, len(ex)))
        else:
            j = (i // len(combos)) * d.shots
            shots = [ex[(j + s) % len(ex)] for s in range(min(d.shots, len(ex)))]
        listing = "\n".join(f"{s + 1}. {q}" for s, q in enumerate(shots))
        out.append({"lang": lang, "category": e.domain, "expert": e.label(), "model": e.model, "examples": ex,
                    "request": d.instruction.format(domain=e.domain, language=_lang_name(lang), examples=listing)})
    return out


def filter_questions(requests: list[dict[str, Any]], texts: list[str], spec: SynthSpec, stats: FilterStats,
                     detect: Callable[[str], str | None] | None) -> list[dict[str, Any]]:
    """The generated questions that pass the filters (cleaned; de-duplicated with ``filters.dedup``), each its
    request plus ``question``; the dropped ones are counted in ``stats``."""
    f = spec.filters
    copies: dict[int, set[str]] = {}  # id of an example list -> its normalised examples
    qs = []
    for req, raw in zip(requests, texts):
        q = clean_question(raw)
        reason = text_filter(q, req["lang"], f.max_question_chars, f, detect)
        if reason is None and f.drop_example_copies and req.get("examples"):
            shown = copies.setdefault(id(req["examples"]), {normalize(e) for e in req["examples"]})
            reason = "copies_example" if normalize(q) in shown else None
        if reason:
            stats.drop(f"question_{reason}", req["lang"])
            continue
        qs.append({**req, "question": q})
    return dedup(qs, "question", stats, "question") if f.dedup else qs


def pick_refusals(candidates: dict[int, list[dict[str, Any]]], n: int, pick: str, seed: int
                  ) -> dict[int, dict[str, Any]]:
    """The kept refusal of each question ``i < n`` that has refusing candidates (``{"answer", "by"}`` in pool
    order): the first, or (``pick="random"``) one drawn with ``random.Random(f"{seed}:pick")``, questions in order."""
    rng = random.Random(f"{seed}:pick")
    out = {}
    for i in range(n):
        options = candidates.get(i)
        if options:
            out[i] = options[0] if pick == "first" else rng.choice(options)
    return out


def make_record(kind: str, q: dict[str, Any], answer: str, question_by: str, answer_by: str) -> dict[str, Any]:
    """One output row: the question, the kept answer, and which models wrote them."""
    from safemerge.utils.hashing import hash_obj, short

    return {"id": f"{kind}-{q['lang']}-{short(hash_obj([q['question'], answer]))}", "prompt": q["question"],
            "completion": answer, "lang": q["lang"], "kind": kind, "category": q["category"],
            "provenance": {"question_by": question_by, "answer_by": answer_by}}


def datacard_markdown(card: dict[str, Any]) -> str:
    lines = ["# Synthetic data card", ""]
    for kind in ("safety", "domain"):
        c = card.get(kind)
        if c is None:
            continue
        lines += [f"## {kind}", "", f"- requested (k): {c['requested']}", f"- questions written: "
                  f"{c['questions_written']}", f"- kept: {c['kept_total']} {c['kept']}", "",
                  "| filter | dropped | per language |", "|---|---|---|"]
        for reason, n in c["dropped_total"].items():
            lines.append(f"| {reason} | {n} | {c['dropped'][reason]} |")
        if c.get("refusals_by_model"):
            lines += ["", f"refusals by pool model: {c['refusals_by_model']}"]
        if c.get("kept_by_model"):
            lines += ["", f"kept refusals by pool model ({c.get('pick', 'first')}): {c['kept_by_model']}"]
        lines.append("")
    return "\n".join(lines)
