"""Judges: one interface (:class:`Judge`), registry by name (:data:`JUDGES`, :func:`get_judge`)."""

from safemerge.evaluate.judges.base import (
    JUDGES,
    Judge,
    JudgeError,
    PairItem,
    PairVerdict,
    SafetyItem,
    SafetyVerdict,
    get_judge,
)

__all__ = ["JUDGES", "Judge", "JudgeError", "PairItem", "PairVerdict", "SafetyItem", "SafetyVerdict", "get_judge"]
