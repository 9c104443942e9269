"""``prepare(spec)``: read every source through its adapter, build the outputs, write them and a datacard.

Order of work: validate the spec -> check the output folder -> read and convert every source (bad rows counted)
-> build every output in memory (an output without rows is an error naming the counts) -> write everything at
once (one atomic folder: a failure leaves the previous output untouched and nothing half-written).

Outputs (``NAME`` is the output's key in the spec)::

    NAME.jsonl                 sft      {id, lang, prompt, completion, kind, category, source}
                               dpo      {id, lang, prompt, chosen, rejected, kind, category, source}
                               prompts  {id, lang, prompt, category, source} (+ completion: a general prompt's
                                        reference answer)
    NAME_<lang>.jsonl          the same, one language (per_language: true)
    NAME<pct>.jsonl            mixture  the rows of an sft/dpo mixture with <pct> % safety rows
    NAME<pct>_<lang>.jsonl     mixture  its rows of one language (per_language: true: the monolingual experts)
    NAME.yaml                  suite    an evaluation suite over prompts outputs (safemerge eval --suite)
    datacard.json, datacard.md every source's rows read / bad (by reason, with the first locations) / filtered /
                               per language, every file's rows per language and what was dropped on the way

Mixtures follow the study's recipe (``safemerge.train.recipes``): per language a fixed budget ``n`` = the number
of general rows (capped by ``examples_per_language``), ``round(f * n)`` safety rows and the rest general, each a
seeded shuffled pass over its pool (cycled when the pool is smaller than its share); the rows are then shuffled.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safemerge.data.prepare.adapters import ADAPTERS, CANONICAL, MULTIJAIL_LANGUAGES, BadRow, Context
from safemerge.data.prepare.languages import lang_code
from safemerge.data.prepare.select import missing_columns, row_matches, sample_per_language
from safemerge.data.prepare.sources import read_source, resolve_path
from safemerge.data.prepare.spec import (
    DpoOutput,
    MixtureOutput,
    PrepareSpec,
    PromptsOutput,
    SftOutput,
    SourceSpec,
    SuiteOutput,
    load_prepare_spec,
    output_files,
    pct,
)
from safemerge.data.mixing import take_cycled
from safemerge.errors import InputError

MARKER = "safemerge data prepare"


@dataclass
class SourceReport:
    """What became of one source's rows (the datacard's source entry)."""

    adapter: str
    dataset: str
    location: str
    files: list[str]
    rows_read: int = 0
    records: int = 0
    bad: Counter = field(default_factory=Counter)
    bad_at: dict[str, list[str]] = field(default_factory=dict)
    filtered: Counter = field(default_factory=Counter)
    by_language: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def add_bad(self, reason: str, where: str, n: int = 1) -> None:
        self.bad[reason] += n
        at = self.bad_at.setdefault(reason, [])
        if len(at) < 5:
            at.append(where)

    def to_dict(self) -> dict[str, Any]:
        return {"adapter": self.adapter, "dataset": self.dataset, "location": self.location, "files": self.files,
                "rows_read": self.rows_read, "records": self.records, "bad_total": sum(self.bad.values()),
                "bad": dict(sorted(self.bad.items())), "bad_examples": dict(sorted(self.bad_at.items())),
                "filtered": dict(sorted(self.filtered.items())), "by_language": dict(sorted(self.by_language.items())),
                "notes": self.notes}

    def summary(self) -> str:
        bad = ", ".join(f"{k} {v}" for k, v in sorted(self.bad.items())) or "none"
        return f"{self.rows_read} rows read, {self.records} records, bad: {bad}"


@dataclass
class PrepareResult:
    """What :func:`prepare` wrote: the folder, each file's rows, the datacard."""

    out_dir: Path
    files: dict[str, list[dict[str, Any]] | str]
    datacard: dict[str, Any]


# ---------------------------------------------------------------------------------------------------------------
# sources -> records


def load_records(name: str, src: SourceSpec, spec: PrepareSpec, root: Path) -> tuple[list[dict[str, Any]],
                                                                                        SourceReport]:
    """The canonical records of one source (``lang`` a code of ``spec.languages``, ``id`` =
    ``<source>/<lang>/<the dataset's id or row number>``) and the report of what happened to every row."""
    raw = read_source(name, src, root)
    adapter = ADAPTERS[src.adapter]
    rep = SourceReport(src.adapter, adapter.dataset, raw.location, raw.files, rows_read=len(raw.rows))
    for reason, n in raw.bad.items():
        rep.rows_read += n
        rep.bad[reason] += n
        rep.bad_at[reason] = raw.bad_at[reason]
    rows = [r for _, r in raw.rows]
    gone = missing_columns(rows, src.where)
    if gone and rows:
        raise InputError(f"sources.{name}.where: column {gone[0]!r} is not in the dataset (columns: "
                         f"{', '.join(sorted(rows[0]))[:300]}); fix the filter")
    if src.adapter == "multijail" and rows and "text" not in rows[0]:
        absent = [lang for lang in spec.languages if lang not in rows[0]]
        if absent:
            rep.notes.append(f"no column for language(s) {', '.join(absent)} (MultiJail has "
                             f"{', '.join(MULTIJAIL_LANGUAGES)})")
    records: list[dict[str, Any]] = []
    languages = tuple(spec.languages)
    for i, (where, row) in enumerate(raw.rows):
        if src.where and not row_matches(row, src.where):
            rep.filtered["where"] += 1
            continue
        ctx = Context(i, src.lang, languages, src.columns, src.fixed)
        for res in adapter.convert(row, ctx):
            if isinstance(res, BadRow):
                rep.add_bad(res.reason, where)
                continue
            code = lang_code(res["lang"])
            if code is None:
                rep.add_bad(f"unknown_language:{str(res['lang'])[:40]}", where)
                continue
            if code not in languages:
                rep.filtered[f"other_language:{code}"] += 1
                continue
            rec = {f: res.get(f) for f in CANONICAL} | {"source": name}
            rec.update(src.fixed)
            rec["lang"], rec["id"], rec["category"] = code, f"{name}/{code}/{res['id']}", str(rec.get("category") or "")
            records.append(rec)
            rep.by_language[code] += 1
    rep.records = len(records)
    return records, rep


# ---------------------------------------------------------------------------------------------------------------
# records -> output rows


def _dedup(recs: list[dict[str, Any]], dropped: Counter) -> list[dict[str, Any]]:
    from safemerge.data.synth import normalize

    seen: set[tuple[str, str]] = set()
    out = []
    for r in recs:
        key = (r["lang"], normalize(r["prompt"]))
        if key in seen:
            dropped["duplicate_prompt"] += 1
            continue
        seen.add(key)
        out.append(r)
    return out


def _pairs_by_prompt(recs: list[dict[str, Any]], dropped: Counter) -> list[dict[str, Any]]:
    """One pair per (language, prompt) with a safe and an unsafe response: the first of each, in source order."""
    groups: dict[tuple[str, str], dict[bool, dict[str, Any]]] = {}
    for r in recs:
        if r.get("completion") is None or r.get("safe") is None:
            dropped["no_safety_label"] += 1
            continue
        groups.setdefault((r["lang"], r["prompt"]), {}).setdefault(bool(r["safe"]), r)
    out = []
    for g in groups.values():
        if True not in g or False not in g:
            dropped["no_pair"] += 1
            continue
        good, bad = g[True], g[False]
        out.append({**good, "chosen": good["completion"], "rejected": bad["completion"],
                    "harmful": True, "category": bad["category"] or good["category"]})
    return out


def _row(kind: str, r: dict[str, Any], prompts_kind: str | None = None) -> dict[str, Any]:
    head = {"id": r["id"], "lang": r["lang"], "prompt": r["prompt"]}
    tail = {"category": r["category"], "source": r["source"]}
    if kind == "prompts":
        ref = {"completion": r["completion"]} if prompts_kind == "general" and r.get("completion") else {}
        return head | tail | ref
    role = {"kind": "safety" if r.get("harmful") else "general"}
    if kind == "sft":
        return head | {"completion": r["completion"]} | role | tail
    return head | {"chosen": r["chosen"], "rejected": r["rejected"]} | role | tail


def select(name: str, out: SftOutput | DpoOutput | PromptsOutput, records: dict[str, list[dict[str, Any]]],
           seed: int) -> tuple[list[dict[str, Any]], Counter]:
    """The rows of an sft / dpo / prompts output and the counts of records dropped on the way (by reason)."""
    dropped: Counter = Counter()
    recs = [r for s in out.from_ for r in records[s]]
    if isinstance(out, SftOutput):
        keep = [r for r in recs if r.get("completion") is not None]
        dropped["no_completion"] += len(recs) - len(keep)
        recs = keep
    elif isinstance(out, DpoOutput) and out.pairs == "given":
        keep = [r for r in recs if r.get("chosen") is not None and r.get("rejected") is not None]
        dropped["no_chosen_rejected"] += len(recs) - len(keep)
        recs = keep
    if out.where:
        keep = [r for r in recs if row_matches(r, out.where)]
        dropped["where"] += len(recs) - len(keep)
        recs = keep
    if isinstance(out, DpoOutput) and out.pairs == "by_prompt":
        recs = _pairs_by_prompt(recs, dropped)
    if getattr(out, "dedup", False):
        recs = _dedup(recs, dropped)
    if out.sample is not None:
        n = len(recs)
        recs = sample_per_language(recs, out.sample, f"{out.seed if out.seed is not None else seed}:{name}",
                                   lambda r: r["lang"])
        dropped["not_sampled"] += n - len(recs)
    rows = [_row(out.type, r, getattr(out, "kind", None)) for r in recs]
    return _unique_ids(rows), +dropped


def _unique_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Suffix repeated ids (``x``, ``x#2``, ...): every file's ids are unique (suites require it)."""
    seen: Counter = Counter()
    out = []
    for r in rows:
        seen[r["id"]] += 1
        out.append(r if seen[r["id"]] == 1 else {**r, "id": f"{r['id']}#{seen[r['id']]}"})
    return out


def mixture(name: str, out: MixtureOutput, fraction: float, rows: dict[str, list[dict[str, Any]]],
            languages: list[str], seed: int) -> list[dict[str, Any]]:
    """The rows of one mixture file (the recipe is in the module doc)."""
    rng = random.Random(f"{out.seed if out.seed is not None else seed}:{name}:{pct(fraction)}")
    result: list[dict[str, Any]] = []
    for lang in languages:
        general = [r for g in out.general for r in rows[g] if r["lang"] == lang]
        safety = [r for s in out.safety for r in rows[s] if r["lang"] == lang]
        budget = len(general) or len(safety)
        if out.examples_per_language is not None:
            budget = min(budget, out.examples_per_language)
        n_safe = round(fraction * budget)
        if budget == 0:
            raise InputError(f"outputs.{name}: no general or safety rows in language {lang!r}; add a source in "
                             f"that language or drop it from languages")
        if n_safe and not safety:
            raise InputError(f"outputs.{name}: no safety rows in language {lang!r} for the {pct(fraction)} % "
                             f"mixture; add safety data in {lang} to {', '.join(out.safety)} or drop {lang}")
        if budget - n_safe and not general:
            raise InputError(f"outputs.{name}: no general rows in language {lang!r} for the {pct(fraction)} % "
                             f"mixture; add general data in {lang} to {', '.join(out.general)} or drop {lang}")
        result += take_cycled(general, budget - n_safe, rng) + take_cycled(safety, n_safe, rng)
    rng.shuffle(result)
    return _unique_ids(result)


def suite_yaml(name: str, out: SuiteOutput, spec: PrepareSpec) -> str:
    import yaml

    kinds = {n: o.kind for n, o in spec.outputs.items() if isinstance(o, PromptsOutput)}
    sets = [{"name": s, "kind": kinds[s], "path": f"{s}.jsonl"} for s in out.sets]
    head = (f"# Evaluation suite written by `safemerge data prepare` (see datacard.md next to it).\n"
            f"# Use: safemerge eval MODEL --suite {name}.yaml\n")
    return head + yaml.safe_dump({"name": name, "max_new_tokens": out.max_new_tokens, "sets": sets},
                                 sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------------------------------------
# the command


def _out_dir(spec: PrepareSpec, root: Path, out: str | os.PathLike | None) -> Path:
    if out is not None:
        return Path(out)
    if spec.out is None:
        raise InputError("no output folder: pass --out DIR or set out: in the spec")
    return resolve_path(spec.out, root)


def check_output_folder(spec: PrepareSpec, root: Path, out_dir: Path) -> None:
    """The output folder is replaced as a whole: it must be new, empty or an earlier ``data prepare`` output, and
    hold no source."""
    target = out_dir.resolve()
    for name, src in spec.sources.items():
        if src.path is not None:
            p = resolve_path(src.path, root).resolve()
            if p == target or target in p.parents:
                raise InputError(f"sources.{name}: {p} lies inside the output folder {out_dir}, which is replaced "
                                 "on every run; keep raw datasets elsewhere (e.g. raw/)")
    if os.path.isfile(out_dir):
        raise InputError(f"{out_dir}: output path is a file; choose a folder")
    if os.path.isdir(out_dir) and any(out_dir.iterdir()):
        card = out_dir / "datacard.json"
        try:
            ours = json.loads(card.read_text(encoding="utf-8")).get("prepared_by") == MARKER
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise InputError(f"{out_dir}: folder exists and was not written by `safemerge data prepare` (it is "
                             "replaced as a whole); remove it or choose another --out")


def check_sources(spec: PrepareSpec, root: Path) -> list[str]:
    """Cheap checks without reading (local paths exist); returns a line per source for ``--check``."""
    lines = []
    for name, src in spec.sources.items():
        if src.path is not None:
            p = resolve_path(src.path, root)
            if not os.path.exists(p):
                raise InputError(f"sources.{name}: {p} not found; download the dataset there (see docs/data.md) "
                                 "or fix 'path'")
            lines.append(f"{name}: {src.adapter} <- {p}")
        else:
            lines.append(f"{name}: {src.adapter} <- hub:{src.hub}")
    return lines


def prepare(source: str | os.PathLike | dict[str, Any], out: str | os.PathLike | None = None,
            show_progress: bool = False) -> PrepareResult:
    """Build every output of the spec ``source`` into ``out`` (default: the spec's ``out:``); see the module doc."""
    from safemerge import __version__
    from safemerge.utils.atomic import atomic_dir, atomic_write_json, atomic_write_jsonl, atomic_write_text
    from safemerge.utils.progress import make_progress

    spec, root = load_prepare_spec(source)
    out_dir = _out_dir(spec, root, out)
    check_output_folder(spec, root, out_dir)
    check_sources(spec, root)
    records: dict[str, list[dict[str, Any]]] = {}
    reports: dict[str, SourceReport] = {}
    with make_progress(disable=not show_progress) as prog:
        task = prog.add_task("reading sources", total=len(spec.sources))
        for name, src in spec.sources.items():
            prog.update(task, description=f"reading {name}")
            records[name], reports[name] = load_records(name, src, spec, root)
            prog.advance(task)
    files: dict[str, list[dict[str, Any]] | str] = {}
    outputs: dict[str, Any] = {}
    rows_of: dict[str, list[dict[str, Any]]] = {}
    for name, o in spec.outputs.items():
        entry: dict[str, Any] = {"type": o.type, "files": {}}
        if isinstance(o, SuiteOutput):
            files[f"{name}.yaml"] = suite_yaml(name, o, spec)
            entry["files"][f"{name}.yaml"] = {"sets": o.sets}
            outputs[name] = entry
            continue
        if isinstance(o, MixtureOutput):
            planned = output_files(name, o, spec.languages)
            for frac in o.fractions:
                rows = mixture(name, o, frac, rows_of, spec.languages, spec.seed)
                for fname, lang, f in planned:
                    if f == frac:
                        files[fname] = rows if lang is None else [r for r in rows if r["lang"] == lang]
            entry |= {"stage": o.stage, "general": o.general, "safety": o.safety}
        else:
            rows, dropped = select(name, o, records, spec.seed)
            if not rows:
                counts = "; ".join(f"{s}: {reports[s].summary()}" for s in o.from_)
                raise InputError(f"outputs.{name}: no records left (dropped: "
                                 f"{', '.join(f'{k} {v}' for k, v in dropped.items()) or 'none'}; {counts}); fix "
                                 "the sources or the filters")
            rows_of[name] = rows
            for fname, lang, _ in output_files(name, o, spec.languages):
                part = rows if lang is None else [r for r in rows if r["lang"] == lang]
                if not part:
                    raise InputError(f"outputs.{name}: no records in language {lang!r} for {fname}; add data in "
                                     "that language or set per_language: false")
                files[fname] = part
            entry["dropped"] = dict(sorted(dropped.items()))
            entry["from"] = o.from_
        for fname, lang, _ in output_files(name, o, spec.languages):
            rows = files[fname]
            assert isinstance(rows, list)
            by_lang = Counter(r["lang"] for r in rows)
            entry["files"][fname] = {"rows": len(rows), "by_language": dict(sorted(by_lang.items()))}
            if lang is None:
                entry["files"][fname]["missing_languages"] = [x for x in spec.languages if not by_lang[x]]
        outputs[name] = entry
    card = {"prepared_by": MARKER, "version": __version__, "languages": spec.languages, "seed": spec.seed,
            "sources": {n: r.to_dict() for n, r in reports.items()}, "outputs": outputs,
            "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True)}
    with atomic_dir(out_dir) as tmp:
        for fname, content in files.items():
            if isinstance(content, str):
                atomic_write_text(tmp / fname, content)
            else:
                atomic_write_jsonl(tmp / fname, content)
        atomic_write_json(tmp / "datacard.json", card)
        atomic_write_text(tmp / "datacard.md", datacard_markdown(card))
    return PrepareResult(out_dir, files, card)


def _counts(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"


def datacard_markdown(card: dict[str, Any]) -> str:
    """The datacard as a human-readable page."""
    lines = ["# Data card", "", f"Written by `{MARKER}` (safemerge {card['version']}); languages "
             f"{', '.join(card['languages'])}; seed {card['seed']}.", "", "## Sources", "",
             "| source | adapter (dataset) | rows read | records | bad rows | filtered | records per language |",
             "|---|---|---|---|---|---|---|"]
    for name, s in card["sources"].items():
        lines.append(f"| {name} | {s['adapter']} ({s['dataset']}) | {s['rows_read']} | {s['records']} | "
                     f"{s['bad_total']} | {_counts(s['filtered'])} | {_counts(s['by_language'])} |")
    for name, s in card["sources"].items():
        if s["bad"] or s["notes"]:
            lines += ["", f"### {name}: {s['location']}", ""]
            lines += [f"- bad rows, {reason}: {n} (first: {', '.join(s['bad_examples'].get(reason, []))})"
                      for reason, n in s["bad"].items()]
            lines += [f"- note: {note}" for note in s["notes"]]
    lines += ["", "## Outputs", "", "| file | type | rows | rows per language | dropped on the way |",
              "|---|---|---|---|---|"]
    for name, o in card["outputs"].items():
        for fname, f in o["files"].items():
            if o["type"] == "suite":
                lines.append(f"| {fname} | suite | - | sets: {', '.join(f['sets'])} | - |")
                continue
            miss = f.get("missing_languages")
            extra = f" (none in {', '.join(miss)})" if miss else ""
            lines.append(f"| {fname} | {o['type']} | {f['rows']} | {_counts(f['by_language'])}{extra} | "
                         f"{_counts(o.get('dropped', {}))} |")
    return "\n".join(lines) + "\n"


def summary_lines(res: PrepareResult) -> Iterable[str]:
    """What the CLI prints: each file with its rows, the bad rows per source, where the datacard is."""
    for name, s in res.datacard["sources"].items():
        bad = f"; bad rows {s['bad_total']} ({_counts(s['bad'])})" if s["bad_total"] else ""
        kept = f"; filtered {_counts(s['filtered'])}" if s["filtered"] else ""
        yield f"source {name}: {s['records']} records of {s['rows_read']} rows{bad}{kept}"
    for o in res.datacard["outputs"].values():
        for fname, f in o["files"].items():
            if "rows" in f:
                miss = f" (no rows in {', '.join(f['missing_languages'])})" if f.get("missing_languages") else ""
                yield f"wrote {res.out_dir / fname}: {f['rows']} rows{miss}"
            else:
                yield f"wrote {res.out_dir / fname}: suite of {', '.join(f['sets'])}"
    yield f"wrote {res.out_dir / 'datacard.md'}"
