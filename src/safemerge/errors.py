"""User-facing errors.

Every error a user can cause (bad config, missing file, corrupt checkpoint, unreachable judge) is raised as a
:class:`SafemergeError` whose message is ONE line naming the file/key and what to do. The CLI prints it as
``error: <message>`` and exits with code 2, without a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class SafemergeError(Exception):
    """An error caused by the user's input; the message is one line with the fix."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ConfigError(SafemergeError):
    """A configuration file or value is invalid."""


class InputError(SafemergeError):
    """An input file, model or dataset is missing, unreadable or inconsistent."""


def format_validation_error(exc: Any, source: str | Path | None = None) -> str:
    """Turn a pydantic ``ValidationError`` into one line: ``<source>: key.path: message; ...``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
        msg = err.get("msg", "invalid value")
        parts.append(f"{loc}: {msg}")
    prefix = f"{source}: " if source is not None else ""
    return prefix + "; ".join(parts[:5]) + (f" (+{len(parts) - 5} more)" if len(parts) > 5 else "")


def config_error_from_validation(exc: Any, source: str | Path | None = None) -> ConfigError:
    """Build a :class:`ConfigError` from a pydantic ``ValidationError``."""
    return ConfigError(format_validation_error(exc, source))
