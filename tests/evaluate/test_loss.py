from __future__ import annotations

import pytest

from safemerge.errors import InputError

pytestmark = pytest.mark.slow

RECORDS = [
    {"prompt": "the quick brown fox " * (i % 3 + 1), "completion": "jumps over " * (i % 4 + 1),
     "lang": ["en", "fr", "ru"][i % 3]}
    for i in range(9)
] + [{"messages": [{"role": "user", "content": "le renard"}, {"role": "assistant", "content": "saute ."}],
      "lang": "fr"}]


@pytest.fixture(scope="module")
def lm(tiny_models):
    from safemerge.evaluate.generate import load_model

    return load_model(tiny_models["a"])


def _naive(lm, pairs):
    """Unbatched, unpadded reference: sum of -log p(answer token) over all answer tokens / count."""
    import torch

    tot, n = 0.0, 0
    for p in pairs:
        ids = torch.tensor([list(p.prompt_ids + p.answer_ids)])
        with torch.no_grad():
            lp = torch.log_softmax(lm.model(ids).logits[0].float(), -1)
        for j, t in enumerate(p.answer_ids):
            tot -= lp[len(p.prompt_ids) + j - 1, t].item()
            n += 1
    return tot / n


def test_answer_loss_matches_naive_and_is_batch_invariant(lm):
    from safemerge.evaluate.loss import answer_loss, tokenize_records

    pairs = tokenize_records(lm.tokenizer, RECORDS)
    ref = _naive(lm, pairs)
    for bs in (1, 3, 16):
        assert answer_loss(lm.model, lm.tokenizer, RECORDS, batch_size=bs) == pytest.approx(ref, rel=1e-5)
    assert answer_loss(lm.model, lm.tokenizer, pairs) == pytest.approx(ref, rel=1e-5)  # pre-tokenized
    assert not lm.model.training


def test_answer_only_and_end_of_turn(lm):
    from safemerge.evaluate.loss import tokenize_records

    p = tokenize_records(lm.tokenizer, RECORDS[:1])[0]
    prompt = lm.tokenizer.decode(p.prompt_ids)
    answer = lm.tokenizer.decode(p.answer_ids)
    assert prompt.endswith("<|assistant|>") and "jumps" not in prompt
    assert answer.startswith("jumps over") and answer.endswith("<|end|>")


def test_per_language_loss(lm):
    from safemerge.evaluate.loss import answer_loss, answer_loss_by_lang

    by = answer_loss_by_lang(lm.model, lm.tokenizer, RECORDS)
    assert set(by) == {"en", "fr", "ru", "all"}
    assert by["all"] == pytest.approx(answer_loss(lm.model, lm.tokenizer, RECORDS), rel=1e-6)
    fr = [r for r in RECORDS if r["lang"] == "fr"]
    assert by["fr"] == pytest.approx(answer_loss(lm.model, lm.tokenizer, fr), rel=1e-5)


def test_bad_records(lm):
    from safemerge.evaluate.loss import answer_loss

    with pytest.raises(InputError, match="prompt/completion"):
        answer_loss(lm.model, lm.tokenizer, [{"id": "x", "text": "no answer"}])
    with pytest.raises(InputError):
        answer_loss(lm.model, lm.tokenizer, [])
