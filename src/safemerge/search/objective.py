"""The search objective: L = w_s * L_safety + alpha * L_domain (+ extra evaluation terms).

Losses are answer-only token cross-entropy (:func:`safemerge.evaluate.loss.answer_loss_by_lang`) on records
tokenized once. With ``language_margin`` a candidate whose safety loss on some language exceeds the safest pool
model's loss on that language by more than the margin is infeasible: its ``violation`` (summed excess) is > 0 and
the optimiser sees ``loss = objective + PENALTY + violation``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from safemerge.search.spec import ObjectiveSpec, read_examples

PENALTY = 10.0


@dataclass(frozen=True)
class ObjectiveData:
    safety: list[Any]  # TokenizedPair
    domain: list[Any]
    ref_safety_by_lang: dict[str, float] = field(default_factory=dict)  # safest pool model's loss per language


def read_sets(spec: ObjectiveSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Objective records (validated columns); no tokenizer needed, so this runs before any model is loaded."""
    need_lang = spec.language_margin is not None
    safety = [r for p in spec.safety for r in read_examples(p, spec.max_examples, need_lang)]
    domain = [r for p in spec.domain for r in read_examples(p, spec.max_examples)]
    return safety, domain


def tokenize_sets(tokenizer: Any, safety: list[dict[str, Any]], domain: list[dict[str, Any]],
                  max_length: int = 1024) -> ObjectiveData:
    from safemerge.evaluate.loss import tokenize_records

    return ObjectiveData(tokenize_records(tokenizer, safety, max_length, "objective.safety"),
                         tokenize_records(tokenizer, domain, max_length, "objective.domain"))


def losses(model: Any, tokenizer: Any, data: ObjectiveData, batch_size: int) -> dict[str, dict[str, float]]:
    """``{"safety": {lang: loss, "all": loss}, "domain": {...}}`` on the model as it is now."""
    from safemerge.evaluate.loss import answer_loss_by_lang

    out: dict[str, dict[str, float]] = {}
    if data.safety:
        out["safety"] = answer_loss_by_lang(model, tokenizer, data.safety, batch_size)
    if data.domain:
        out["domain"] = answer_loss_by_lang(model, tokenizer, data.domain, batch_size)
    return out


def combine(spec: ObjectiveSpec, parts: dict[str, dict[str, float]], ref_safety_by_lang: dict[str, float],
            extra: dict[str, float] | None = None) -> dict[str, Any]:
    """Scalar objective, penalised loss and constraint violation from the per-language losses (pure)."""
    safety = parts.get("safety", {}).get("all", 0.0)
    domain = parts.get("domain", {}).get("all", 0.0)
    objective = (spec.safety_weight * safety if spec.safety else 0.0) + (spec.alpha * domain if spec.domain else 0.0)
    for term in spec.extra:
        objective += term.weight * float((extra or {})[term.metric])
    violation = 0.0
    if spec.language_margin is not None:
        for lang, ref in ref_safety_by_lang.items():
            got = parts.get("safety", {}).get(lang)
            if got is not None:
                violation += max(0.0, got - (ref + spec.language_margin))
    loss = objective + (PENALTY + violation if violation > 0 else 0.0)
    return {"loss": loss, "objective": objective, "safety": safety, "domain": domain,
            "violation": violation, "feasible": violation == 0.0,
            "safety_by_lang": {k: v for k, v in parts.get("safety", {}).items() if k != "all"},
            "domain_by_lang": {k: v for k, v in parts.get("domain", {}).items() if k != "all"},
            "extra": dict(extra or {})}


def safest_by_lang(pool_parts: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """Per language, the lowest safety loss over the pool models."""
    best: dict[str, float] = {}
    for parts in pool_parts.values():
        for lang, v in parts.get("safety", {}).items():
            if lang != "all":
                best[lang] = min(v, best.get(lang, float("inf")))
    return best
