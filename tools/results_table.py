"""Print a Markdown table of chosen models and metrics from a study's results.json (the README's real-model table).

    .venv/bin/python tools/results_table.py runs/smollm2/results.json \
        --models base,mix0_sft,mix15_sft --metrics harm_rate@en,over_refusal@en,harm_rate,acc_mc,win_rate

A metric is ``name`` (the study's overall value: the mean over its languages) or ``name@lang``; values are
percentages with their 95 % bootstrap CI, exactly as the study measured them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cell(entry: dict, metric: str) -> str:
    name, _, lang = metric.partition("@")
    block = entry["eval"]["per_lang"].get(lang, {}) if lang else entry["eval"]["overall"]
    d = block.get(name)
    if d is None or d.get("value") is None:
        return "–"
    return f"{100 * d['value']:.1f} [{100 * d['lo']:.0f}, {100 * d['hi']:.0f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--models", required=True, help="comma-separated model names of the study")
    ap.add_argument("--metrics", required=True, help="comma-separated metric[@lang] names")
    args = ap.parse_args()
    models = json.loads(args.results.read_text(encoding="utf-8"))["models"]
    metrics = args.metrics.split(",")
    missing = [m for m in args.models.split(",") if m not in models]
    if missing:
        sys.exit(f"error: {args.results}: no model {', '.join(missing)}; it has {', '.join(models)}")
    print("| model | " + " | ".join(f"{m} %" for m in metrics) + " |")
    print("|---|" + "---:|" * len(metrics))
    for name in args.models.split(","):
        print(f"| {name} | " + " | ".join(cell(models[name], m) for m in metrics) + " |")


if __name__ == "__main__":
    main()
