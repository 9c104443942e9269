"""Plots of a study (matplotlib, Agg backend, PNG): trade-off scatter + Pareto front, per-language bars, sweeps."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from safemerge.study.report.tables import (
    METHOD_LABEL,
    METHODS,
    STAGE_LABEL,
    main_rows,
    metric,
    mix_reference,
    pareto_front,
    sweep,
    tradeoff_points,
)
from safemerge.utils.atomic import atomic_write_bytes

GROUP_STYLE = {  # group -> (marker, color)
    "mixture": ("s", "#444444"),
    "objective_merge": ("o", "#1f77b4"),
    "merge_then_dpo": ("D", "#9467bd"),
    "language_merge": ("^", "#2ca02c"),
    "monolingual": ("v", "#bcbd22"),
    "search": ("*", "#d62728"),
    "custom": ("x", "#7f7f7f"),
}


def _figure(w: float = 7.0, h: float = 4.5) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(w, h), dpi=100)
    return fig, ax


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def tradeoff_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Harm change (x, lower = safer) vs win-rate (y, higher = better) of every model; Pareto front joined."""
    pts = tradeoff_points(results)
    if not pts:
        return None
    fig, ax = _figure()
    seen: set[str] = set()
    for n, x, y in pts:
        group = results["models"][n]["group"]
        marker, color = GROUP_STYLE.get(group, GROUP_STYLE["custom"])
        ax.scatter([x], [y], marker=marker, color=color, s=60 if group == "mixture" else 36,
                   label=None if group in seen else group.replace("_", " "), zorder=3)
        seen.add(group)
        if group in ("mixture", "merge_then_dpo", "language_merge", "search"):
            ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = sorted((p for p in pts if p[0] in set(pareto_front(pts))), key=lambda p: p[1])
    ax.plot([p[1] for p in front], [p[2] for p in front], "--", color="#ff7f0e", label="Pareto front", zorder=2)
    ax.set_xlabel("harm change vs base % (lower = safer)")
    ax.set_ylabel("win-rate vs base % (higher = better)")
    ax.set_title("Safety vs general quality, every model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def per_language_plot(results: dict[str, Any], stage: str, path: Path) -> Path | None:
    """Grouped bars per language of the main-table rows of one stage: harm change (top), win-rate (bottom)."""
    import numpy as np

    block = next((rows for _t, s, rows in main_rows(results) if s == stage), None)
    if not block:
        return None
    langs = list(results["languages"])
    fig, axes = _figure(8.0, 5.5)
    fig.clf()
    axes = fig.subplots(2, 1, sharex=True)
    xs = np.arange(len(langs) + 1)
    width = 0.8 / len(block)
    for ax, key, label in ((axes[0], "harm_change", "harm change %"), (axes[1], "win_rate", "win-rate %")):
        for i, (lab, n) in enumerate(block):
            cells = [metric(results, n, key, lang) for lang in langs] + [metric(results, n, key)]
            vals = [c.value if c.value is not None else 0.0 for c in cells]
            ax.bar(xs + i * width - 0.4 + width / 2, vals, width, label=lab)
        ax.axhline(0 if key == "harm_change" else 50, color="black", lw=0.6)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(xs, [*langs, "all"])
    axes[0].set_title(f"Per language, {STAGE_LABEL[stage]} stage")
    axes[0].legend(fontsize=7, ncol=3)
    return _save(fig, path)


def sweep_plot(results: dict[str, Any], stage: str, path: Path) -> Path | None:
    """Harm change and win-rate over the safety-expert weight, one line per method, 15 % mix dashed."""
    lines = {m: sweep(results, m, stage) for m in METHODS}
    if not any(len(v) > 0 for v in lines.values()):
        return None
    fig, _ = _figure(9.0, 3.8)
    fig.clf()
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "harm_change", "harm change vs base %"), (axes[1], "win_rate", "win-rate vs base %")):
        for m, pts in lines.items():
            if pts:
                ys = [metric(results, n, key).value for _, n in pts]
                ax.plot([w for w, _ in pts], ys, "o-", label=METHOD_LABEL[m])
        ref = metric(results, mix_reference(stage), key).value
        if ref is not None:
            ax.axhline(ref, ls="--", color="#444444", label="15 % mix")
        ax.set_xlabel("weight of the safety expert")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Weight sweeps, {STAGE_LABEL[stage]} stage")
    return _save(fig, path)


def make_plots(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Every plot the data allows; name -> PNG path (plots without data are left out)."""
    plots = {"tradeoff": tradeoff_plot(results, out_dir / "tradeoff.png")}
    for stage in ("sft", "dpo"):
        plots[f"per_language_{stage}"] = per_language_plot(results, stage, out_dir / f"per_language_{stage}.png")
        plots[f"sweep_{stage}"] = sweep_plot(results, stage, out_dir / f"sweep_{stage}.png")
    return {k: v for k, v in plots.items() if v is not None}
