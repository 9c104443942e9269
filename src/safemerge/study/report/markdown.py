"""report.md: tables (best in bold), plots referenced relatively (plots/*.png), findings, reproducibility."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safemerge.study.report.findings import Findings
from safemerge.study.report.tables import Table

PLOT_TITLES = {
    "tradeoff": "Safety vs general quality (Pareto front dashed; numbers keyed in the table beside the plot)",
    "per_language_sft": "Per language, SFT stage",
    "per_language_dpo": "Per language, DPO stage",
    "sweep_sft": "Weight sweeps, SFT stage",
    "sweep_dpo": "Weight sweeps, DPO stage",
}


def md_table(t: Table, ci: bool = True) -> str:
    if not t.rows:
        return f"### {t.title}\n\n_no data_\n"
    lines = [f"### {t.title}", "", "| " + " | ".join(c.replace("|", "/") for c in t.columns) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(t.columns) - 1)) + "|"]
    for i, (label, cells) in enumerate(t.rows):
        block = t.block_of(i)
        if block in t.prefix_blocks and t.block_titles.get(block):
            label = f"{t.block_titles[block]}: {label}"
        texts = [f"**{c.text(ci)}**" if c.bold else c.text(ci) for c in cells]
        lines.append("| " + " | ".join([label.replace("|", "/"), *texts]) + " |")
    if t.note:
        lines += ["", f"_{t.note}_"]
    return "\n".join(lines) + "\n"


def reproducibility(results: dict[str, Any]) -> list[str]:
    env = results["env"]
    lines = ["## Reproducibility", ""]
    if env.get("command"):
        lines += ["Command:", "", f"    {env['command']}", ""]
    lines += [f"Seed {results['seed']}; evaluation: `{results['eval']}`.", "",
              f"Python {env['python']} on {env['platform']} ({env['cpus']} CPUs, load average "
              f"{env.get('load_average')} at the end of the run). Packages: "
              + ", ".join(f"{k} {v}" for k, v in env["packages"].items()) + ".", "",
              "### Timings", "",
              "| stage | compute s (all runs) | CPU s (all runs) | wall s (this run) | units computed | cached "
              "| skipped |", "|---|---:|---:|---:|---:|---:|---:|"]
    for st in results["stages"]:
        lines.append(f"| {st['stage']} | {st.get('compute_seconds', 0.0):.1f} | {st.get('cpu_seconds', 0.0):.1f} | "
                     f"{st['wall_seconds']:.1f} | {st['computed']} | {st['cached']} | {st['skipped']} |")
    total = sum(st.get("compute_seconds", 0.0) for st in results["stages"])
    cpu = sum(st.get("cpu_seconds", 0.0) for st in results["stages"])
    lines += ["", f"Compute time of the whole study (each unit when first computed: training, merging, search, "
              f"evaluation; the world build is not included): {total:.1f} s wall, {cpu:.1f} s CPU. Wall time of "
              f"this run: {results['wall_seconds']:.1f} s. Wall times on a shared machine are noisy; CPU seconds "
              "are not."]
    return lines


def render_markdown(results: dict[str, Any], tables: dict[str, Table], plots: dict[str, Path],
                    findings: Findings, out: Path) -> str:
    lines = [f"# Mix data or merge models? Study `{results['name']}`", "",
             f"Languages: {', '.join(results['languages'])}. Every model is evaluated against the base model "
             "(harm change = relative change of the harmful-answer rate vs the base, negative is safer; "
             "win-rate = pairwise wins vs the base, 50 % = parity).", "", "## Summary", ""]
    lines += [f"- {s}" for s in findings.summary] or ["- no evaluated models"]
    lines += ["", "## Findings", "",
              "_A difference is called clear only when the two 95 % CIs do not overlap; otherwise the finding "
              "says \"no clear difference\"._", ""]
    for title, items in findings.groups:
        lines += [f"### {title}", ""] + [f"- {f}" for f in items] + [""]
    if not len(findings):
        lines += ["- no evaluated models", ""]
    lines += ["## Main tables", ""]
    for key in ("harm_change", "win_rate"):
        lines.append(md_table(tables[key]))
    lines += ["## Plots", ""]
    for name, path in plots.items():
        lines += [f"![{PLOT_TITLES.get(name, name)}]({path.relative_to(out).as_posix()})", ""]
    lines += ["## All results", ""]
    for key in ("sweep", "all"):
        lines.append(md_table(tables[key]))
    lines += reproducibility(results)
    return "\n".join(lines) + "\n"
