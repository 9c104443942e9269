"""Datacard of a built world: counts per kind/split/language/category, sizes, timings, examples (md + json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safemerge.utils.atomic import atomic_write_json, atomic_write_text


def _examples(data: dict[tuple[str, str], list[dict]]) -> dict[str, dict[str, dict[str, str]]]:
    """One test example per kind and language."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for kind in ("general", "harmful", "benign"):
        for rec in data.get((kind, "test"), []):
            out.setdefault(kind, {}).setdefault(rec["lang"], {"prompt": rec["prompt"], "completion": rec["completion"]})
    return out


def write_datacard(root: Path, info: dict[str, Any], data: dict[tuple[str, str], list[dict]]) -> None:
    card = {**info, "examples": _examples(data)}
    atomic_write_json(root / "datacard.json", card)
    cfg = info["config"]
    langs = cfg["languages"]
    lines = [
        "# safemerge built-in world",
        "",
        f"Preset `{cfg['preset']}`, seed {cfg['seed']}, key `{info['key'][:16]}`. Languages: {', '.join(langs)}.",
        "",
        "A deterministic, fictional multilingual world: invented towns, rivers, countries and people whose facts",
        "are stated in the pretraining corpus in every language; general tasks (closed-book look-ups, counting,",
        "antonyms) with reference answers and 4-way multiple choice; harmful requests in 8 harm categories",
        "answered by refusals; benign requests that look sensitive, answered helpfully. Splits are disjoint by",
        "template and by entity. No response contains harmful content: harmful prompts get a refusal, and DPO",
        "`rejected` answers for them are content-free placeholders.",
        "",
        "## Records per split and language",
        "",
        "| kind | split | total | " + " | ".join(langs) + " |",
        "|---|---|---|" + "---|" * len(langs),
    ]
    for kind, splits in info["counts"].items():
        for split, c in splits.items():
            lines.append(f"| {kind} | {split} | {c['total']} | "
                         + " | ".join(str(c["by_lang"].get(lg, 0)) for lg in langs) + " |")
    lines += ["", "## Records per category (all languages)", "", "| kind | split | category | n |", "|---|---|---|---|"]
    for kind, splits in info["counts"].items():
        for split, c in splits.items():
            for cat, n in sorted(c["by_category"].items()):
                lines.append(f"| {kind} | {split} | {cat} | {n} |")
    base, tim = info["base"], info["timings"]
    lines += [
        "",
        "## Tokenizer and base model",
        "",
        f"- tokenizer: byte-level BPE, {info['tokenizer']['vocab_size']} tokens, chat template "
        "`<|user|>...<|end|><|assistant|>...<|end|>`",
        f"- corpus: {info['corpus']['documents']} documents, {info['corpus']['tokens']} tokens",
        f"- base: Llama, {base['params']:,} parameters (fp32), pretrained on {base['tokens_seen']:,} tokens, "
        f"final loss {base['final_loss']}",
        f"- build time: data {tim['data_s']} s, tokenizer {tim['tokenizer_s']} s, pretraining {tim['pretrain_s']} s "
        f"(CPU time {tim.get('pretrain_cpu_s', '?')} s), total {tim['total_s']} s (wall clock; noisy on a shared machine)",
        "",
        "## One test example per kind and language",
        "",
    ]
    for kind, by_lang in card["examples"].items():
        for lang, ex in by_lang.items():
            lines.append(f"- **{kind}/{lang}**: {ex['prompt']} → {ex['completion']}")
    atomic_write_text(root / "datacard.md", "\n".join(lines) + "\n")
