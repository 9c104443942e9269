"""Load a YAML spec (or a dict) into a pydantic model, with one-line errors naming the file and key."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from safemerge.errors import ConfigError, InputError, config_error_from_validation

M = TypeVar("M", bound=BaseModel)



class StrictModel(BaseModel):
    """The base of every user-facing config model: an unknown key is an error (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid")


class FrozenStrictModel(StrictModel):
    """:class:`StrictModel` whose instances cannot change after validation (hashable merge-config values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_text(path: str | os.PathLike, what: str) -> str:
    """The text of the UTF-8 file ``path`` (a leading byte-order mark dropped); a one-line :class:`InputError`
    naming the file and the first bad byte when it is not UTF-8 (binary data, another encoding)."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: {what} is not UTF-8 text (invalid byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start}); save it as UTF-8") from None


def parse_yaml(text: str, source: str | os.PathLike) -> Any:
    """``yaml.safe_load(text)``; one-line :class:`ConfigError` naming ``source`` for malformed YAML and for
    nesting too deep to parse (PyYAML recurses per level)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({' '.join(str(exc).split())}); fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML (nested too deeply to parse); fix the file") from None


def read_yaml_mapping(path: str | os.PathLike, what: str, keys_hint: str) -> dict[str, Any]:
    """The top-level mapping of the YAML file ``path``; one-line errors name the file and the fix.

    ``what`` names the file in errors ("search spec"); ``keys_hint`` lists the top-level keys a user should write.
    """
    path = Path(path)
    if not os.path.isfile(path):  # os.path: pathlib's raises for a name too long
        raise InputError(f"{path}: {what} not found; pass the path of a YAML file")
    raw = parse_yaml(read_text(path, what), path) or {}
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
    # split on "\n" only: str.splitlines() also splits at U+2028, U+0085, ... which JSON strings may hold raw
    for ln, line in enumerate(read_text(path, "JSONL file").split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield ln, json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deeply
            raise InputError(f"{path}:{ln}: not valid JSON; one JSON object per line") from None
