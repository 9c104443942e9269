"""Plots of a study (matplotlib, Agg backend, PNG): trade-off scatter + Pareto front, per-language bars, sweeps."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from safemerge.study.report.tables import (
    METHODS,
    METRICS,
    STAGE_LABEL,
    main_rows,
    method_label,
    metric,
    model_label,
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


def _save(fig: Any, path: Path, tight: bool = True) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    if tight:
        fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------------------------- label placement
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


def _overlap(a: Box, b: Box, pad: float = 1.0) -> bool:
    return a[0] < b[2] + pad and b[0] < a[2] + pad and a[1] < b[3] + pad and b[1] < a[3] + pad


def place_labels(anchors: list[tuple[float, float]], sizes: list[tuple[float, float]], bounds: Box,
                 obstacles: list[Box] = ()) -> list[tuple[float, float]]:  # type: ignore[assignment]
    """Positions (lower-left corners, pixels) for labels of the given sizes near their anchor points, so that no
    two labels overlap and no label covers a marker (``obstacles``) or leaves ``bounds`` where any place allows.

    Greedy, in order: each label takes the first free spot on rings of growing radius around its anchor (right,
    upper right, up, ... first). A label that finds no free spot takes the spot overlapping the fewest boxes.
    """
    placed: list[Box] = []
    out = []
    dirs = [(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)]
    for (ax_, ay), (w, h) in zip(anchors, sizes):
        best, best_cost = None, None
        for r in (5, 9, 14, 20, 28, 38, 50, 65, 85, 110):
            for dx, dy in dirs:
                cx, cy = ax_ + dx * r, ay + dy * r  # the label's corner/edge nearest the anchor sits here
                x0 = cx if dx > 0 else cx - w if dx < 0 else cx - w / 2
                y0 = cy if dy > 0 else cy - h if dy < 0 else cy - h / 2
                box = (x0, y0, x0 + w, y0 + h)
                inside = bounds[0] <= box[0] and box[2] <= bounds[2] and bounds[1] <= box[1] and box[3] <= bounds[3]
                cost = sum(_overlap(box, b) for b in placed) + sum(_overlap(box, o, 0.0) for o in obstacles)
                cost += 0 if inside else 100
                if best_cost is None or cost < best_cost:
                    best, best_cost = box, cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        assert best is not None
        placed.append(best)
        out.append((best[0], best[1]))
    return out


def _ranges(nums: list[int]) -> str:
    """[3, 4, 5, 7] -> "3-5,7"."""
    out, i = [], 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if j == i else f"{nums[i]},{nums[j]}" if j == i + 1 else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ",".join(out)


def _key_points(results: dict[str, Any], pts: list[tuple[str, float, float]]) -> list[str]:
    """The models the trade-off plot numbers: all when few, else the ones the report talks about (mixtures,
    experts, main-table rows, Pareto front, merge timing, language merges, search)."""
    names = [n for n, _, _ in pts]
    if len(names) <= 36:
        return names
    keep = set(pareto_front(pts))
    keep |= {n for _t, _s, rows in main_rows(results) for _lab, n in rows}
    keep |= {n for n in names if results["models"][n]["group"] in ("mixture", "merge_then_dpo", "language_merge",
                                                                     "search")}
    return [n for n in names if n in keep]


def tradeoff_figure(results: dict[str, Any]) -> tuple[Any, list[Any], list[Any]] | None:
    """The trade-off figure, its number labels (matplotlib Text, one per distinct point) and its key entries."""
    pts = tradeoff_points(results)
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import IdentityTransform

    keyed = _key_points(results, pts)
    n_key = len(keyed)
    height = max(5.0, 1.2 + 0.17 * n_key)
    fig = plt.figure(figsize=(10.0, height), dpi=100)
    bottom, top = 1.15 / height, 0.4 / height  # inches kept free below (x label, legend) and above (title)
    ax = fig.add_axes((0.08, bottom, 0.52, 1.0 - bottom - top))
    seen: set[str] = set()
    for n, x, y in pts:
        group = results["models"][n]["group"]
        marker, color = GROUP_STYLE.get(group, GROUP_STYLE["custom"])
        ax.scatter([x], [y], marker=marker, color=color, s=50 if group == "mixture" else 30,
                   label=None if group in seen else group.replace("_", " "), zorder=3,
                   alpha=1.0 if n in keyed else 0.45)
        seen.add(group)
    front = sorted((p for p in pts if p[0] in set(pareto_front(pts))), key=lambda p: p[1])
    ax.plot([p[1] for p in front], [p[2] for p in front], "--", color="#ff7f0e", label="Pareto front", zorder=2)
    xs, ys = [p[1] for p in pts], [p[2] for p in pts]
    padx, pady = max(6.0, 0.12 * (max(xs) - min(xs))), max(4.0, 0.12 * (max(ys) - min(ys)))
    ax.set_xlim(min(xs) - padx, max(xs) + padx)
    ax.set_ylim(min(ys) - pady, max(ys) + pady)
    ax.set_xlabel("harm change vs base % (lower = safer)")
    ax.set_ylabel("win-rate vs base % (higher = better)")
    ax.set_title("Safety vs general quality, every model")
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower left", bbox_to_anchor=(0.06, 0.0), ncol=4, fontsize=7,
               frameon=False)
    # one number per distinct point (models at the same spot share it: "3,4")
    by = {n: (x, y) for n, x, y in pts}
    number = {n: i + 1 for i, n in enumerate(keyed)}
    spots: dict[tuple[float, float], list[str]] = {}
    for n in keyed:
        spots.setdefault((round(by[n][0], 1), round(by[n][1], 1)), []).append(n)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    anchors, texts = [], []
    for members in spots.values():
        anchors.append(tuple(to_px(by[members[0]])))
        t = ax.text(0, 0, _ranges(sorted(number[m] for m in members)), fontsize=7, zorder=4, color="#111111",
                    transform=IdentityTransform())
        texts.append(t)
    sizes = []
    for t in texts:
        bb = t.get_window_extent(renderer)
        sizes.append((bb.width, bb.height))
    axbox = ax.get_window_extent(renderer)
    markers = [(px - 4, py - 4, px + 4, py + 4) for px, py in (to_px(by[n]) for n, _, _ in pts)]
    where = place_labels(anchors, sizes, (axbox.x0 + 2, axbox.y0 + 2, axbox.x1 - 2, axbox.y1 - 2), markers)
    for t, (x0, y0), anchor, (w, h) in zip(texts, where, anchors, sizes):
        t.set_position((x0, y0))
        t.set_verticalalignment("bottom")
        near = (min(max(anchor[0], x0), x0 + w), min(max(anchor[1], y0), y0 + h))
        if abs(near[0] - anchor[0]) + abs(near[1] - anchor[1]) > 12:  # far from its point: a leader line
            ax.plot([anchor[0], near[0]], [anchor[1], near[1]], color="#888888", lw=0.5, zorder=2,
                    transform=IdentityTransform())
    # the key: number -> model, coloured by group, in one or two columns beside the plot
    key_entries = []
    cols = 1 if n_key <= 32 else 2
    per_col = -(-n_key // cols)
    line = 1.0 / max(per_col + 1, 12)
    fig.text(0.63, 0.97, "key", fontsize=8, weight="bold", va="top")
    for i, n in enumerate(keyed):
        c, r = divmod(i, per_col)
        color = GROUP_STYLE.get(results["models"][n]["group"], GROUP_STYLE["custom"])[1]
        label = model_label(results, n, stage=True)
        if cols == 2 and len(label) > 28:
            label = label[:27] + "…"
        key_entries.append(fig.text(0.63 + c * 0.185, 0.97 - (r + 1) * line * 0.95, f"{number[n]:>2}  {label}",
                                    fontsize=7, va="top", color=color))
    return fig, texts, key_entries


def tradeoff_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Harm change (x, lower = safer) vs win-rate (y, higher = better) of every model; Pareto front joined;
    points numbered (labels placed so that none overlap), the numbers keyed beside the plot."""
    made = tradeoff_figure(results)
    if made is None:
        return None
    return _save(made[0], path, tight=False)


def per_language_plot(results: dict[str, Any], stage: str, path: Path) -> Path | None:
    """Grouped bars per language of the main-table rows of one stage: harm change (top), win-rate (bottom)."""
    import numpy as np

    block = next((rows for _t, s, rows in main_rows(results) if s == stage), None)
    if not block:
        return None
    langs = list(results["languages"])
    fig, axes = _figure(10.0, 5.5)
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
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never on them
    return _save(fig, path)


def sweep_plot(results: dict[str, Any], stage: str, path: Path) -> Path | None:
    """Harm change and win-rate over the safety-expert weight, one line per method, 15 % mix dashed."""
    lines = {m: sweep(results, m, stage) for m in METHODS}
    if not any(len(v) > 0 for v in lines.values()):
        return None
    fig, _ = _figure(9.0, 3.8)
    fig.clf()
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "harm_change", METRICS["harm_change"][0]), (axes[1], "win_rate", METRICS["win_rate"][0])):
        for m, pts in lines.items():
            if pts:
                ys = [metric(results, n, key).value for _, n in pts]
                ax.plot([w for w, _ in pts], ys, "o-", label=method_label(m))
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
