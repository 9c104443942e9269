"""Print a Markdown table of chosen models and metrics from a study's results.json (the README's tables).

    .venv/bin/python tools/results_table.py runs/smollm2/results.json \
        --models base,mix0_sft,mix15_sft --metrics harm_rate@en,over_refusal@en,harm_rate,acc_mc,win_rate
    .venv/bin/python tools/results_table.py runs/demo/results.json --main --metrics harm_change,win_rate

``--main``: the rows of the report's main table (the 15 % mix and each method's chosen weight per stage, merge
timing, per-layer weights, language merges, search), labelled as in the report.

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
    ap.add_argument("--models", help="comma-separated model names of the study")
    ap.add_argument("--main", action="store_true", help="the report's main-table rows instead of --models")
    ap.add_argument("--metrics", required=True, help="comma-separated metric[@lang] names")
    args = ap.parse_args()
    results = json.loads(args.results.read_text(encoding="utf-8"))
    models = results["models"]
    metrics = args.metrics.split(",")
    if args.main:
        from safemerge.study.report.tables import STAGE_LABEL, main_rows

        rows = [(f"{STAGE_LABEL[stage]}: {label}" if stage in ("sft", "dpo") else label, name)
                for _title, stage, block in main_rows(results) for label, name in block]
    elif args.models:
        rows = [(name, name) for name in args.models.split(",")]
    else:
        sys.exit("error: give --models NAME,... or --main")
    missing = [n for _, n in rows if n not in models]
    if missing:
        sys.exit(f"error: {args.results}: no model {', '.join(missing)}; it has {', '.join(models)}")
    print("| model | " + " | ".join(f"{m} %" for m in metrics) + " |")
    print("|---|" + "---:|" * len(metrics))
    for label, name in rows:
        print(f"| {label} | " + " | ".join(cell(models[name], m) for m in metrics) + " |")


if __name__ == "__main__":
    main()
