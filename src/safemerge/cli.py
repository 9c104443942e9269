"""The ``safemerge`` command line.

Each pipeline folder contributes its commands through a ``register(app)`` function in its own ``cli.py``
(``safemerge.merge.cli``, ``safemerge.data.cli``, ...). Heavy libraries are imported inside the commands so
that ``safemerge --help`` stays fast.

User errors (:class:`safemerge.errors.SafemergeError`) are printed as one line and exit with code 2. An unexpected
exception (from transformers, trl, torch, safetensors, gguf, ...) in one of :data:`LIBRARY_BOUNDARY_COMMANDS` is
printed as one line ``error: <command>: <ExceptionType>: <first line>; rerun with --debug for the traceback`` and
exits 2 as well; ``--debug`` (anywhere on the command line) or ``SAFEMERGE_DEBUG=1`` prints the traceback first.
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys
import traceback

import typer

from safemerge import __version__
from safemerge.errors import InputError, SafemergeError

# module -> the top-level commands it registers; order = the order in `safemerge --help`: the pipeline order.
# A command line naming one of them imports only its module (the others cost ~0.2 s of imports per run);
# tests/test_cli_registry.py checks this table against what each module registers.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "safemerge.data.cli": ("testbed", "data"),
    "safemerge.search.synth_cli": ("synth",),
    "safemerge.utils.cli": ("convert",),
    "safemerge.train.cli": ("train",),
    "safemerge.merge.cli": ("merge",),
    "safemerge.search.cli": ("search",),
    "safemerge.evaluate.cli": ("eval", "serve"),
    "safemerge.study.cli": ("study",),
}

# Commands that run third-party model code (transformers, trl, torch, safetensors, gguf): an unexpected exception
# there is reported as one line (exit 2) instead of a traceback; --debug / SAFEMERGE_DEBUG=1 shows the traceback.
LIBRARY_BOUNDARY_COMMANDS: tuple[str, ...] = ("train", "eval", "serve", "convert")

# OSErrors naming a file that the user's path or its permissions cause: one line (exit 2) for every command
_PATH_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOENT", "EACCES", "EPERM", "ENAMETOOLONG", "EISDIR",
                                                      "ENOTDIR", "ELOOP", "EROFS") if hasattr(errno, n))


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"safemerge {__version__}")
        raise typer.Exit()


def command_modules(argv: list[str]) -> list[str]:
    """The modules to register for this command line: the one that owns its command, else all (``--help``,
    ``--version``, an unknown command: typer then lists every command)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    owners = [mod for mod, names in COMMAND_MODULES.items() if command in names]
    return owners or list(COMMAND_MODULES)


def build_app(modules: list[str] | None = None) -> typer.Typer:
    """The typer app with the commands of ``modules`` (default: all of :data:`COMMAND_MODULES`)."""
    app = typer.Typer(
        name="safemerge",
        help="Build capable and safe multilingual LLMs by merging fine-tuned experts instead of mixing data.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode="rich",
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
        ),
        debug: bool = typer.Option(
            False, "--debug", help="Show the full traceback of unexpected errors (also: SAFEMERGE_DEBUG=1; accepted "
            "after the command too)."
        ),
    ) -> None:
        """safemerge: data -> train -> merge -> search -> evaluate -> study."""

    for mod_name in COMMAND_MODULES if modules is None else modules:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:  # a pipeline folder that has no commands (yet)
            if exc.name == mod_name:
                continue
            raise
        mod.register(app)
    return app


def debug_args(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` with ``--debug`` moved to the front (the root option, so it may be written after the command too;
    nothing after a ``--`` is touched), and whether the traceback was asked for (``--debug`` or SAFEMERGE_DEBUG)."""
    end = argv.index("--") if "--" in argv else len(argv)
    flag = "--debug" in argv[:end]
    rest = [a for a in argv[:end] if a != "--debug"] + argv[end:]
    env = os.environ.get("SAFEMERGE_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")
    return (["--debug"] + rest if flag else rest), flag or env


def boundary_message(command: str, exc: BaseException) -> str:
    """``<command>: <ExceptionType>: <first line of its message>`` (the message part omitted when empty)."""
    lines = str(exc).strip().splitlines()
    first = lines[0].strip()[:300] if lines else ""
    return f"{command}: {type(exc).__name__}" + (f": {first}" if first else "")


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if hasattr(signal, "SIGXFSZ"):  # past the file size limit a write fails with EFBIG (an error) instead of a kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    args, debug = debug_args(sys.argv[1:] if argv is None else list(argv))
    command = next((a for a in args if not a.startswith("-")), None)
    app = build_app(command_modules(args))
    try:
        try:
            app(args=args, prog_name="safemerge")
        except OSError as exc:  # a full disk outside the atomic writers (which raise SafemergeError themselves)
            from safemerge.utils.atomic import disk_full_error

            err = disk_full_error(exc, exc.filename if isinstance(exc.filename, str) else "output")
            if err is None and exc.filename is not None and exc.errno in _PATH_ERRNOS:
                err = InputError(f"{exc.filename}: {exc.strerror}; check the path and its permissions")
            if err is None:
                raise
            raise err from None
    except SafemergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - only at the library boundary commands; re-raised elsewhere
        if command not in LIBRARY_BOUNDARY_COMMANDS:
            raise
        if debug:
            traceback.print_exc()
            print(f"error: {boundary_message(command, exc)}", file=sys.stderr)
        else:
            print(f"error: {boundary_message(command, exc)}; rerun with --debug for the traceback", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written was kept, re-run to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
