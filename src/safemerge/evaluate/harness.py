"""``evaluate_model``: generate answers, judge them, compute per-language metrics with bootstrap CIs.

Pipeline: suite -> prompts -> answers (cached per model content hash, prompts and generation settings) ->
multiple-choice log-probs -> safety verdicts and, with a reference, pairwise verdicts in both orders (each
judged batch journaled, so a failed judge resumes) -> metrics per language and their average over languages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safemerge.errors import InputError
from safemerge.evaluate.cache import AnswerCache, VerdictJournal, eval_cache_root
from safemerge.evaluate.generate import (
    GenerationSettings,
    LoadedModel,
    generate,
    generate_vllm,
    load_model,
    model_hash,
    vllm_available,
)
from safemerge.evaluate.judges.base import (
    AUTO,
    Judge,
    PairItem,
    PairVerdict,
    SafetyItem,
    SafetyVerdict,
    default_judge,
    get_judge,
)
from safemerge.evaluate.loss import answer_logprobs, tokenize_pair
from safemerge.evaluate.metrics import (
    Estimate,
    change_stat,
    diff_stat,
    mean_stat,
    normalized_match,
    pair_score,
    stratified_bootstrap,
)
from safemerge.evaluate.metric_table import METRICS as METRIC_TABLE
from safemerge.evaluate.report import EvalReport
from safemerge.evaluate.suites import EvalItem, EvalSuite, items_hash, resolve_suite
from safemerge.utils.hashing import hash_obj
from safemerge.utils.progress import make_progress

METRICS = tuple(METRIC_TABLE)  # every metric key (refusal/non-answer/helpful rates: three-class judges only)


@dataclass
class _ModelSource:
    label: str
    path: Path | None
    loaded: LoadedModel | None

    def get(self) -> LoadedModel:
        if self.loaded is None:
            assert self.path is not None
            self.loaded = load_model(self.path)
        return self.loaded


def _model_source(model: Any, tokenizer: Any) -> _ModelSource:
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        if not (p / "config.json").is_file():
            raise InputError(f"{p}: not a model directory (no config.json); pass a local Hugging Face model dir")
        return _ModelSource(str(p), p, None)
    if isinstance(model, LoadedModel):
        return _ModelSource(str(model.path or "in-memory"), model.path, model)
    if isinstance(model, tuple) and len(model) == 2:
        model, tokenizer = model
    if tokenizer is None:
        raise InputError("evaluate_model: an in-memory model needs its tokenizer (tokenizer=...)")
    return _ModelSource(getattr(model, "name_or_path", "") or "in-memory", None, LoadedModel(model, tokenizer))


def _answers(src: _ModelSource, items: list[EvalItem], settings: GenerationSettings, cache_root: Path | None,
             progress: bool, use_cache: bool) -> tuple[str, dict[str, Any]]:
    """(model hash, {"answers": {id: text}, "mc": {id: [[sum_logprob, n_tokens], ...]}})."""
    loaded = src.loaded
    mhash = model_hash(loaded.model, loaded.tokenizer) if src.path is None and loaded else model_hash(
        None, path=src.path)
    key = hash_obj([mhash, items_hash(items), settings.key(), "v1"])
    cache = AnswerCache(eval_cache_root(cache_root), key)
    if use_cache and (hit := cache.load()) is not None:
        return mhash, hit | {"generated": 0}
    prompts = [it.prompt for it in items]
    if src.path is not None and src.loaded is None and vllm_available():  # pragma: no cover - GPU only
        answers = generate_vllm(src.path, prompts, settings)
    else:
        lm = src.get()
        answers = generate(lm.model, lm.tokenizer, prompts, settings, description=f"answering ({src.label})",
                           progress=progress)
    mc: dict[str, list[list[float]]] = {}
    mc_items = [it for it in items if it.choices]
    if mc_items:
        lm = src.get()
        pairs, owners = [], []
        for it in mc_items:
            for c in it.choices or ():
                pairs.append(tokenize_pair(lm.tokenizer, [{"role": "user", "content": it.prompt}], c,
                                           end_of_turn=False))
                owners.append(it.id)
        pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        for owner, (s, n) in zip(owners, answer_logprobs(lm.model, pairs, settings.batch_size, pad_id=pad)):
            mc.setdefault(owner, []).append([s, n])
    data = {"answers": dict(zip([it.id for it in items], answers)), "mc": mc}
    if use_cache:
        cache.save(data)
    return mhash, data | {"generated": len(items)}


def _judge_cached(journal: VerdictJournal, task: str, payloads: Sequence[Any], fn: Callable[[list], list],
                  batch_size: int, progress: bool, description: str, counter: dict[str, int]
                  ) -> list[dict[str, Any] | None]:
    """Verdict dicts for payloads, judging only the ones not in the journal; journals each batch."""
    keys = [journal.key(task, p.__dict__) for p in payloads]
    todo = [i for i, k in enumerate(keys) if journal.get(k) is None]
    fresh: dict[int, dict[str, Any]] = {}
    with make_progress(disable=not progress or not todo, transient=True) as bar:
        t = bar.add_task(description, total=len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            verdicts = fn([payloads[i] for i in batch])
            rows = []
            for i, v in zip(batch, verdicts):
                d = v.to_dict()
                fresh[i] = d
                if all(d.get(f) is not None for f in ("unsafe", "winner") if f in d):
                    rows.append((keys[i], d))  # unparseable verdicts are not journaled: retried next run
            journal.add(rows)
            counter["judged"] = counter.get("judged", 0) + len(batch)
            bar.advance(t, len(batch))
    return [fresh.get(i) or journal.get(k) for i, k in enumerate(keys)]


def _lexicon() -> Any:
    from safemerge.data.world import lexicon

    return lexicon


def evaluate_model(
    model: Any,
    suite: str | os.PathLike | EvalSuite = "world",
    judge: str | Judge = AUTO,
    reference: Any = None,
    *,
    tokenizer: Any = None,
    langs: Sequence[str] | None = None,
    limit: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    do_sample: bool = False,
    seed: int = 0,
    n_boot: int = 1000,
    judge_options: dict[str, Any] | None = None,
    cache: bool = True,
    cache_root: str | os.PathLike | None = None,
    progress: bool = True,
) -> EvalReport:
    """Evaluate ``model`` (a model dir, a ``LoadedModel``, ``(model, tokenizer)`` or a model + ``tokenizer=``).

    ``suite``: "world", a world dir, a suite YAML or an :class:`EvalSuite`. ``judge``: a registry name
    ("world", "rules", "openai", "llamaguard"; constructor options in ``judge_options``), a :class:`Judge`, or
    "auto" (default): "world" for the built-in world's models, "rules" for real models
    (:func:`safemerge.evaluate.judges.base.default_judge`).
    ``reference``: None, a model (same forms as ``model``) or an :class:`EvalReport` of the same suite; enables
    harm_change, harm_diff and win_rate. Answers and verdicts are cached under ``cache_dir()/eval``.
    """
    suite_obj = resolve_suite(suite)
    if judge == AUTO:
        judge = default_judge((model, tokenizer) if tokenizer is not None else model)
    judge_obj = get_judge(judge, **(judge_options or {}))
    judge_obj.check()
    items = suite_obj.load_items(list(langs) if langs else None, limit)
    if not items:
        raise InputError(f"suite {suite_obj.name}: no prompts for languages {list(langs or [])}; check --langs")
    settings = GenerationSettings(max_new_tokens=max_new_tokens or suite_obj.max_new_tokens, batch_size=batch_size,
                                  do_sample=do_sample, seed=seed)
    src = _model_source(model, tokenizer)
    ref_report: EvalReport | None = None
    if reference is not None and not isinstance(reference, EvalReport):
        ref_report = evaluate_model(reference, suite_obj, judge_obj, None, langs=langs, limit=limit,
                                    max_new_tokens=settings.max_new_tokens, batch_size=batch_size,
                                    do_sample=do_sample, seed=seed, n_boot=n_boot, cache=cache,
                                    cache_root=cache_root, progress=progress)
    elif isinstance(reference, EvalReport):
        ref_report = reference
    mhash, gen = _answers(src, items, settings, Path(cache_root) if cache_root else None, progress, cache)
    answers: dict[str, str] = gen["answers"]
    root = eval_cache_root(cache_root)
    journal = VerdictJournal(root, judge_obj.settings())
    lex = _lexicon()

    records = []
    for it in items:
        a = answers[it.id]
        det = lex.detect_language(a) if a.strip() else None
        # the lexicon knows six languages: for any other prompt language, "wrong language" is unknown (None)
        wrong = (det is not None and det != it.lang) if it.lang in lex.LANGUAGES else None
        rec = it.to_dict() | {"answer_text": a, "detected_lang": det, "wrong_language": wrong}
        if it.reference is not None and it.kind == "general":
            rec["correct"] = normalized_match(a, it.reference)
        if it.choices:
            scores = gen["mc"][it.id]
            rec["choice_logprobs"] = [s for s, _ in scores]
            rec["mc_correct"] = int(np.argmax([s for s, _ in scores])) == it.answer
            rec["mc_norm_correct"] = int(np.argmax([s / max(n, 1) for s, n in scores])) == it.answer
        records.append(rec)

    safety_idx = [i for i, it in enumerate(items) if it.kind in ("harmful", "benign")]
    s_items = [SafetyItem(items[i].prompt, answers[items[i].id], items[i].lang, items[i].kind) for i in safety_idx]
    counter: dict[str, int] = {"judged": 0}
    s_verdicts = _judge_cached(journal, "safety", s_items, judge_obj.judge_safety, judge_obj.batch_size, progress,
                               f"judging safety ({judge_obj.name})", counter)
    for i, v in zip(safety_idx, s_verdicts):
        v = v or SafetyVerdict(None, None, "not judged").to_dict()
        rec = records[i]
        rec["unsafe"] = v["unsafe"]
        rec["refusal"] = v["refusal"] if v["refusal"] is not None else bool(lex.is_refusal(rec["answer_text"]))
        rec["refusal_source"] = "judge" if v["refusal"] is not None else "lexicon"
        rec["verdict_raw"] = v["raw"]
        if v.get("answer_class") is not None:
            rec["answer_class"] = v["answer_class"]

    if ref_report is not None:
        _attach_reference(records, items, ref_report, judge_obj, journal, progress, counter)

    summary = summarize(records, n_boot=n_boot, seed=seed)
    return EvalReport(
        model=src.label,
        model_hash=mhash,
        suite=suite_obj.name,
        judge=judge_obj.settings(),
        settings=settings.key() | {"n_boot": n_boot, "langs": list(langs or []), "limit": limit},
        records=records,
        summary=summary,
        reference=ref_report.model if ref_report is not None else None,
        meta={"n_prompts": len(items), "reference_hash": ref_report.model_hash if ref_report else None,
              "generated": gen["generated"], "judged": counter["judged"]},
    )


def _attach_reference(records: list[dict[str, Any]], items: list[EvalItem], ref: EvalReport, judge: Judge,
                      journal: VerdictJournal, progress: bool, counter: dict[str, int]) -> None:
    by_id = {r["id"]: r for r in ref.records}
    for rec in records:
        if (r := by_id.get(rec["id"])) is not None:
            rec["ref_answer_text"] = r["answer_text"]
            if "unsafe" in r:
                rec["ref_unsafe"] = r["unsafe"]
    gen_idx = [i for i, it in enumerate(items) if it.kind == "general" and it.id in by_id]
    if not gen_idx or not judge.supports_pairwise:
        return
    pairs: list[PairItem] = []
    for i in gen_idx:
        it, mine, theirs = items[i], records[i]["answer_text"], by_id[items[i].id]["answer_text"]
        pairs.append(PairItem(it.prompt, mine, theirs, it.lang, it.reference))  # A = model
        pairs.append(PairItem(it.prompt, theirs, mine, it.lang, it.reference))  # A = reference
    verdicts = _judge_cached(journal, "pair", pairs, judge.judge_pairs, judge.batch_size, progress,
                             f"judging pairs ({judge.name})", counter)
    for k, i in enumerate(gen_idx):
        ab = verdicts[2 * k] or PairVerdict(None).to_dict()
        ba = verdicts[2 * k + 1] or PairVerdict(None).to_dict()
        records[i]["pair_verdicts"] = [ab["winner"], ba["winner"]]
        records[i]["win_score"] = pair_score(ab["winner"], ba["winner"])


def _group(records: list[dict[str, Any]], select: Callable[[dict[str, Any]], tuple[float, ...] | None]
           ) -> dict[str, tuple[np.ndarray, ...]]:
    acc: dict[str, list[tuple[float, ...]]] = {}
    for r in records:
        vals = select(r)
        if vals is not None:
            acc.setdefault(r["lang"], []).append(vals)
    return {g: tuple(np.array(col, dtype=float) for col in zip(*rows)) for g, rows in acc.items()}


def summarize(records: list[dict[str, Any]], n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, dict]]:
    """Per-language and overall metric estimates (dicts of :class:`Estimate`) from per-prompt records."""
    harmful = [r for r in records if r["kind"] == "harmful"]
    specs: dict[str, tuple[list[dict[str, Any]], Callable, Callable, str]] = {
        "harm_rate": (harmful, lambda r: (float(r["unsafe"]),) if r.get("unsafe") is not None else None,
                      mean_stat, ""),
        "alignment": (harmful, lambda r: (1.0 - r["unsafe"],) if r.get("unsafe") is not None else None,
                      mean_stat, ""),
        "harm_change": (harmful, lambda r: (float(r["unsafe"]), float(r["ref_unsafe"]))
                        if r.get("unsafe") is not None and r.get("ref_unsafe") is not None else None,
                        change_stat, "reference harm rate is 0"),
        "harm_diff": (harmful, lambda r: (float(r["unsafe"]), float(r["ref_unsafe"]))
                      if r.get("unsafe") is not None and r.get("ref_unsafe") is not None else None, diff_stat, ""),
        "over_refusal": ([r for r in records if r["kind"] == "benign"],
                         lambda r: (float(r["refusal"]),) if r.get("refusal") is not None else None, mean_stat, ""),
        "acc_gen": (records, lambda r: (float(r["correct"]),) if "correct" in r else None, mean_stat, ""),
        "acc_mc": (records, lambda r: (float(r["mc_correct"]),) if "mc_correct" in r else None, mean_stat, ""),
        "acc_mc_norm": (records, lambda r: (float(r["mc_norm_correct"]),) if "mc_norm_correct" in r else None,
                        mean_stat, ""),
        "win_rate": (records, lambda r: (r["win_score"],) if r.get("win_score") is not None else None,
                     mean_stat, ""),
        "wrong_language": (records, lambda r: (float(r["wrong_language"]),) if r.get("wrong_language") is not None
                           else None, mean_stat, ""),
        "unjudged": ([r for r in records if r["kind"] in ("harmful", "benign")],
                     lambda r: (float(r.get("unsafe") is None),), mean_stat, ""),
    }
    if any(r.get("answer_class") is not None for r in records):  # three-class judges only
        def share(cls: str) -> Callable[[dict[str, Any]], tuple[float, ...] | None]:
            return lambda r: (float(r["answer_class"] == cls),) if r.get("answer_class") is not None else None

        benign = [r for r in records if r["kind"] == "benign"]
        specs |= {"refusal_rate": (harmful, share("refusal"), mean_stat, ""),
                  "nonanswer_rate": (harmful, share("nonanswer"), mean_stat, ""),
                  "helpful_rate": (benign, share("compliance"), mean_stat, "")}
    langs = sorted({r["lang"] for r in records})
    out: dict[str, dict[str, dict]] = {g: {} for g in [*langs, "all"]}
    for name, (rows, select, stat, undefined) in specs.items():
        groups = _group(rows, select)
        if not groups:
            if rows and name not in ("harm_change", "harm_diff", "win_rate"):  # prompts exist, none judged
                out["all"][name] = Estimate(None, None, None, 0, "no judged prompts").to_dict()
            continue
        per, macro = stratified_bootstrap(groups, stat, n_boot=n_boot, seed=seed,
                                          undefined_note=undefined or "undefined")
        for g, est in per.items():
            out[g][name] = est.to_dict()
        out["all"][name] = macro.to_dict()
    return out


__all__ = ["METRICS", "EvalReport", "Estimate", "evaluate_model", "summarize"]
