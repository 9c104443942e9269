"""The ``safemerge data prepare`` spec: which datasets (sources, each read by an adapter) become which files
(outputs). Validated completely (names, references between outputs, languages, adapters, filters) before any
dataset is read. See docs/data.md for the format and ``examples/data_aya.yaml`` for a complete spec.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from safemerge import DEFAULT_SAFETY_FRACTION, LANGUAGES
from safemerge.data.prepare.adapters import ADAPTERS, CANONICAL, FLAG_FIELDS
from safemerge.data.prepare.languages import lang_code
from safemerge.data.prepare.select import Where
from safemerge.utils.config import StrictModel, load_spec_model

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RECORD_FIELDS = (*CANONICAL, "source")  # what an output's `where:` may test
RESERVED = ("datacard", "prepare")  # file stems the command writes itself


def _check_where(where: dict[str, Any], allowed: tuple[str, ...] | None) -> dict[str, Any]:
    for col, value in where.items():
        if allowed is not None and col not in allowed:
            raise ValueError(f"where: {col!r} is not a record field; use one of {', '.join(allowed)} (filter the "
                             "dataset's own columns in the source's where:)")
        if isinstance(value, list) and not value:
            raise ValueError(f"where.{col}: empty list matches nothing; give at least one value")
    return where


class SourceSpec(StrictModel):
    """One dataset: a local file/folder (``path``) or a hub id (``hub``), read by ``adapter``."""

    adapter: str = Field(description=f"the dataset's adapter: {', '.join(ADAPTERS)}")
    path: str | None = Field(None, description="local JSONL/JSON/CSV/Parquet file (.gz too), a folder of them or a "
                                               "datasets.save_to_disk folder; relative to the spec's folder")
    hub: str | None = Field(None, description="Hugging Face dataset id (needs the hub or its local cache)")
    config: str | None = Field(None, description="hub dataset config (subset)")
    split: str | None = Field(None, description="hub / save_to_disk split (hub default: train)")
    files: str | None = Field(None, description="glob of the files to read inside a `path` folder")
    lang: str | None = Field(None, description="language of every row when the dataset has no language column "
                                               "(e.g. a translated copy of an English dataset)")
    where: Where = Field(default_factory=dict, description="keep rows whose (dataset) column equals a value / is "
                                                          "in a list")
    columns: dict[str, str] = Field(default_factory=dict, description="adapter 'columns': record field -> column")
    fixed: dict[str, bool | str] = Field(default_factory=dict, description="record fields set on every row "
                                                                           "(harmful, safe, refusal, category)")

    @field_validator("adapter")
    @classmethod
    def _adapter(cls, v: str) -> str:
        if v not in ADAPTERS:
            raise ValueError(f"unknown adapter {v!r}; use one of {', '.join(ADAPTERS)}")
        return v

    @field_validator("lang")
    @classmethod
    def _lang(cls, v: str | None) -> str | None:
        if v is not None and lang_code(v) is None:
            raise ValueError(f"unknown language {v!r}; use a code like en, fr, es, ru, hi, ar")
        return None if v is None else lang_code(v)

    @field_validator("where")
    @classmethod
    def _where(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_where(v, None)

    @field_validator("fixed")
    @classmethod
    def _fixed(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k, value in v.items():
            if k not in (*FLAG_FIELDS, "category"):
                raise ValueError(f"fixed: {k!r} cannot be fixed; use harmful, safe, refusal or category")
            if (k == "category") != isinstance(value, str):
                raise ValueError(f"fixed.{k}: must be {'text' if k == 'category' else 'true or false'}")
        return v

    @model_validator(mode="after")
    def _check(self) -> SourceSpec:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of path (local files) or hub (a Hugging Face dataset id)")
        if self.files is not None and self.path is None:
            raise ValueError("files selects files inside a local folder; it needs path")
        if self.columns and self.adapter != "columns":
            raise ValueError(f"columns is the mapping of adapter 'columns'; adapter {self.adapter!r} knows its "
                             "dataset's columns (drop columns)")
        bad = sorted(set(self.columns) - set(CANONICAL))
        if bad:
            raise ValueError(f"columns: {bad[0]!r} is not a record field; map {', '.join(CANONICAL)}")
        return self


class _Selection(StrictModel):
    """Records of some sources, filtered (``where``), de-duplicated and sampled per language."""

    from_: list[str] = Field(alias="from", min_length=1, description="source names")
    where: Where = Field(default_factory=dict, description=f"record filter ({', '.join(RECORD_FIELDS)})")
    sample: int | None = Field(None, ge=1, description="at most this many records per language (seeded)")
    seed: int | None = Field(None, description="sampling seed (default: the spec's seed)")
    per_language: bool = Field(False, description="one file per language, NAME_<lang>.jsonl")

    @field_validator("where")
    @classmethod
    def _where(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_where(v, RECORD_FIELDS)


class SftOutput(_Selection):
    """prompt/completion rows (``safemerge train sft`` data, search objective data)."""

    type: Literal["sft"]
    dedup: bool = Field(False, description="drop records whose prompt repeats one already kept (same language)")


class DpoOutput(_Selection):
    """prompt/chosen/rejected rows (``safemerge train dpo`` data)."""

    type: Literal["dpo"]
    pairs: Literal["given", "by_prompt"] = Field(
        "given", description="given: the dataset's chosen/rejected; by_prompt: for each prompt, a safe response "
                             "(chosen) against an unsafe one (rejected), e.g. BeaverTails")


class PromptsOutput(_Selection):
    """Evaluation prompts (a suite's set): id, lang, prompt, category (+ completion as the reference of general
    prompts)."""

    type: Literal["prompts"]
    kind: Literal["harmful", "benign", "general"] = Field(description="the eval set kind (what is measured)")
    dedup: bool = Field(True, description="drop repeated prompts (same language)")


class MixtureOutput(StrictModel):
    """Paper A's data mixtures: per language, a fixed budget with ``fraction`` of safety rows."""

    type: Literal["mixture"]
    stage: Literal["sft", "dpo"] = "sft"
    general: list[str] = Field(min_length=1, description="earlier outputs of this stage: the general rows")
    safety: list[str] = Field(min_length=1, description="earlier outputs of this stage: the safety rows")
    fractions: list[float] = Field(default_factory=lambda: [0.0, DEFAULT_SAFETY_FRACTION, 1.0], min_length=1,
                                   description="safety fractions, one file each: NAME<percent>.jsonl")
    examples_per_language: int | None = Field(None, ge=1, description="cap of the per-language budget")
    per_language: bool = Field(False, description="one file per language too: NAME<percent>_<lang>.jsonl "
                                                  "(the monolingual experts' data)")
    seed: int | None = None

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        for f in v:
            if not 0.0 <= f <= 1.0:
                raise ValueError(f"fraction {f} must be between 0 and 1 (0.15 = 15 % safety data)")
        if len({pct(f) for f in v}) != len(v):
            raise ValueError("fractions lists a fraction twice")
        return v


class SuiteOutput(StrictModel):
    """An evaluation suite YAML (``safemerge eval --suite NAME.yaml``) over earlier ``prompts`` outputs."""

    type: Literal["suite"]
    sets: list[str] = Field(min_length=1, description="earlier prompts outputs")
    max_new_tokens: int = Field(256, ge=1)


Output = Annotated[Union[SftOutput, DpoOutput, PromptsOutput, MixtureOutput, SuiteOutput],
                   Field(discriminator="type")]


def pct(fraction: float) -> str:
    """``0.15`` -> ``"15"`` (the file name part of a mixture, as in the study's model names)."""
    return f"{round(fraction * 100, 2):g}"


class PrepareSpec(StrictModel):
    """A whole ``safemerge data prepare`` run."""

    out: str | None = Field(None, description="output folder, relative to the spec (--out overrides)")
    languages: list[str] = Field(default_factory=lambda: list(LANGUAGES), min_length=1)
    seed: int = 0
    sources: dict[str, SourceSpec] = Field(min_length=1)
    outputs: dict[str, Output] = Field(min_length=1)

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: list[str]) -> list[str]:
        codes = []
        for lang in v:
            code = lang_code(lang)
            if code is None:
                raise ValueError(f"unknown language {lang!r}; use codes like {', '.join(LANGUAGES)}")
            codes.append(code)
        if len(set(codes)) != len(codes):
            raise ValueError("languages lists a language twice")
        return codes

    @model_validator(mode="after")
    def _references(self) -> PrepareSpec:
        for kind, names in (("sources", self.sources), ("outputs", self.outputs)):
            for name in names:
                if not NAME.match(name):
                    raise ValueError(f"{kind}.{name}: names may only use letters, digits, '_', '.', '-'")
        seen: dict[str, str] = {}
        for name, out in self.outputs.items():
            where = f"outputs.{name}"
            if isinstance(out, (SftOutput, DpoOutput, PromptsOutput)):
                for s in out.from_:
                    if s not in self.sources:
                        raise ValueError(f"{where}.from: {s!r} is not a source; sources are "
                                         f"{', '.join(self.sources)}")
            elif isinstance(out, MixtureOutput):
                for part in ("general", "safety"):
                    for ref in getattr(out, part):
                        if seen.get(ref) != out.stage:
                            raise ValueError(f"{where}.{part}: {ref!r} is not an earlier {out.stage} output; list "
                                             f"{out.stage} outputs above this one")
            else:
                for ref in out.sets:
                    if seen.get(ref) != "prompts":
                        raise ValueError(f"{where}.sets: {ref!r} is not an earlier prompts output; list prompts "
                                         "outputs above this one")
            seen[name] = out.type
        files = [f for name, out in self.outputs.items() for f, _, _ in output_files(name, out, self.languages)]
        dup = next((f for f in files if files.count(f) > 1), None)
        if dup is not None:
            raise ValueError(f"two outputs write {dup}; rename one of them")
        clash = next((f for f in files if f.split(".")[0] in RESERVED), None)
        if clash is not None:
            raise ValueError(f"output file {clash} would overwrite the datacard; rename that output")
        return self


def output_files(name: str, out: Any, languages: list[str]) -> list[tuple[str, str | None, float | None]]:
    """The files one output writes: ``(file name, language or None, safety fraction or None)``."""
    if isinstance(out, SuiteOutput):
        return [(f"{name}.yaml", None, None)]
    if isinstance(out, MixtureOutput):
        files = []
        for f in out.fractions:
            files.append((f"{name}{pct(f)}.jsonl", None, f))
            if out.per_language:
                files += [(f"{name}{pct(f)}_{lang}.jsonl", lang, f) for lang in languages]
        return files
    if out.per_language:
        return [(f"{name}.jsonl", None, None)] + [(f"{name}_{lang}.jsonl", lang, None) for lang in languages]
    return [(f"{name}.jsonl", None, None)]


def load_prepare_spec(source: str | os.PathLike | dict[str, Any]) -> tuple[PrepareSpec, Path]:
    """Parse and validate a spec (YAML path or mapping); returns it and the folder relative paths start from."""
    return load_spec_model(source, PrepareSpec, "data prepare spec", "languages, sources, outputs")
