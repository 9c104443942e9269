"""The study's model names, and what each says about its model, recorded when the name is made.

A stage spec makes a :class:`ModelId` for every model it provides (``mixture(0.15, "sft")`` -> ``mix15_sft``);
the runner records that id with the model's path as a :class:`ModelEntry`. The report reads the entry's fields
(group, method, stage, weight, languages); nothing parses a name back.

Names: ``base``, ``mix{pct}_{sft|dpo}`` (data mixtures, pct = % safety data), ``mono_{lang}_{stage}``,
``{method}_w{w}_{stage}`` (objective merges, ``w`` = weight of the safety expert), ``merge_dpo_{method}_w{w}``
(SFT -> merge -> DPO), ``lang_{method}_{l1+l2+...}_{stage}``, ``search_{aware|unaware}_{method}_{stage}``,
``layers_{method}_{stage}_{i}`` (per-layer weight lists); anything else a user gives is ``custom``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelId:
    """A model's study name and what it is: group (the stage kind that makes it), method, stage, weight, languages."""

    name: str
    group: str
    method: str | None = None
    stage: str | None = None
    weight: float | None = None
    langs: tuple[str, ...] | None = None
    layer_weights: tuple[float, ...] | None = None  # per-layer-group safety weights (group "layer_merge")
    fraction: float | None = None  # safety-data fraction of a data mixture


@dataclass
class ModelEntry:
    """A model of the study: its id's fields, where it lives, and whether the spec gave it (``models:``)."""

    name: str
    path: str
    group: str
    method: str | None = None
    stage: str | None = None
    weight: float | None = None
    langs: list[str] | None = None
    layer_weights: list[float] | None = None
    fraction: float | None = None
    given: bool = False

    @classmethod
    def of(cls, mid: ModelId, path: str, given: bool = False) -> ModelEntry:
        return cls(mid.name, str(path), mid.group, mid.method, mid.stage, mid.weight,
                   list(mid.langs) if mid.langs is not None else None,
                   list(mid.layer_weights) if mid.layer_weights is not None else None, mid.fraction, given)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fmt_weight(w: float) -> str:
    """A weight as it appears in a name: 0.3 -> '0.3', 1.0 -> '1'."""
    return f"{w:g}"


def base() -> ModelId:
    return ModelId("base", "base")


def mixture(fraction: float, stage: str) -> ModelId:
    pct = round(fraction * 100)
    return ModelId(f"mix{pct}_{stage}", "mixture", f"{pct}% mix", stage, fraction=fraction)


def monolingual(lang: str, stage: str = "sft") -> ModelId:
    return ModelId(f"mono_{lang}_{stage}", "monolingual", None, stage, langs=(lang,))


def objective(method: str, weight: float, stage: str) -> ModelId:
    return ModelId(f"{method}_w{fmt_weight(weight)}_{stage}", "objective_merge", method, stage, weight)


def merge_then_dpo(method: str, weight: float) -> ModelId:
    return ModelId(f"merge_dpo_{method}_w{fmt_weight(weight)}", "merge_then_dpo", method, "sft->merge->dpo", weight)


def language_merge(method: str, langs: list[str] | tuple[str, ...], stage: str) -> ModelId:
    return ModelId(f"lang_{method}_{'+'.join(langs)}_{stage}", "language_merge", method, stage, langs=tuple(langs))


def search(aware: bool, method: str, stage: str) -> ModelId:
    mode = "aware" if aware else "unaware"
    return ModelId(f"search_{mode}_{method}_{stage}", "search",
                   f"{method} search ({'safety-aware' if aware else 'safety-unaware'})", stage)


def layer_merge(method: str, stage: str, index: int, weights: tuple[float, ...]) -> ModelId:
    return ModelId(f"layers_{method}_{stage}_{index}", "layer_merge", method, stage, layer_weights=tuple(weights))


def custom(name: str) -> ModelId:
    return ModelId(name, "custom", name)
