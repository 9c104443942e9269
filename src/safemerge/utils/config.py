"""Load a YAML spec (or a dict) into a pydantic model, with one-line errors naming the file and key."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from safemerge.errors import ConfigError, InputError, config_error_from_validation

M = TypeVar("M", bound=BaseModel)


def read_yaml_mapping(path: str | os.PathLike, what: str, keys_hint: str) -> dict[str, Any]:
    """The top-level mapping of the YAML file ``path``; one-line errors name the file and the fix.

    ``what`` names the file in errors ("search spec"); ``keys_hint`` lists the top-level keys a user should write.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found; pass the path of a YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level ({keys_hint})")
    return raw


def load_spec_model(source: str | os.PathLike | dict[str, Any], model: type[M], what: str,
                    keys_hint: str) -> tuple[M, Path]:
    """Validate ``source`` (a YAML file path or an already-parsed mapping) as ``model``.

    Returns the validated model and the folder that relative paths in it are relative to (the YAML's folder, or the
    working directory for a dict). ``what`` names the spec in errors ("search spec"); ``keys_hint`` lists the
    top-level keys a user should write, for the error on a non-mapping file.
    """
    if isinstance(source, dict):
        raw: dict[str, Any] = source
        root, where = Path.cwd(), what
    else:
        raw = read_yaml_mapping(source, what, keys_hint)
        root, where = Path(source).resolve().parent, str(Path(source))
    try:
        return model.model_validate(raw), root
    except ValidationError as exc:
        raise config_error_from_validation(exc, where) from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, parsed value)`` for each non-blank line of a JSONL file.

    A line that is not valid JSON raises a one-line :class:`InputError` naming ``path:line``; the caller checks
    that the file exists and what each value must hold.
    """
    for ln, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield ln, json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}:{ln}: not valid JSON; one JSON object per line") from None
