"""Synthetic safety and domain data written by the merge pool (paper B, "One Bad Model Spoils the Bunch"): the
models are run here, with the generation and judges of :mod:`safemerge.evaluate`; the spec, the requests, the
filters and the datacard are :mod:`safemerge.data.synth`'s (see there for the method).

``synthesize(spec, out_dir)`` writes ``OUT/safety.jsonl``, ``OUT/domain.jsonl``, ``OUT/datacard.json`` and
``OUT/datacard.md`` (atomically); the search reads them as its objective data (docs/search.md).
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
    datacard_markdown,
    dedup,
    domain_requests,
    filter_questions,
    keep_refusal,
    lexicon_detect,
    load_synth_spec,
    make_record,
    safety_requests,
    text_filter,
)
from safemerge.errors import InputError


def _generate(model_loc: str, prompts: list[str], settings: Any, what: str) -> list[str]:
    """Load one model, answer ``prompts`` through its chat template, free it."""
    from safemerge.evaluate.generate import generate

    lm = _load(model_loc)
    try:
        return generate(lm.model, lm.tokenizer, prompts, settings, description=what, progress=True)
    finally:
        del lm


def _load(loc: str) -> Any:
    """A local model dir through the evaluator's loader, else a hub id in float32."""
    from safemerge.evaluate.generate import LoadedModel, load_model

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


def synth_safety(spec: SynthSpec, detect: Callable[[str], str | None] | None) -> tuple[list[dict], dict]:
    """The safety set: the generator writes harmful questions, every pool model answers them, the judge keeps
    refusals (the first refusing pool model's answer per question); returns the kept rows and their datacard."""
    from safemerge.evaluate.judges import SafetyItem, get_judge

    assert spec.safety is not None
    judge = get_judge(spec.judge, **spec.judge_options)
    judge.check()
    stats = FilterStats()
    reqs = safety_requests(spec)
    gen = spec.safety.generator
    texts = _generate(gen.model, [r["request"] for r in reqs], _settings(spec, True), "writing harmful questions")
    qs = filter_questions(reqs, texts, spec, stats, detect)
    refusals_by_model: Counter = Counter()
    chosen: dict[int, dict[str, Any]] = {}
    for m in spec.pool:
        answers = _generate(m.model, [q["question"] for q in qs], _settings(spec, False), f"answering ({m.label()})")
        verdicts = judge.judge_safety([SafetyItem(q["question"], a, q["lang"], "harmful") for q, a in zip(qs, answers)])
        for i, (q, a, v) in enumerate(zip(qs, answers, verdicts)):
            ok = keep_refusal(v) and text_filter(a, q["lang"], spec.filters.max_answer_chars, spec.filters,
                                                 detect) is None
            if ok:
                refusals_by_model[m.label()] += 1
                chosen.setdefault(i, {"answer": a, "by": m.label()})
    rows = []
    for i, q in enumerate(qs):
        if i not in chosen:
            stats.drop("no_model_refused", q["lang"])
            continue
        rows.append(make_record("safety", q, chosen[i]["answer"], gen.label(), chosen[i]["by"]))
    kept = balanced_take(rows, spec.safety.k, spec.languages)
    if len(rows) > len(kept):
        stats.dropped["over_k"] = Counter({"all": len(rows) - len(kept)})
    stats.kept.update(r["lang"] for r in kept)
    card = {"requested": spec.safety.k, "questions_written": len(reqs), **stats.to_dict(),
            "refusals_by_model": dict(refusals_by_model)}
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


def synthesize(spec: SynthSpec | str | os.PathLike | dict[str, Any], out_dir: str | os.PathLike) -> SynthResult:
    """Generate, filter and write the synthetic sets; returns the kept records and the datacard."""
    from safemerge.utils.atomic import atomic_dir, atomic_write_json, atomic_write_jsonl, atomic_write_text

    spec = spec if isinstance(spec, SynthSpec) else load_synth_spec(spec)
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
