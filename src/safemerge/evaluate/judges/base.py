"""The judge interface, verdict types and the registry of judges by name.

A judge answers two questions:
- safety: is this answer to this prompt unsafe (harmful)? did it refuse?  -> :class:`SafetyVerdict`
- preference: which of two answers to a prompt is better?                  -> :class:`PairVerdict`
A verdict field is None when the judge could not decide (unparseable output); such prompts are reported as
unjudged and left out of the metrics, never silently counted as safe.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from safemerge.errors import ConfigError, SafemergeError

Winner = Literal["A", "B", "tie"]


@dataclass(frozen=True)
class SafetyItem:
    prompt: str
    answer: str
    lang: str
    kind: str = "harmful"  # "harmful" or "benign"


AnswerClass = Literal["refusal", "compliance", "nonanswer"]


@dataclass(frozen=True)
class SafetyVerdict:
    unsafe: bool | None  # harmful content in the answer (None: could not tell)
    refusal: bool | None  # the answer declines to help (None: this judge cannot tell)
    raw: str = ""
    # three-class judges (``rules``): "refusal" / "compliance" / "nonanswer" (empty, degenerate, wrong language,
    # template junk); None for judges that do not separate non-answers. A non-answer is never unsafe.
    answer_class: AnswerClass | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairItem:
    prompt: str
    answer_a: str
    answer_b: str
    lang: str
    reference: str | None = None


@dataclass(frozen=True)
class PairVerdict:
    winner: Winner | None
    raw: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JudgeError(SafemergeError):
    """The judge failed (after retries); verdicts obtained so far are kept and the next run resumes."""


class Judge(ABC):
    """A pluggable judge. ``batch_size`` items are judged per call; the harness journals each batch."""

    name: str = "judge"
    supports_pairwise: bool = True
    batch_size: int = 64

    def settings(self) -> dict[str, Any]:
        """Everything that changes verdicts (model, prompts, decoding); part of the verdict cache key."""
        return {"name": self.name}

    def check(self) -> None:
        """Cheap pre-flight check (reachability, files) before any heavy work; raises SafemergeError."""

    @abstractmethod
    def judge_safety(self, items: Sequence[SafetyItem]) -> list[SafetyVerdict]:
        """One verdict per item, in order."""

    def judge_pairs(self, items: Sequence[PairItem]) -> list[PairVerdict]:
        raise ConfigError(f"judge {self.name!r} cannot compare two answers; use --judge world or openai for win_rate")


# name -> "module:Class"; imported lazily so heavy dependencies load only when used.
JUDGES: dict[str, str] = {
    "world": "safemerge.evaluate.judges.world:WorldJudge",
    "rules": "safemerge.evaluate.judges.freeform:RulesJudge",
    "openai": "safemerge.evaluate.judges.openai:OpenAIJudge",
    "llamaguard": "safemerge.evaluate.judges.llamaguard:LlamaGuardJudge",
}


# The default judge name: resolved per model by :func:`default_judge` ("world" or "rules").
AUTO = "auto"
JUDGE_CHOICES: tuple[str, ...] = (AUTO, *JUDGES)


def chat_template_of(model: Any) -> str | None:
    """The chat template of a model dir (chat_template.jinja or tokenizer_config.json), a loaded model
    (anything with a ``tokenizer``) or a tokenizer; None when there is none or it cannot be read."""
    import json
    import os
    from pathlib import Path

    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        jinja = p / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        try:
            cfg = json.loads((p / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        tmpl = cfg.get("chat_template") if isinstance(cfg, dict) else None
        return tmpl if isinstance(tmpl, str) else None
    tok = getattr(model, "tokenizer", model)
    tmpl = getattr(tok, "chat_template", None)
    return tmpl if isinstance(tmpl, str) else None


def default_judge(model: Any) -> str:
    """The judge ``auto`` stands for: ``"world"`` for the built-in world's models, ``"rules"`` for every other.

    Rule: a model is a world model when its chat template is safemerge's testbed template
    (``safemerge.data.tokenizer.CHAT_TEMPLATE``, ``<|user|>...<|end|><|assistant|>``). The world tokenizer carries
    it, so the world base and everything trained or merged from it (tokenizer copied) do, as do the tiny test
    checkpoints of ``safemerge.data.tiny``; those models only ever speak the world's synthetic language,
    which the world judge's lexicon is written for. Real models (SmolLM2, Llama, Qwen, ...) have their own
    templates (or none) and get the ``rules`` judge. ``model``: a model dir, a ``LoadedModel``, a tokenizer,
    or a ``(model, tokenizer)`` pair.
    """
    from safemerge.data.tokenizer import CHAT_TEMPLATE

    if isinstance(model, tuple) and len(model) == 2:
        model = model[1]
    tmpl = chat_template_of(model)
    return "world" if tmpl is not None and tmpl.strip() == CHAT_TEMPLATE.strip() else "rules"


def get_judge(judge: str | Judge, **options: Any) -> Judge:
    """A judge instance from its registry name (with constructor options) or an instance (returned as is)."""
    if isinstance(judge, Judge):
        return judge
    if judge == AUTO:
        raise ConfigError("judge 'auto' depends on the model; resolve it with default_judge(model) first "
                          "(evaluate_model does)")
    if judge not in JUDGES:
        raise ConfigError(f"unknown judge {judge!r}; choose one of {', '.join(sorted(JUDGE_CHOICES))}")
    import inspect

    mod, cls_name = JUDGES[judge].split(":")
    cls = getattr(importlib.import_module(mod), cls_name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(k for k, v in options.items() if k not in accepted and v is not None)
    if unknown:
        raise ConfigError(f"judge {judge!r} takes no option(s) {', '.join(unknown)}; accepted: "
                          f"{', '.join(sorted(accepted)) or 'none'}")
    return cls(**{k: v for k, v in options.items() if k in accepted})
