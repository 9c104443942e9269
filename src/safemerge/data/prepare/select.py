"""Row selection shared by ``safemerge data prepare`` and evaluation suites: ``where:`` filters and seeded
``sample:``.

``where: {column: value}`` keeps the rows whose column equals ``value``; ``where: {column: [v1, v2]}`` keeps the
rows whose column is one of the listed values; several columns must all match. Values compare by type: a YAML
``true``/``false`` matches a boolean cell or the text ``"true"``/``"false"`` (any case: CSV cells are text), a
number matches a number or a text cell holding that number, a string matches that exact string (or a number cell
that it spells), ``null`` matches an empty (missing/None) cell.

``sample: N`` (with ``seed``) keeps a seeded random subset of ``min(N, rows)`` rows **per language**, in their
original order. The draw of a language depends only on the seed, the language and that language's rows, so the
same spec gives the same rows on every run and machine, and asking for fewer languages keeps the others' rows.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar, Union

from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr

Scalar = Union[StrictBool, StrictInt, StrictFloat, StrictStr, None]
WhereValue = Union[Scalar, list[Scalar]]
Where = dict[str, WhereValue]

T = TypeVar("T")


def value_matches(value: Any, wanted: Any) -> bool:
    """Whether one cell ``value`` matches one ``where`` value (a list: any of its values; rules in the module doc)."""
    if isinstance(wanted, list):
        return any(value_matches(value, w) for w in wanted)
    if wanted is None:
        return value is None or (isinstance(value, str) and not value.strip())
    if isinstance(wanted, bool):
        if isinstance(value, bool):
            return value is wanted
        return isinstance(value, str) and value.strip().lower() == ("true" if wanted else "false")
    if isinstance(wanted, (int, float)):
        if isinstance(value, bool):
            return False
        if isinstance(value, (int, float)):
            return value == wanted
        if isinstance(value, str):
            try:
                return float(value.strip()) == float(wanted)
            except ValueError:
                return False
        return False
    if isinstance(value, str):
        return value == wanted
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(wanted) == value
        except ValueError:
            return False
    return False


def row_matches(row: dict[str, Any], where: Where) -> bool:
    """Whether ``row`` matches every column of ``where`` (an absent column is an empty cell)."""
    return all(value_matches(row.get(col), wanted) for col, wanted in where.items())


def missing_columns(rows: Sequence[dict[str, Any]], where: Where) -> list[str]:
    """The ``where`` columns that no row has (a typo in the spec rather than an empty cell)."""
    return [col for col in where if not any(col in r for r in rows)]


def sample_indices(n_rows: int, n: int, seed: Hashable) -> list[int]:
    """Sorted indices of a seeded random subset of ``min(n, n_rows)`` of ``range(n_rows)``.

    ``seed`` is an int or a string (``random.Random`` hashes strings with SHA-512: the same on every run)."""
    if n >= n_rows:
        return list(range(n_rows))
    return sorted(random.Random(seed).sample(range(n_rows), n))  # type: ignore[arg-type]


def sample_per_language(items: Sequence[T], n: int, seed: int | str, lang_of: Callable[[T], str]) -> list[T]:
    """At most ``n`` items per language (seeded by ``f"{seed}:{lang}"``), in their original order."""
    by_lang: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_lang.setdefault(lang_of(it), []).append(i)
    keep: set[int] = set()
    for lang, idx in by_lang.items():
        keep.update(idx[j] for j in sample_indices(len(idx), n, f"{seed}:{lang}"))
    return [it for i, it in enumerate(items) if i in keep]
