"""Evaluation of the study's models against the base (``safemerge.evaluate.evaluate_model``), cached per model.

Two splits: every choice the study makes (a merge weight, a language subset) is taken on the **selection split**
(the world's val split, or ``eval.select_suite``), and every number the report shows is on the **report split**
(the world's test split, or ``eval.suite``). A study whose suite has no selection split selects on the report
split and says so (:func:`selection_split`).

The summary kept for the report: ``{"overall": {metric: {value, lo, hi, n}}, "per_lang": {lang: {...}}}``, every
metric a fraction (harm_change a relative change), CIs from evaluate's bootstrap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safemerge.evaluate.metric_table import METRICS
from safemerge.study.context import StudyContext, cached_unit, fingerprint
from safemerge.study.names import ModelEntry
from safemerge.utils.hashing import hash_file, hash_obj

METRIC_KEYS = tuple(k for k, m in METRICS.items() if m.study)  # what the study keeps of each evaluation


REPORT, SELECT = "test", "val"  # the two evaluations of every model: reported numbers, and the study's choices


def selection_split(ctx: StudyContext) -> str:
    """The split the study's choices are taken on: "val", or "test" when the suite has no selection split."""
    ev = ctx.spec.eval
    return SELECT if ev.suite == "world" or ev.select_suite is not None else REPORT


def eval_key_base(ctx: StudyContext, split: str = REPORT) -> dict[str, Any]:
    """The part of every eval cache key shared by all models: eval settings, reference model, suite source."""
    key = {
        "eval": ctx.spec.eval.model_dump(mode="json"),
        "reference": fingerprint(ctx.path("base")),
        "suite": _suite_id(ctx, split),
    }
    placement = _placement(ctx)
    if not placement.exact_fp32:  # bf16 / fp16 / TF32 answers are other answers
        key["dtype"] = placement.dtype
    return key if split == REPORT else {**key, "split": split}


def _suite_source(ctx: StudyContext, split: str) -> str:
    ev = ctx.spec.eval
    if split == SELECT and ev.suite != "world" and ev.select_suite is not None:
        return str(ev.select_suite)
    return ev.suite


def _suite_id(ctx: StudyContext, split: str) -> str:
    """Content identity of the prompts: the world's world.json, or the suite file."""
    src = _suite_source(ctx, split)
    if src == "world":
        return hash_file(Path(ctx.world.root) / "world.json")
    p = Path(src)
    return hash_file(p) if p.is_file() else src


def _suite(ctx: StudyContext, split: str) -> Any:
    src = _suite_source(ctx, split)
    if src == "world":
        from safemerge.evaluate.suites import world_suite

        return world_suite(ctx.world.root, split=split)
    return src


def _judge_options(ctx: StudyContext) -> dict[str, Any]:
    ev = ctx.spec.eval
    opts: dict[str, Any] = dict(ev.judge_options)
    if ev.judge_model:
        opts["model"] = ev.judge_model
    if ev.judge_url:
        opts["base_url"] = ev.judge_url
    return opts


def study_summary(report: Any, langs: list[str]) -> dict[str, Any]:
    """The report's overall ("all") and per-language metric estimates as plain dicts."""
    summary = report.summary

    def block(lang: str) -> dict[str, Any]:
        src = summary.get(lang) or {}
        return {k: dict(src[k]) for k in METRIC_KEYS if k in src}

    return {"overall": block("all"), "per_lang": {lang: block(lang) for lang in langs if lang in summary}}


def _placement(ctx: StudyContext) -> Any:
    """Where and in which dtype the study's models are evaluated (``device`` / ``dtype`` of the spec)."""
    from safemerge.utils.device import resolve

    return resolve(ctx.spec.device, ctx.spec.dtype, "device", "dtype")


def _report_dir(ctx: StudyContext, name: str, split: str) -> Path:
    return ctx.out / "evals" / (name if split == REPORT else f"{name}.{split}")


def _reference(ctx: StudyContext, split: str) -> Any:
    """The base model's saved EvalReport (evaluated first), else the base model dir."""
    from safemerge.evaluate import EvalReport

    saved = _report_dir(ctx, "base", split) / "results.json"
    return EvalReport.load(saved) if saved.is_file() else str(ctx.path("base"))


def evaluate_entry(ctx: StudyContext, entry: ModelEntry, split: str = REPORT) -> dict[str, Any]:
    """Evaluate one model against the base on ``split`` (cached); returns the unit record with ``summary`` and
    ``seconds``. The full report (every prompt, answer and verdict) is saved to ``<out>/evals/<name>[.val]/``.
    """
    if split == SELECT and selection_split(ctx) == REPORT:  # no selection split: the choices use the report's
        split = REPORT
    ev = ctx.spec.eval
    base_key = eval_key_base(ctx, split)
    is_base = entry.name == "base"
    limit = ev.limit if split == REPORT else ev.select_limit

    def compute() -> dict[str, Any]:
        from safemerge.evaluate import evaluate_model
        from safemerge.evaluate.generate import model_source

        placement = _placement(ctx)
        report = evaluate_model(
            model_source(entry.path, placement),
            suite=_suite(ctx, split),
            judge=ev.judge,
            reference=None if is_base else _reference(ctx, split),
            judge_options=_judge_options(ctx),
            langs=list(ctx.spec.languages),
            limit=limit,
            max_new_tokens=ev.max_new_tokens,
            seed=ev.seed,
            cache_root=ctx.out / ("eval_cache" if placement.exact_fp32 else f"eval_cache-{placement.dtype}"),
            progress=False,  # the study's own progress display is live
        )
        report.save(_report_dir(ctx, entry.name, split))
        return {"summary": study_summary(report, list(ctx.spec.languages)),
                "report": ctx.rel(_report_dir(ctx, entry.name, split)), "split": split}

    key = {**base_key, "model": fingerprint(entry.path)}
    unit_name = f"eval-{entry.name}" if split == REPORT else f"eval{split}-{entry.name}"
    twin = ctx.evaluated.get(hash_obj(key))
    if twin is not None:  # the same model under another name (e.g. linear at w = 0 is the general expert)
        return cached_unit(ctx, unit_name, key, lambda: {k: twin[k] for k in ("summary", "report", "split")})
    rec = cached_unit(ctx, unit_name, key, compute)
    ctx.evaluated[hash_obj(key)] = rec
    return rec
