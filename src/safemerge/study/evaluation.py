"""Evaluation of the study's models against the base (``safemerge.evaluate.evaluate_model``), cached per model.

The summary kept for the report: ``{"overall": {metric: {value, lo, hi, n}}, "per_lang": {lang: {...}}}``, every
metric a fraction (harm_change a relative change), CIs from evaluate's bootstrap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safemerge.study.stages import ModelEntry, StudyContext, fingerprint, unit
from safemerge.utils.hashing import hash_file, hash_obj

METRIC_KEYS = ("harm_rate", "harm_change", "alignment", "over_refusal", "acc_gen", "acc_mc", "win_rate",
               "wrong_language", "refusal_rate", "nonanswer_rate", "helpful_rate")  # the last three: rules judge


def eval_key_base(ctx: StudyContext) -> dict[str, Any]:
    """The part of every eval cache key shared by all models: eval settings, reference model, suite source."""
    return {
        "eval": ctx.spec.eval.model_dump(mode="json"),
        "reference": fingerprint(ctx.path("base")),
        "suite": _suite_id(ctx),
    }


def _suite_id(ctx: StudyContext) -> str:
    """Content identity of the prompts: the world's world.json, or the suite file."""
    if ctx.spec.eval.suite == "world":
        return hash_file(Path(ctx.world.root) / "world.json")
    p = Path(ctx.spec.eval.suite)
    return hash_file(p) if p.is_file() else str(p)


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


def summarize(report: Any, langs: list[str]) -> dict[str, Any]:
    """The report's overall ("all") and per-language metric estimates as plain dicts."""
    summary = report.summary

    def block(lang: str) -> dict[str, Any]:
        src = summary.get(lang) or {}
        return {k: dict(src[k]) for k in METRIC_KEYS if k in src}

    return {"overall": block("all"), "per_lang": {lang: block(lang) for lang in langs if lang in summary}}


def _reference(ctx: StudyContext) -> Any:
    """The base model's saved EvalReport (evaluated first), else the base model dir."""
    from safemerge.evaluate import EvalReport

    saved = ctx.out / "evals" / "base" / "results.json"
    return EvalReport.load(saved) if saved.is_file() else str(ctx.path("base"))


def evaluate_entry(ctx: StudyContext, entry: ModelEntry, base_key: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one model against the base (cached); returns the unit record with ``summary`` and ``seconds``.

    The full report (every prompt, answer and verdict) is saved to ``<out>/evals/<name>/``.
    """
    ev = ctx.spec.eval
    is_base = entry.name == "base"

    def compute() -> dict[str, Any]:
        from safemerge.evaluate import evaluate_model

        report = evaluate_model(
            str(entry.path),
            suite=_suite(ctx),
            judge=ev.judge,
            reference=None if is_base else _reference(ctx),
            judge_options=_judge_options(ctx),
            langs=list(ctx.spec.languages),
            limit=ev.limit,
            max_new_tokens=ev.max_new_tokens,
            seed=ev.seed,
            cache_root=ctx.out / "eval_cache",
            progress=False,  # the study's own progress display is live
        )
        report.save(ctx.out / "evals" / entry.name)
        return {"summary": summarize(report, list(ctx.spec.languages)), "report": f"evals/{entry.name}"}

    key = {**base_key, "model": fingerprint(entry.path)}
    twin = ctx.evaluated.get(hash_obj(key))
    if twin is not None:  # the same model under another name (e.g. linear at w = 0 is the general expert)
        return unit(ctx, f"eval-{entry.name}", key, lambda: {k: twin[k] for k in ("summary", "report")})
    rec = unit(ctx, f"eval-{entry.name}", key, compute)
    ctx.evaluated[hash_obj(key)] = rec
    return rec
