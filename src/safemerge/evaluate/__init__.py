"""safemerge.evaluate: generation, judges, per-language safety/capability metrics, answer loss, `serve`.

Main entry points: :func:`evaluate_model` -> :class:`EvalReport`, :func:`answer_loss` (merge search),
:func:`get_judge` (judges by name: world, openai, llamaguard). Heavy libraries load lazily.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "evaluate_model": "safemerge.evaluate.harness",
    "EvalReport": "safemerge.evaluate.report",
    "summarize": "safemerge.evaluate.harness",
    "answer_loss": "safemerge.evaluate.loss",
    "answer_loss_by_lang": "safemerge.evaluate.loss",
    "answer_logprobs": "safemerge.evaluate.loss",
    "tokenize_records": "safemerge.evaluate.loss",
    "generate": "safemerge.evaluate.generate",
    "load_model": "safemerge.evaluate.generate",
    "GenerationSettings": "safemerge.evaluate.generate",
    "EvalSuite": "safemerge.evaluate.suites",
    "world_suite": "safemerge.evaluate.suites",
    "get_judge": "safemerge.evaluate.judges.base",
    "Judge": "safemerge.evaluate.judges.base",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
