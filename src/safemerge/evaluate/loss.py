"""Answer-only token cross-entropy and answer log-probabilities on an in-memory model.

Merge search calls :func:`answer_loss` thousands of times on the same records, so records can be tokenized once
with :func:`tokenize_records` and the result passed instead of the records. The forward pass is batched,
left-padded (the answers then sit at the end of every row, so only the last ``max answer length + 1`` logits
are computed: ``logits_to_keep``), padding-aware (explicit position ids) and runs under ``torch.inference_mode``;
per-row sums stay on the model's device until the last batch (one transfer, no per-batch GPU sync).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from safemerge.errors import InputError
from safemerge.evaluate.generate import chat_prompt


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of a chat-formatted prompt and of the answer that follows it."""

    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]
    lang: str = ""


def _split_record(rec: Mapping[str, Any], source: str) -> tuple[list[dict[str, str]], str]:
    """(context messages, answer text) of a prompt/completion or messages record."""
    msgs = rec.get("messages")
    if msgs and msgs[-1].get("role") == "assistant":
        return [dict(m) for m in msgs[:-1]], msgs[-1]["content"]
    if "prompt" in rec and "completion" in rec:
        prompt = rec["prompt"]
        ctx = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        comp = rec["completion"]
        answer = comp[-1]["content"] if isinstance(comp, list) else comp
        return ctx, answer
    raise InputError(
        f"{source}: record {rec.get('id', '?')} has neither prompt/completion nor messages ending with an "
        "assistant turn; add those fields"
    )


def tokenize_pair(tokenizer: Any, context: Sequence[dict[str, str]], answer: str, end_of_turn: bool = True,
                  lang: str = "", max_length: int = 1024) -> TokenizedPair:
    """Tokenize (chat prompt, answer). With ``end_of_turn`` the template's end-of-turn text is part of the answer."""
    prompt_text = chat_prompt(tokenizer, context)
    answer_text = answer
    if end_of_turn and getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(list(context) + [{"role": "assistant", "content": answer}],
                                             tokenize=False)
        if full.startswith(prompt_text):
            answer_text = full[len(prompt_text):]
    elif end_of_turn and tokenizer.eos_token:
        answer_text = answer + tokenizer.eos_token
    p = tokenizer(prompt_text, add_special_tokens=False).input_ids
    a = tokenizer(answer_text, add_special_tokens=False).input_ids
    a = a[: max_length - 1]
    p = p[-(max_length - len(a)):] if len(p) + len(a) > max_length else p
    return TokenizedPair(tuple(p), tuple(a), lang)


def tokenize_records(tokenizer: Any, records: Sequence[Mapping[str, Any]], max_length: int = 1024,
                     source: str = "records") -> list[TokenizedPair]:
    """Tokenize prompt/completion (or messages) records once, for repeated :func:`answer_loss` calls."""
    out = []
    for rec in records:
        ctx, ans = _split_record(rec, source)
        out.append(tokenize_pair(tokenizer, ctx, ans, lang=str(rec.get("lang", "")), max_length=max_length))
    return out


def _as_pairs(tokenizer: Any, records: Sequence[Any]) -> list[TokenizedPair]:
    if records and isinstance(records[0], TokenizedPair):
        return list(records)
    return tokenize_records(tokenizer, records)


def answer_logprobs(model: Any, pairs: Sequence[TokenizedPair], batch_size: int = 32,
                    pad_id: int = 0) -> list[tuple[float, int]]:
    """(sum of answer-token log-probs, number of answer tokens) for every pair, in input order."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i].prompt_ids) + len(pairs[i].answer_ids)))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
    done: list[tuple[list[int], list[int], Any]] = []  # (pair indices, answer lengths, per-row log-prob sums)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                seqs = [pairs[i].prompt_ids + pairs[i].answer_ids for i in idx]
                alen = torch.tensor([len(pairs[i].answer_ids) for i in idx])
                L = max(len(s) for s in seqs)
                ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
                mask = torch.zeros((len(seqs), L), dtype=torch.long)
                for r, s in enumerate(seqs):
                    ids[r, L - len(s):] = torch.tensor(s, dtype=torch.long)
                    mask[r, L - len(s):] = 1
                pos = (mask.cumsum(1) - 1).clamp(min=0)
                K = int(alen.max()) + 1
                if K <= 1:
                    continue
                ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
                try:
                    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=K).logits
                except TypeError:  # models without logits_to_keep
                    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
                logits = logits[:, -K:-1, :].float()
                targets = ids[:, L - K + 1:]
                col = torch.arange(K - 1, device=device)[None, :]
                keep = col >= (K - 1 - alen.to(device))[:, None]
                nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                      reduction="none").view(targets.shape)
                done.append((idx, alen.tolist(), (-(nll * keep)).sum(1)))  # stays on the device: no sync
            sums = torch.cat([s for _, _, s in done]).tolist() if done else []  # one transfer at the end
    finally:
        model.train(was_training)
    flat = iter(sums)
    for idx, lens, _ in done:
        for i, n in zip(idx, lens):
            out[i] = (next(flat), n)
    return out


def answer_loss(model: Any, tokenizer: Any, records: Sequence[Any], batch_size: int = 32) -> float:
    """Mean answer-only token cross-entropy (nats/token) over all records (token-weighted).

    ``records``: prompt/completion or messages dicts (chat template applied, the answer includes the template's
    end-of-turn text) or the output of :func:`tokenize_records`.
    """
    pairs = _as_pairs(tokenizer, records)
    if not pairs:
        raise InputError("answer_loss: no records given; pass at least one prompt/completion record")
    res = answer_logprobs(model, pairs, batch_size, pad_id=_pad_id(tokenizer))
    tokens = sum(n for _, n in res)
    return -sum(s for s, _ in res) / max(tokens, 1)


def answer_loss_by_lang(model: Any, tokenizer: Any, records: Sequence[Any], batch_size: int = 32) -> dict[str, float]:
    """:func:`answer_loss` per language (``lang`` field) plus ``"all"``; one forward pass over all records."""
    pairs = _as_pairs(tokenizer, records)
    res = answer_logprobs(model, pairs, batch_size, pad_id=_pad_id(tokenizer))
    acc: dict[str, list[float]] = {}
    for p, (s, n) in zip(pairs, res):
        for key in (p.lang or "unknown", "all"):
            a = acc.setdefault(key, [0.0, 0.0])
            a[0] -= s
            a[1] += n
    return {k: v[0] / max(v[1], 1) for k, v in sorted(acc.items())}


def _pad_id(tokenizer: Any) -> int:
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pid or 0)
