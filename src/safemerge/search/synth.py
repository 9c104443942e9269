"""Synthetic safety and domain data written by the merge pool (paper B, "One Bad Model Spoils the Bunch"): the
models are run here, with the generation and judges of :mod:`safemerge.evaluate`; the spec, the requests, the
filters and the datacard are :mod:`safemerge.data.synth`'s (see there for the method).

``synthesize(spec, out_dir)`` writes ``OUT/safety.jsonl``, ``OUT/domain.jsonl``, ``OUT/datacard.json`` and
``OUT/datacard.md`` (atomically); the search reads them as its objective data (docs/search.md). It first runs
``check_synth_spec`` (also ``safemerge synth --check``): every model, file and the judge, before any model loads.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safemerge.data.synth import (
    FilterStats,
    SynthSpec,
    balanced_take,
    check_synth_files,
    datacard_markdown,
    dedup,
    domain_requests,
    filter_questions,
    keep_refusal,
    lexicon_detect,
    load_synth_spec,
    make_record,
    pick_refusals,
    safety_requests,
    text_filter,
)
from safemerge.errors import ConfigError, InputError


def _generate(model_loc: str, prompts: list[str], settings: Any, what: str) -> list[str]:
    """Load one model, answer ``prompts`` through its chat template, free it."""
    from safemerge.evaluate.generate import generate

    lm = _load(model_loc)
    try:
        return generate(lm.model, lm.tokenizer, prompts, settings, description=what, progress=True)
    finally:
        del lm


def _load(loc: str) -> Any:
    """A local model dir through the evaluator's loader (a ``.gguf`` file or ``package:NAME`` converted to one
    first, once, cached), else a hub id in float32."""
    from safemerge.evaluate.generate import LoadedModel, load_model
    from safemerge.utils.gguf import resolve_model

    loc = str(resolve_model(loc))
    if Path(loc).is_dir():
        return load_model(loc)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(loc)
        model = AutoModelForCausalLM.from_pretrained(loc, dtype=torch.float32).eval()
    except (OSError, ValueError) as exc:
        raise InputError(f"{loc}: cannot load model ({str(exc).splitlines()[0]}); give a local folder or hub id")
    return LoadedModel(model, tok, None)


def _settings(spec: SynthSpec, sample: bool, seed_offset: int = 0) -> Any:
    """Generation settings: sampled questions (seeded ``spec.seed + seed_offset``) or greedy answers."""
    from safemerge.evaluate.generate import GenerationSettings

    s = spec.sampling
    if sample:
        return GenerationSettings(max_new_tokens=s.question_tokens, batch_size=s.batch_size, do_sample=True,
                                  temperature=s.temperature, top_p=s.top_p, seed=spec.seed + seed_offset)
    return GenerationSettings(max_new_tokens=s.answer_tokens, batch_size=s.batch_size, do_sample=False)


@dataclass
class SynthResult:
    """What :func:`synthesize` wrote: the output folder, the kept records of each kind and the datacard."""

    out_dir: Path
    safety: list[dict[str, Any]]
    domain: list[dict[str, Any]]
    datacard: dict[str, Any]


def _check_judge_name(spec: SynthSpec) -> None:
    from safemerge.evaluate.judges.base import JUDGES

    if spec.judge not in JUDGES:
        raise ConfigError(f"judge: unknown judge {spec.judge!r}; choose one of {', '.join(sorted(JUDGES))} "
                          "(rules for a real model's answers, world for the built-in world's models)")


def _judge(spec: SynthSpec) -> Any:
    """The safety judge of ``spec`` (its registry name and ``judge_options``), constructed; one-line errors."""
    from safemerge.evaluate.judges import get_judge

    _check_judge_name(spec)
    try:
        return get_judge(spec.judge, **spec.judge_options)
    except (TypeError, ValueError) as exc:  # a judge_options value of the wrong shape
        raise ConfigError(f"judge_options: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; see "
                          f"the options of judge {spec.judge!r} (docs/evaluation.md)") from None


def check_synth_spec(spec: SynthSpec | str | os.PathLike | dict[str, Any]) -> SynthSpec:
    """Everything a synth run needs, checked before any model loads (what ``safemerge synth --check`` runs):
    the spec, every model reference, examples files and per-language examples
    (:func:`safemerge.data.synth.check_synth_files`), the judge's name, options and pre-flight check (files, a
    server's reachability). Returns the spec, models as written (converted when the run loads them)."""
    if isinstance(spec, SynthSpec):
        check_synth_files(spec, Path.cwd())
    else:
        spec = load_synth_spec(spec, check=True)
    _check_judge_name(spec)
    if spec.safety is not None:  # only the safety set is judged
        _judge(spec).check()
    return spec


def synth_safety(spec: SynthSpec, detect: Callable[[str], str | None] | None) -> tuple[list[dict], dict]:
    """The safety set: the generator writes harmful questions, every pool model answers them, the judge keeps
    refusals (per question the first refusing pool model's answer, or with ``safety.pick: random`` a random
    refusing model's, seeded); returns the kept rows and their datacard."""
    from safemerge.evaluate.judges import SafetyItem

    assert spec.safety is not None
    judge = _judge(spec)
    judge.check()
    stats = FilterStats()
    reqs = safety_requests(spec)
    gen = spec.safety.generator
    texts = _generate(gen.model, [r["request"] for r in reqs], _settings(spec, True), "writing harmful questions")
    qs = filter_questions(reqs, texts, spec, stats, detect)
    refusals_by_model: Counter = Counter()
    candidates: dict[int, list[dict[str, Any]]] = {}
    filtered: dict[int, str] = {}  # question -> why the first refusal that failed the answer filters failed
    for m in spec.pool:
        answers = _generate(m.model, [q["question"] for q in qs], _settings(spec, False), f"answering ({m.label()})")
        verdicts = judge.judge_safety([SafetyItem(q["question"], a, q["lang"], "harmful") for q, a in zip(qs, answers)])
        for i, (q, a, v) in enumerate(zip(qs, answers, verdicts)):
            if not keep_refusal(v):
                continue
            reason = text_filter(a, q["lang"], spec.filters.max_answer_chars, spec.filters, detect)
            if reason is None:
                refusals_by_model[m.label()] += 1
                candidates.setdefault(i, []).append({"answer": a, "by": m.label()})
            else:
                filtered.setdefault(i, reason)
    chosen = pick_refusals(candidates, len(qs), spec.safety.pick, spec.seed)
    rows = []
    for i, q in enumerate(qs):
        if i not in chosen:  # refusals only in another language (or too short / long) are counted as such
            stats.drop(f"refusal_{filtered[i]}" if i in filtered else "no_model_refused", q["lang"])
            continue
        rows.append(make_record("safety", q, chosen[i]["answer"], gen.label(), chosen[i]["by"]))
    kept = balanced_take(rows, spec.safety.k, spec.languages)
    if len(rows) > len(kept):
        stats.dropped["over_k"] = Counter({"all": len(rows) - len(kept)})
    stats.kept.update(r["lang"] for r in kept)
    card = {"requested": spec.safety.k, "questions_written": len(reqs), **stats.to_dict(),
            "refusals_by_model": dict(refusals_by_model), "pick": spec.safety.pick,
            "kept_by_model": dict(Counter(r["provenance"]["answer_by"] for r in kept))}
    return kept, card


def synth_domain(spec: SynthSpec, detect: Callable[[str], str | None] | None) -> tuple[list[dict], dict]:
    """The domain set: each expert writes questions of its domain and answers them; refusals are dropped;
    returns the kept rows and their datacard."""
    from safemerge.data.world.lexicon import is_refusal

    assert spec.domain is not None
    stats = FilterStats()
    reqs = domain_requests(spec)
    rows: list[dict[str, Any]] = []
    for k, e in enumerate(spec.domain.experts):
        mine = [r for r in reqs if r["expert"] == e.label()]
        texts = _generate(e.model, [r["request"] for r in mine], _settings(spec, True, 1 + k),
                          f"writing {e.domain} questions ({e.label()})")
        qs = filter_questions(mine, texts, spec, stats, detect)
        answers = _generate(e.model, [q["question"] for q in qs], _settings(spec, False),
                            f"answering ({e.label()})")
        for q, a in zip(qs, answers):
            reason = text_filter(a, q["lang"], spec.filters.max_answer_chars, spec.filters, detect)
            if reason is None and is_refusal(a):
                reason = "refused"
            if reason:
                stats.drop(f"answer_{reason}", q["lang"])
                continue
            rows.append(make_record("domain", q, a, e.label(), e.label()))
    if spec.filters.dedup:
        rows = dedup(rows, "prompt", stats, "across_experts")
    kept = balanced_take(rows, spec.domain.k, spec.languages)
    if len(rows) > len(kept):
        stats.dropped["over_k"] = Counter({"all": len(rows) - len(kept)})
    stats.kept.update(r["lang"] for r in kept)
    return kept, {"requested": spec.domain.k, "questions_written": len(reqs), **stats.to_dict()}


def synthesize(spec: SynthSpec | str | os.PathLike | dict[str, Any], out_dir: str | os.PathLike, *,
               check: bool = True) -> SynthResult:
    """Generate, filter and write the synthetic sets; returns the kept records and the datacard. Everything the
    run needs is checked first (:func:`check_synth_spec`; ``check=False``: the caller just did)."""
    from safemerge.utils.atomic import atomic_dir, atomic_write_json, atomic_write_jsonl, atomic_write_text

    if check or not isinstance(spec, SynthSpec):
        spec = check_synth_spec(spec)  # everything checked before the first model loads
    detect = lexicon_detect()
    safety, domain, card = [], [], {"spec": spec.model_dump(mode="json")}
    if spec.safety is not None:
        safety, card["safety"] = synth_safety(spec, detect)
    if spec.domain is not None:
        domain, card["domain"] = synth_domain(spec, detect)
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        if spec.safety is not None:
            atomic_write_jsonl(tmp / "safety.jsonl", safety)
        if spec.domain is not None:
            atomic_write_jsonl(tmp / "domain.jsonl", domain)
        atomic_write_json(tmp / "datacard.json", card)
        atomic_write_text(tmp / "datacard.md", datacard_markdown(card))
    return SynthResult(out, safety, domain, card)
