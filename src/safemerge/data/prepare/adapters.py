"""Adapters: each public dataset's own columns -> safemerge's canonical records.

One adapter per dataset, written against the dataset's real column names (its Hugging Face card). A canonical
record holds what the outputs need::

    id, lang, prompt            always
    completion                  a response to the prompt (SFT answer, or a general prompt's reference answer)
    chosen, rejected            a preference pair (DPO)
    harmful                     the prompt asks for something harmful (True / False / None: not labelled)
    safe, refusal               the response is safe / refuses (None: not labelled)
    category                    the dataset's harm category or task

| adapter | dataset | columns read |
|---|---|---|
| ``aya_redteaming`` | CohereForAI/aya_redteaming | prompt, language, harm_category, global_or_local |
| ``dolly`` | databricks/databricks-dolly-15k | instruction, context, response, category |
| ``aya_dolly`` | CohereForAI/aya_evaluation_suite (dolly_human_edited / dolly_machine_translated) | id, inputs, targets, language |
| ``beavertails`` | PKU-Alignment/BeaverTails | prompt, response, category, is_safe |
| ``xstest`` | Paul/XSTest (paul-rottger/xstest ``xstest_prompts.csv``) | id, prompt, type, label |
| ``ultrafeedback`` | HuggingFaceH4/ultrafeedback_binarized | prompt_id, prompt, chosen, rejected |
| ``polyguardprompts`` | ToxicityPrompts/PolyGuardPrompts | id, language, prompt, response, prompt_harm_label, response_refusal_label, response_harm_label, subcategory |
| ``multijail`` | DAMO-NLP-SG/MultiJail (``MultiJail.csv``) | id, tags, one column per language (en, zh, it, vi, ar, ko, th, bn, sw, jv) |
| ``columns`` | any table (e.g. ``safemerge synth`` output, your translations) | a column mapping (``columns:``) |

A row the adapter cannot use is a *bad row* with a reason (``missing_column:<col>``, ``empty_text:<col>``,
``bad_value:<col>``, ``unknown_language:<value>``), counted in the datacard and never silently dropped.
Datasets without a language column are English (dolly, beavertails, xstest, ultrafeedback), unless the source
sets ``lang:`` (a translated copy) or the row has a ``lang``/``language`` column.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from safemerge.data.synth import BEAVERTAILS_CATEGORIES

# BeaverTails' raw category keys, in the order of data.synth.BEAVERTAILS_CATEGORIES (their readable names)
BEAVERTAILS_KEYS = (
    "animal_abuse", "child_abuse", "controversial_topics,politics", "discrimination,stereotype,injustice",
    "drug_abuse,weapons,banned_substance", "financial_crime,property_crime,theft", "hate_speech,offensive_language",
    "misinformation_regarding_ethics,laws_and_safety", "non_violent_unethical_behavior", "privacy_violation",
    "self_harm", "sexually_explicit,adult_content", "terrorism,organized_crime",
    "violence,aiding_and_abetting,incitement",
)
BEAVERTAILS_NAMES = dict(zip(BEAVERTAILS_KEYS, BEAVERTAILS_CATEGORIES, strict=True))
MULTIJAIL_LANGUAGES = ("en", "zh", "it", "vi", "ar", "ko", "th", "bn", "sw", "jv")

# the canonical fields a `columns` mapping may name, and the text ones among them
CANONICAL = ("id", "lang", "prompt", "completion", "chosen", "rejected", "harmful", "safe", "refusal", "category")
TEXT_FIELDS = ("prompt", "completion", "chosen", "rejected")
FLAG_FIELDS = ("harmful", "safe", "refusal")


class BadRow(Exception):
    """A row an adapter cannot use; ``reason`` is the datacard's key (``missing_column:prompt``, ...)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Context:
    """What an adapter knows besides the row: its position, the source's options and the spec's languages."""

    index: int
    lang: str | None
    languages: tuple[str, ...]
    columns: dict[str, str] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)


Result = dict[str, Any] | BadRow  # a record (``lang`` still the dataset's raw value) or why a row is unusable


@dataclass(frozen=True)
class Adapter:
    name: str
    dataset: str  # the Hugging Face id the columns are those of
    columns: tuple[str, ...]  # the columns read (documentation, datacard)
    convert: Callable[[dict[str, Any], Context], list[Result]]
    english_only: bool = False  # no language column: rows are English unless the source sets `lang`


# ---------------------------------------------------------------------------------------------------------------
# cell helpers


def text(row: dict[str, Any], col: str) -> str:
    """A required non-empty text cell."""
    if col not in row or row[col] is None:
        raise BadRow(f"missing_column:{col}")
    value = row[col]
    if not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        else:
            raise BadRow(f"bad_value:{col}")
    if not value.strip():
        raise BadRow(f"empty_text:{col}")
    return value.strip()


def opt_text(row: dict[str, Any], col: str) -> str | None:
    """An optional text cell: None when absent or empty."""
    value = row.get(col)
    if isinstance(value, str) and value.strip():
        return value.strip()
    if value is None or isinstance(value, str):
        return None
    raise BadRow(f"bad_value:{col}")


def flag(row: dict[str, Any], col: str, required: bool = True) -> bool | None:
    """A boolean cell: true/false, 1/0 or their text (CSV)."""
    value = row.get(col)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise BadRow(f"missing_column:{col}")
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise BadRow(f"bad_value:{col}")


def label(row: dict[str, Any], col: str, values: dict[str, bool], required: bool = True) -> bool | None:
    """A label cell mapped to a boolean (``{"harmful": True, "unharmful": False}``)."""
    value = row.get(col)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise BadRow(f"missing_column:{col}")
        return None
    key = str(value).strip().lower()
    if key not in values:
        raise BadRow(f"bad_value:{col}")
    return values[key]


def listish(value: Any) -> list[str]:
    """A list cell, or its text form (JSON ``["a", "b"]`` or Python ``['a', 'b']``, as in Aya Red-teaming)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    s = str(value).strip()
    if s.startswith("["):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(s)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(parsed, (list, tuple)):
                return [str(v).strip() for v in parsed if str(v).strip()]
    return [s] if s else []


def language(row: dict[str, Any], ctx: Context, col: str, english_only: bool = False) -> Any:
    """The row's raw language value: its column, else the source's ``lang``, else English for English datasets."""
    for c in (col, "lang", "language"):
        if row.get(c) not in (None, ""):
            return row[c]
    if ctx.lang is not None:
        return ctx.lang
    if english_only:
        return "en"
    raise BadRow(f"missing_column:{col}")


def row_id(row: dict[str, Any], ctx: Context, *cols: str) -> str:
    for c in cols:
        if row.get(c) not in (None, ""):
            return str(row[c])
    return str(ctx.index)


def reply(row: dict[str, Any], col: str) -> str:
    """An answer cell: text, or a chat message list (its last assistant message; UltraFeedback's chosen/rejected)."""
    value = row.get(col)
    if isinstance(value, (list, tuple)):
        msgs = [m for m in value if isinstance(m, dict)]
        answers = [m.get("content") for m in msgs if m.get("role") == "assistant"]
        if not msgs or not answers:
            raise BadRow(f"bad_value:{col}")
        if not isinstance(answers[-1], str) or not answers[-1].strip():
            raise BadRow(f"empty_text:{col}")
        return answers[-1].strip()
    return text(row, col)


def _guard(fn: Callable[[dict[str, Any], Context], dict[str, Any]]) -> Callable[[dict[str, Any], Context],
                                                                              list[Result]]:
    """One record per row; a :class:`BadRow` becomes the row's result."""
    def run(row: dict[str, Any], ctx: Context) -> list[Result]:
        try:
            return [fn(row, ctx)]
        except BadRow as bad:
            return [bad]
    run.__doc__ = fn.__doc__
    return run


# ---------------------------------------------------------------------------------------------------------------
# the adapters


@_guard
def aya_redteaming(row: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Aya Red-teaming: harmful prompts (8 languages, 9 harm categories, global/local harm)."""
    return {"id": row_id(row, ctx), "prompt": text(row, "prompt"), "lang": language(row, ctx, "language"),
            "harmful": True, "category": "; ".join(listish(row.get("harm_category")))}


@_guard
def dolly(row: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """databricks-dolly-15k: an instruction (+ optional context) and its human answer; general, English."""
    prompt = text(row, "instruction")
    context = opt_text(row, "context")
    return {"id": row_id(row, ctx, "id"), "prompt": f"{prompt}\n\n{context}" if context else prompt,
            "completion": text(row, "response"), "lang": language(row, ctx, "language", english_only=True),
            "harmful": False, "category": str(row.get("category") or "")}


@_guard
def aya_dolly(row: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Aya evaluation suite's Dolly sets: Dolly-200 prompts translated (``targets`` may be empty)."""
    return {"id": row_id(row, ctx, "id", "source_id"), "prompt": text(row, "inputs"),
            "completion": opt_text(row, "targets"), "lang": language(row, ctx, "language"), "harmful": False,
            "category": "dolly"}


@_guard
def beavertails(row: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """BeaverTails: a red-team prompt, a model's response and whether the pair is safe (``is_safe``) with the
    14 harm categories it violates; an unsafe pair marks its prompt harmful."""
    safe = flag(row, "is_safe")
    cats = row.get("category")
    if isinstance(cats, str) and cats.strip().startswith("{"):
        try:
            cats = json.loads(cats)
        except json.JSONDecodeError:
            raise BadRow("bad_value:category") from None
    if cats is not None and not isinstance(cats, dict):
        raise BadRow("bad_value:category")
    names = [BEAVERTAILS_NAMES.get(k, k) for k, v in (cats or {}).items() if v is True or v in ("True", "true", 1)]
    return {"id": row_id(row, ctx, "id"), "prompt": text(row, "prompt"), "completion": text(row, "response"),
            "lang": language(row, ctx, "language", english_only=True), "safe": safe,
            "harmful": True if safe is False else None, "category": "; ".join(names)}


@_guard
def xstest(row: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """XSTest: 250 safe prompts that sound unsafe (over-refusal) and 200 unsafe contrast prompts; ``label`` is
    safe/unsafe (unsafe types start with ``contrast_``)."""
    kind = text(row, "type")
    harmful = label(row, "label", {"safe": False, "unsafe": True}, required=False)
    if harmful is None:
        harmful = kind.startswith("contrast_")
    return {"id": row_id(row, ctx, "id", "id_v2"), "prompt": text(row, "prompt"), "harmful": harmful,
            "lang": language(row, ctx, "language", english_only=True), "category": kind}


@_guard
def ultrafeedback(row: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """UltraFeedback binarized: a prompt with its best (chosen) and a worse (rejected) answer, as chat messages."""
    chosen = reply(row, "chosen")
    return {"id": row_id(row, ctx, "prompt_id"), "prompt": text(row, "prompt"), "chosen": chosen,
            "rejected": reply(row, "rejected"), "completion": chosen, "harmful": False,
            "lang": language(row, ctx, "language", english_only=True), "category": "ultrafeedback"}


@_guard
def polyguardprompts(row: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """PolyGuardPrompts: prompts (17 languages) labelled harmful/unharmful, with a response labelled
    refusal/compliance and harmful/unharmful (the response may be missing: a prompt-only item)."""
    completion = opt_text(row, "response")
    refusal = safe = None
    if completion is not None:
        refusal = label(row, "response_refusal_label", {"refusal": True, "compliance": False}, required=False)
        safe = label(row, "response_harm_label", {"harmful": False, "unharmful": True}, required=False)
    return {"id": row_id(row, ctx, "id"), "prompt": text(row, "prompt"), "lang": language(row, ctx, "language"),
            "harmful": label(row, "prompt_harm_label", {"harmful": True, "unharmful": False}),
            "completion": completion, "refusal": refusal, "safe": safe,
            "category": str(row.get("subcategory") or row.get("prompt_categories") or "")}


def multijail(row: dict[str, Any], ctx: Context) -> list[Result]:
    """MultiJail: 315 harmful prompts, one column per language (en, zh, it, vi, ar, ko, th, bn, sw, jv); one record
    per spec language that has a column. The long form (``language``, ``text``, ``tags``) is read too."""
    cats = "; ".join(listish(row.get("tags")))
    if "text" in row and "language" in row:
        try:
            return [{"id": row_id(row, ctx, "id"), "prompt": text(row, "text"), "lang": row["language"],
                     "harmful": True, "category": cats}]
        except BadRow as bad:
            return [bad]
    out: list[Result] = []
    for lang in ctx.languages:
        if lang not in row:
            continue
        try:
            out.append({"id": row_id(row, ctx, "id"), "prompt": text(row, lang), "lang": lang,
                        "harmful": True, "category": cats})
        except BadRow as bad:
            out.append(bad)
    if not out and not any(lang in row for lang in MULTIJAIL_LANGUAGES):
        out.append(BadRow("missing_column:en"))
    return out


@_guard
def columns(row: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Any table: ``columns:`` maps canonical fields to the table's columns (default: the same names, i.e.
    safemerge's own JSONL: prompt, completion, chosen, rejected, lang, id, category); ``fixed:`` sets a field for
    every row (e.g. ``harmful: true``)."""
    cols = {f: f for f in CANONICAL} | ctx.columns
    rec: dict[str, Any] = {"id": row_id(row, ctx, cols["id"]), "prompt": text(row, cols["prompt"])}
    for f in ("completion", "chosen", "rejected"):
        if f in ctx.columns:
            rec[f] = reply(row, cols[f])
        elif row.get(cols[f]) is not None:
            rec[f] = reply(row, cols[f]) if isinstance(row[cols[f]], list) else opt_text(row, cols[f])
    for f in FLAG_FIELDS:
        if f in ctx.columns or row.get(cols[f]) is not None:
            rec[f] = flag(row, cols[f], required=f in ctx.columns)
    rec["category"] = str(row.get(cols["category"]) or "")
    rec["lang"] = language(row, ctx, cols["lang"])
    rec.update(ctx.fixed)
    return rec


ADAPTERS: dict[str, Adapter] = {a.name: a for a in (
    Adapter("aya_redteaming", "CohereForAI/aya_redteaming", ("prompt", "language", "harm_category",
                                                              "global_or_local"), aya_redteaming),
    Adapter("dolly", "databricks/databricks-dolly-15k", ("instruction", "context", "response", "category"), dolly,
            english_only=True),
    Adapter("aya_dolly", "CohereForAI/aya_evaluation_suite", ("id", "inputs", "targets", "language"), aya_dolly),
    Adapter("beavertails", "PKU-Alignment/BeaverTails", ("prompt", "response", "category", "is_safe"), beavertails,
            english_only=True),
    Adapter("xstest", "Paul/XSTest", ("id", "prompt", "type", "label"), xstest, english_only=True),
    Adapter("ultrafeedback", "HuggingFaceH4/ultrafeedback_binarized", ("prompt_id", "prompt", "chosen", "rejected"),
            ultrafeedback, english_only=True),
    Adapter("polyguardprompts", "ToxicityPrompts/PolyGuardPrompts",
            ("id", "language", "prompt", "response", "prompt_harm_label", "response_refusal_label",
             "response_harm_label", "subcategory"), polyguardprompts),
    Adapter("multijail", "DAMO-NLP-SG/MultiJail", ("id", "tags", *MULTIJAIL_LANGUAGES), multijail),
    Adapter("columns", "(any)", CANONICAL, columns),
)}
