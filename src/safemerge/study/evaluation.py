"""Evaluation of the study's models against the base (``safemerge.evaluate.evaluate_model``), cached per model.

The summary kept for the report: ``{"overall": {metric: {value, lo, hi, n}}, "per_lang": {lang: {...}}}``, every
metric a fraction (harm_change a relative change), CIs from evaluate's bootstrap.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

from safemerge.study.stages import ModelEntry, StudyContext, fingerprint, unit

METRIC_KEYS = ("harm_rate", "harm_change", "alignment", "over_refusal", "acc_gen", "acc_mc", "win_rate",
               "wrong_language")


def eval_key_base(ctx: StudyContext) -> dict[str, Any]:
    """The part of every eval cache key shared by all models: eval settings, reference model, suite source."""
    return {
        "eval": ctx.spec.eval.model_dump(mode="json"),
        "reference": fingerprint(ctx.path("base")),
        "suite": _suite_id(ctx),
    }


def _suite_id(ctx: StudyContext) -> str:
    if ctx.spec.eval.suite == "world":
        return str(getattr(ctx.world, "root", ""))
    return ctx.spec.eval.suite


def _suite(ctx: StudyContext) -> Any:
    if ctx.spec.eval.suite == "world":
        return ctx.world.root
    return ctx.spec.eval.suite


def _judge_options(ctx: StudyContext) -> dict[str, Any]:
    ev = ctx.spec.eval
    opts: dict[str, Any] = {}
    if ev.judge_model:
        opts["model"] = ev.judge_model
    if ev.judge_url:
        opts["base_url"] = ev.judge_url
    return opts


def _plain(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if is_dataclass(obj):
        return asdict(obj)  # type: ignore[arg-type]
    return obj


def summarize(report: Any, langs: list[str]) -> dict[str, Any]:
    """The report's overall and per-language metric estimates as plain dicts."""
    def block(src: Any) -> dict[str, Any]:
        src = _plain(src) or {}
        return {k: _plain(src[k]) for k in METRIC_KEYS if k in src and src[k] is not None}

    d = _plain(report)
    per = d.get("per_lang") or d.get("languages") or {}
    return {"overall": block(d.get("overall")), "per_lang": {lang: block(per[lang]) for lang in langs if lang in per}}


def evaluate_entry(ctx: StudyContext, entry: ModelEntry, base_key: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one model (cached); returns the unit record with ``summary`` and ``seconds``."""
    ev = ctx.spec.eval
    is_base = entry.name == "base"

    def compute() -> dict[str, Any]:
        from safemerge.evaluate import evaluate_model

        report = evaluate_model(
            str(entry.path),
            suite=_suite(ctx),
            judge=ev.judge,
            reference=str(ctx.path("base")),
            judge_options=_judge_options(ctx),
            langs=list(ctx.spec.languages),
            limit=ev.limit,
            max_new_tokens=ev.max_new_tokens,
            seed=ev.seed,
        )
        return {"summary": summarize(report, list(ctx.spec.languages)), "is_base": is_base}

    key = {**base_key, "model": fingerprint(entry.path)}
    return unit(ctx, f"eval-{entry.name}", key, compute)
