"""Metrics with seeded bootstrap 95 % confidence intervals (pure numpy functions).

Every metric is a statistic of per-prompt arrays. :func:`stratified_bootstrap` resamples prompts within each
language (paired: the same resampled prompts feed every array of a statistic, e.g. model and reference harm
flags for ``harm_change``) and reports per-language estimates and their macro average over languages (the
papers' "average over languages"), all with percentile CIs.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

Stat = Callable[..., np.ndarray]  # arrays of shape (B, n) -> (B,)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a bootstrap CI. ``value`` is None when undefined (``note`` says why)."""

    value: float | None
    lo: float | None = None
    hi: float | None = None
    n: int = 0
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def mean_stat(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1)


def change_stat(model: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Relative change (mean(model) - mean(ref)) / mean(ref); NaN where mean(ref) = 0."""
    m, r = model.mean(axis=1), ref.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, (m - r) / np.where(r > 0, r, 1.0), np.nan)


def diff_stat(model: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return model.mean(axis=1) - ref.mean(axis=1)


def _ci(samples: np.ndarray, alpha: float) -> tuple[float | None, float | None]:
    ok = samples[~np.isnan(samples)]
    if ok.size == 0:
        return None, None
    lo, hi = np.percentile(ok, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def stratified_bootstrap(
    groups: Mapping[str, Sequence[np.ndarray]],
    stat: Stat,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    undefined_note: str = "undefined",
) -> tuple[dict[str, Estimate], Estimate]:
    """Per-group estimates and their macro average (mean over groups with a defined value), with CIs.

    ``groups[g]`` is a tuple of equally long 1-d arrays (paired per prompt). Groups with no prompts are skipped.
    """
    rng = np.random.default_rng(seed)
    per: dict[str, Estimate] = {}
    points: list[float] = []
    boots: list[np.ndarray] = []
    for g in sorted(groups):
        arrays = [np.asarray(a, dtype=float) for a in groups[g]]
        n = len(arrays[0])
        if n == 0:
            continue
        point = float(stat(*[a[None, :] for a in arrays])[0])
        idx = rng.integers(0, n, size=(n_boot, n))
        samples = stat(*[a[idx] for a in arrays])
        if np.isnan(point):
            per[g] = Estimate(None, None, None, n, undefined_note)
            continue
        lo, hi = _ci(samples, alpha)
        per[g] = Estimate(point, lo, hi, n)
        points.append(point)
        boots.append(samples)
    n_all = sum(e.n for e in per.values())
    if not points:
        return per, Estimate(None, None, None, n_all, undefined_note if per else "no prompts")
    macro = np.nanmean(np.stack(boots), axis=0) if len(boots) > 1 else boots[0]
    lo, hi = _ci(macro, alpha)
    skipped = [g for g, e in per.items() if e.value is None]
    note = f"mean over languages; {undefined_note} for {','.join(skipped)} (excluded)" if skipped else ""
    return per, Estimate(float(np.mean(points)), lo, hi, n_all, note)


def pair_score(verdict_ab: str | None, verdict_ba: str | None) -> float | None:
    """Score of the MODEL on one prompt from two pairwise verdicts with swapped positions.

    ``verdict_ab``: judge saw (A = model, B = reference); ``verdict_ba``: (A = reference, B = model). Each verdict
    is "A", "B" or "tie"; a win counts 1, a tie 0.5, a loss 0, and the two orders are averaged, which cancels
    position bias. None when either order is unjudged.
    """
    if verdict_ab is None or verdict_ba is None:
        return None
    s1 = {"A": 1.0, "tie": 0.5, "B": 0.0}[verdict_ab]
    s2 = {"B": 1.0, "tie": 0.5, "A": 0.0}[verdict_ba]
    return (s1 + s2) / 2


_PUNCT = re.compile(r"[\W_]+", re.UNICODE)


def normalize_answer(text: str) -> str:
    """NFKC, lower-case, punctuation to spaces, collapsed whitespace (keeps letters of every script)."""
    t = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCT.sub(" ", t).split())


def normalized_match(answer: str, reference: str) -> bool:
    """True when the answer equals the reference after :func:`normalize_answer` (or exactly)."""
    if answer.strip() == reference.strip():
        return True
    na, nr = normalize_answer(answer), normalize_answer(reference)
    return bool(nr) and na == nr


def token_f1(answer: str, reference: str) -> float:
    """Bag-of-words F1 between normalised answer and reference (SQuAD-style)."""
    a, r = normalize_answer(answer).split(), normalize_answer(reference).split()
    if not a or not r:
        return float(a == r)
    common: dict[str, int] = {}
    for w in r:
        common[w] = common.get(w, 0) + 1
    overlap = 0
    for w in a:
        if common.get(w, 0) > 0:
            overlap += 1
            common[w] -= 1
    if overlap == 0:
        return 0.0
    p, rc = overlap / len(a), overlap / len(r)
    return 2 * p * rc / (p + rc)
