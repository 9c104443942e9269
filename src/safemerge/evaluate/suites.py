"""Evaluation suites: which prompt sets, from where, with which column mapping.

A suite is a list of eval sets; each set has a ``kind`` (``harmful``: harm_rate / alignment; ``benign``:
over_refusal; ``general``: acc_gen, acc_mc, win_rate) and a source: a local JSONL file or a Hugging Face
dataset, with a column mapping so that sets like Aya Red-teaming or Dolly-200 plug in::

    name: aya-redteam
    max_new_tokens: 128
    sets:
      - name: redteam
        kind: harmful
        hf_dataset: CohereForAI/aya_redteaming
        hf_split: english
        lang: en
        columns: {prompt: prompt, category: harm_category}
      - name: dolly
        kind: general
        path: data/dolly200.jsonl
        columns: {prompt: instruction, reference: response, lang: language}

A set can select rows before anything else: ``where:`` keeps the rows whose column equals a value
(``where: {is_safe: false}``) or is one of a list (``where: {category: [open_qa, brainstorming]}``), ``dedup: true``
drops rows whose prompt repeats an earlier row's (BeaverTails lists each prompt with several responses), and
``sample: N`` with ``seed:`` keeps a seeded random ``min(N, rows)`` rows per language (reproducible: same seed,
same rows, in file order). The rules are :mod:`safemerge.data.prepare.select`'s (shared with
``safemerge data prepare``). Then ``limit`` and the language filter apply; prompt ids keep the row's position in
the source, so a selection never renames a prompt::

      - name: beavertails-unsafe
        kind: harmful
        hf_dataset: PKU-Alignment/BeaverTails
        hf_split: 30k_test
        lang: en
        where: {is_safe: false}
        dedup: true
        sample: 500
        seed: 0
        columns: {prompt: prompt, category: null, id: null}

``suite="world"`` is the built-in world's test split (general, harmful, benign).

Loading a suite YAML (:meth:`EvalSuite.from_yaml`) reads and checks every local set at once
(:meth:`EvalSuite.check_local_sets`): what :meth:`EvalSuite.load_items` would refuse later, after models were
loaded, is a one-line error at load time. Hub sets are checked for structure only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from safemerge.data.prepare.select import Where, missing_columns, row_matches, sample_per_language
from safemerge.errors import ConfigError, InputError, config_error_from_validation
from safemerge.utils.config import StrictModel
from safemerge.utils.hashing import hash_obj

Kind = Literal["harmful", "benign", "general"]


@dataclass(frozen=True)
class EvalItem:
    """One prompt to evaluate."""

    id: str
    set: str
    kind: str
    lang: str
    prompt: str
    category: str = ""
    reference: str | None = None
    choices: tuple[str, ...] | None = None
    answer: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["choices"] = list(self.choices) if self.choices is not None else None
        return d


class ColumnMap(StrictModel):
    """Which source column holds each field (None: not present). ``prompt`` is required."""

    prompt: str = "prompt"
    lang: str | None = "lang"
    id: str | None = "id"
    category: str | None = "category"
    reference: str | None = "completion"
    choices: str | None = "choices"
    answer: str | None = "answer"


class EvalSetSpec(StrictModel):
    name: str
    kind: Kind
    path: str | None = None
    hf_dataset: str | None = None
    hf_config: str | None = None
    hf_split: str = "test"
    lang: str | None = Field(None, description="language of every row when there is no language column")
    columns: ColumnMap = ColumnMap()
    limit: int | None = Field(None, ge=1, description="at most this many prompts per language")
    where: Where = Field(default_factory=dict, description="keep rows whose column equals a value / is in a list")
    dedup: bool = Field(False, description="drop rows whose prompt repeats an earlier row's")
    sample: int | None = Field(None, ge=1, description="a seeded random subset of at most N rows per language")
    seed: int = Field(0, description="the seed of sample")

    @model_validator(mode="after")
    def _one_source(self) -> EvalSetSpec:
        if (self.path is None) == (self.hf_dataset is None):
            raise ValueError(f"set {self.name!r}: give exactly one of path or hf_dataset")
        for col, value in self.where.items():
            if isinstance(value, list) and not value:
                raise ValueError(f"set {self.name!r}: where.{col} is an empty list (matches nothing); give values")
        return self


class EvalSuite(StrictModel):
    name: str
    sets: list[EvalSetSpec] = Field(min_length=1)
    max_new_tokens: int = Field(64, ge=1)
    base_dir: str | None = Field(None, description="relative set paths are resolved against this directory")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> EvalSuite:
        p = Path(path)
        if not os.path.isfile(p):  # os.path: pathlib's raises for a name too long
            raise InputError(f"{p}: suite file not found; pass --suite world or a suite YAML path")
        from safemerge.utils.config import parse_yaml, read_text

        data = parse_yaml(read_text(p, "suite file"), p) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: a suite must be a mapping with name and sets; see docs/evaluation.md")
        data.setdefault("base_dir", str(p.parent.resolve()))
        try:
            suite = cls.model_validate(data)
        except ValidationError as exc:
            raise config_error_from_validation(exc, p) from None
        suite.check_local_sets(p)
        return suite

    def check_local_sets(self, source: str | os.PathLike = "suite") -> None:
        """What :meth:`load_items` would refuse later, checked now for every set read from a local file: the file
        exists and parses, its prompt / language / ``where`` columns are there, every selected row is valid, the
        selection keeps at least one row, and prompt ids are unique. Hub sets (``hf_dataset``) are checked for
        structure only (nothing is downloaded). One-line :class:`InputError` naming the suite file and the set."""
        ids: dict[str, str] = {}
        for spec in self.sets:
            if spec.path is None:
                continue
            rows, where = _read_rows(spec, self.base_dir)
            try:
                items = _to_items(spec, rows, where, None, spec.limit or 10**12)
            except InputError as exc:
                raise InputError(f"{source}: set {spec.name!r}: {exc}") from None
            if not items:
                what = "no rows" if not rows else f"none of its {len(rows)} rows pass where:/sample:"
                raise InputError(f"{source}: set {spec.name!r}: {where} has {what}; fix the file or the selection")
            for it in items:
                if it.id in ids:
                    raise InputError(f"{source}: duplicate prompt id {it.id!r} (sets {ids[it.id]!r} and "
                                     f"{spec.name!r}); ids must be unique across sets")
                ids[it.id] = spec.name

    def load_items(self, langs: list[str] | None = None, limit: int | None = None) -> list[EvalItem]:
        """All prompts of the suite (validated), optionally only some languages and at most ``limit`` per
        (set, language)."""
        items: list[EvalItem] = []
        for spec in self.sets:
            rows, source = _read_rows(spec, self.base_dir)
            items += _to_items(spec, rows, source, langs, min(x for x in (limit, spec.limit, 10**12) if x))
        ids = [it.id for it in items]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InputError(f"suite {self.name}: duplicate prompt id {dup!r}; ids must be unique across sets")
        return items


def _read_rows(spec: EvalSetSpec, base_dir: str | None) -> tuple[list[dict[str, Any]], str]:
    if spec.path is not None:
        p = Path(spec.path)
        if not p.is_absolute() and base_dir:
            p = Path(base_dir) / p
        if not os.path.isfile(p):  # os.path: pathlib's raises for a name too long
            raise InputError(f"{p}: eval set {spec.name!r} not found; fix its path in the suite (relative paths are "
                             "relative to the suite file)")
        from safemerge.utils.config import read_text

        rows = []
        for n, line in enumerate(read_text(p, f"eval set {spec.name!r}").split("\n"), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deeply
                    raise InputError(f"{p}:{n}: not valid JSON; fix or remove the line") from None
                if not isinstance(row, dict):
                    raise InputError(f"{p}:{n}: expected a JSON object (one record per line), got "
                                     f"{type(row).__name__}; fix or remove the line")
                rows.append(row)
        return rows, str(p)
    import datasets

    try:
        ds = datasets.load_dataset(spec.hf_dataset, spec.hf_config, split=spec.hf_split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; all mean "cannot load"
        raise InputError(
            f"hf_dataset {spec.hf_dataset!r} (split {spec.hf_split}): cannot load ({type(exc).__name__}); "
            "check the name/split or download it first"
        ) from None
    return [dict(r) for r in ds], f"hf:{spec.hf_dataset}:{spec.hf_split}"


def _to_items(spec: EvalSetSpec, rows: list[dict[str, Any]], source: str, langs: list[str] | None,
              limit: int) -> list[EvalItem]:
    cols = spec.columns
    if rows and cols.prompt not in rows[0]:
        raise InputError(f"{source}: column {cols.prompt!r} (prompt) missing; set columns.prompt in the suite "
                         f"(available: {', '.join(sorted(rows[0]))})")
    if spec.lang is None and rows and (cols.lang is None or cols.lang not in rows[0]):
        raise InputError(f"{source}: no language column {cols.lang!r}; set columns.lang or a constant lang: in "
                         f"set {spec.name!r}")

    def lang_of(row: dict[str, Any]) -> str:
        return str(row[cols.lang]) if cols.lang and cols.lang in row else str(spec.lang)

    per_lang: dict[str, int] = {}
    items = []
    for n, row in select_rows(spec, rows, source, lang_of):
        lang = lang_of(row)
        if langs and lang not in langs:
            continue
        if per_lang.get(lang, 0) >= limit:
            continue
        per_lang[lang] = per_lang.get(lang, 0) + 1
        prompt = row.get(cols.prompt)
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"{source}: row {n + 1} has an empty or non-text {cols.prompt!r}; fix the data")
        choices = row.get(cols.choices) if cols.choices else None
        answer = row.get(cols.answer) if cols.answer else None
        if choices is not None and not (isinstance(choices, list) and choices):
            raise InputError(f"{source}: row {n + 1}: {cols.choices!r} must be a non-empty list of answers, got "
                             f"{type(choices).__name__}; fix the data")
        if choices is not None and (isinstance(answer, bool) or not isinstance(answer, int)
                                    or not 0 <= answer < len(choices)):
            raise InputError(f"{source}: row {n + 1} has choices but answer {answer!r} is not a valid index")
        ref = row.get(cols.reference) if cols.reference else None
        items.append(EvalItem(
            id=f"{spec.name}/{row[cols.id]}" if cols.id and cols.id in row else f"{spec.name}/{n}",
            set=spec.name,
            kind=spec.kind,
            lang=lang,
            prompt=prompt,
            category=str(row.get(cols.category, "")) if cols.category else "",
            reference=ref if isinstance(ref, str) else None,
            choices=tuple(str(c) for c in choices) if choices else None,
            answer=answer if choices else None,
        ))
    return items


def select_rows(spec: EvalSetSpec, rows: list[dict[str, Any]], source: str,
                lang_of: Callable[[dict[str, Any]], str]) -> list[tuple[int, dict[str, Any]]]:
    """``(row number, row)`` of the rows the set's ``where`` / ``dedup`` (same prompt, same language) / ``sample``
    keep, in file order."""
    gone = missing_columns(rows, spec.where)
    if gone and rows:
        raise InputError(f"{source}: column {gone[0]!r} of where: is not in the data (available: "
                         f"{', '.join(sorted(rows[0]))}); fix where: in set {spec.name!r}")
    picked = [(n, r) for n, r in enumerate(rows) if row_matches(r, spec.where)]
    if spec.dedup:
        seen: set[tuple[str, str]] = set()
        unique = []
        for n, r in picked:
            key = (lang_of(r), str(r.get(spec.columns.prompt, "")).strip())
            if key not in seen:
                seen.add(key)
                unique.append((n, r))
        picked = unique
    if spec.sample is not None:
        picked = sample_per_language(picked, spec.sample, spec.seed, lambda nr: lang_of(nr[1]))
    return picked


def world_suite(world: Any = None, split: str = "test", max_new_tokens: int = 48) -> EvalSuite:
    """The built-in world's suite: ``{general,harmful,benign}.{split}.jsonl`` (default world if None)."""
    if world is None:
        from safemerge.data.world import default_world

        world = default_world()
    elif isinstance(world, (str, os.PathLike)):
        from safemerge.data.world import World

        world = World.load(world)
    return EvalSuite(
        name=f"world-{split}",
        max_new_tokens=max_new_tokens,
        sets=[EvalSetSpec(name=kind, kind=kind, path=str(world.path(kind, split))) for kind in
              ("harmful", "benign", "general")],
    )


def resolve_suite(suite: str | os.PathLike | EvalSuite) -> EvalSuite:
    """``"world"``, a world directory, a suite YAML path or an :class:`EvalSuite`."""
    if isinstance(suite, EvalSuite):
        return suite
    if str(suite) == "world":
        return world_suite()
    p = Path(suite)
    if os.path.isdir(p) and (p / "world.json").is_file():  # os.path: pathlib's raises for a name too long
        return world_suite(p)
    return EvalSuite.from_yaml(p)


def items_hash(items: list[EvalItem]) -> str:
    return hash_obj([it.to_dict() for it in items])
