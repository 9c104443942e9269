from __future__ import annotations

import json

import pytest

from safemerge.errors import InputError
from safemerge.evaluate.judges.base import JudgeError
from safemerge.evaluate.judges.world import WorldJudge

pytestmark = pytest.mark.slow


def test_evaluate_with_reference_caching_and_report(tiny_models, eval_suite, cache_root, tmp_path):
    from safemerge.evaluate import EvalReport, evaluate_model

    r = evaluate_model(tiny_models["a"], eval_suite, reference=tiny_models["b"], cache_root=cache_root,
                       progress=False, n_boot=200)
    assert r.meta["generated"] == 3 * 6 * 3 and r.meta["n_prompts"] == 54
    assert set(r.languages) == {"en", "fr", "es", "ru", "hi", "ar"}
    for lang in [*r.languages, "all"]:
        for m in ("harm_rate", "alignment", "over_refusal", "acc_gen", "acc_mc", "win_rate", "wrong_language"):
            est = r.summary[lang][m]
            assert est["value"] is not None and est["lo"] <= est["value"] <= est["hi"], (lang, m)
        assert r.summary[lang]["harm_rate"]["value"] + r.summary[lang]["alignment"]["value"] == pytest.approx(1)
    # every general prompt was judged pairwise in both orders
    gen = [x for x in r.records if x["kind"] == "general"]
    assert all(len(x["pair_verdicts"]) == 2 and x["win_score"] in (0, 0.25, 0.5, 0.75, 1) for x in gen)
    assert all("ref_answer_text" in x for x in r.records)
    assert sum("mc_correct" in x for x in gen) == 12 and all(len(x["choice_logprobs"]) == 2 for x in gen
                                                              if "mc_correct" in x)
    # harm_change is defined exactly where the reference has harm
    for lang in r.languages:
        ref_harm = [x["ref_unsafe"] for x in r.records if x["kind"] == "harmful" and x["lang"] == lang]
        hc = r.summary[lang].get("harm_change", {})
        assert (hc.get("value") is None) == (not any(ref_harm))

    again = evaluate_model(tiny_models["a"], eval_suite, reference=tiny_models["b"], cache_root=cache_root,
                           progress=False, n_boot=200)
    assert again.meta["generated"] == 0 and again.meta["judged"] == 0  # answers and verdicts from the cache
    assert again.summary == r.summary and again.records == r.records

    out = r.save(tmp_path / "out")
    data = json.loads((out / "results.json").read_text())
    assert len(data["records"]) == 54 and (out / "summary.md").read_text().count("\n| ") == 8
    assert "lang,metric,value" in (out / "summary.csv").read_text()
    assert EvalReport.load(out).summary == r.summary
    # a saved report works as the reference: same numbers, nothing regenerated for the reference
    r2 = evaluate_model(tiny_models["a"], eval_suite, reference=EvalReport.load(out / "results.json"),
                        cache_root=cache_root, progress=False, n_boot=200)
    assert r2.summary["all"]["harm_rate"] == r.summary["all"]["harm_rate"]


def test_in_memory_model_langs_and_limit(tiny_models, eval_suite, cache_root):
    from safemerge.evaluate import evaluate_model, load_model

    lm = load_model(tiny_models["base"])
    r = evaluate_model(lm.model, eval_suite, tokenizer=lm.tokenizer, langs=["en", "ar"], limit=1,
                       cache_root=cache_root, progress=False, n_boot=50)
    assert r.languages == ["ar", "en"] and r.meta["n_prompts"] == 6 and r.model_hash
    assert r.summary["all"]["harm_rate"]["n"] == 2
    with pytest.raises(InputError, match="tokenizer"):
        evaluate_model(lm.model, eval_suite, cache_root=cache_root)


class FailingJudge(WorldJudge):
    """The world judge (same verdicts, same cache key) whose endpoint 'goes down' after ``ok_batches``."""

    batch_size = 5

    def __init__(self, ok_batches: int):
        super().__init__()
        self.ok_batches = ok_batches

    def judge_safety(self, items):
        if self.ok_batches <= 0:
            raise JudgeError("judge endpoint went away; verdicts so far are kept, re-run to resume")
        self.ok_batches -= 1
        return super().judge_safety(items)


def test_resume_after_judge_failure(tiny_models, eval_suite, cache_root):
    from safemerge.evaluate import evaluate_model

    with pytest.raises(JudgeError):
        evaluate_model(tiny_models["a"], eval_suite, judge=FailingJudge(ok_batches=2), cache_root=cache_root,
                       progress=False, n_boot=50)
    r = evaluate_model(tiny_models["a"], eval_suite, judge="world", cache_root=cache_root, progress=False,
                       n_boot=50)
    assert r.meta["generated"] == 0  # answers were cached before judging failed
    assert r.meta["judged"] == 36 - 10  # 36 safety prompts, 2 batches of 5 kept from the failed run


def test_bad_suites(tmp_path, tiny_models, cache_root):
    from safemerge.evaluate import evaluate_model
    from safemerge.errors import ConfigError

    (tmp_path / "d.jsonl").write_text('{"question": "hi", "lang": "en"}\n')
    (tmp_path / "s.yaml").write_text("name: x\nsets:\n  - {name: d, kind: general, path: d.jsonl}\n")
    with pytest.raises(InputError, match="column 'prompt'.*columns.prompt"):
        evaluate_model(tiny_models["a"], tmp_path / "s.yaml", cache_root=cache_root)
    (tmp_path / "s2.yaml").write_text("name: x\nsets:\n  - {name: d, kind: nope, path: d.jsonl}\n")
    with pytest.raises(ConfigError, match="s2.yaml: sets.0.kind"):
        evaluate_model(tiny_models["a"], tmp_path / "s2.yaml", cache_root=cache_root)
    (tmp_path / "s3.yaml").write_text(
        "name: x\nsets:\n  - {name: d, kind: general, path: d.jsonl, columns: {prompt: question, lang: language}}\n")
    with pytest.raises(InputError, match="no language column"):
        evaluate_model(tiny_models["a"], tmp_path / "s3.yaml", cache_root=cache_root)
