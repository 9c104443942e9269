"""The ``safemerge`` command line.

Each pipeline folder contributes its commands through a ``register(app)`` function in its own ``cli.py``
(``safemerge.merge.cli``, ``safemerge.data.cli``, ...). Heavy libraries are imported inside the commands so
that ``safemerge --help`` stays fast.

User errors (:class:`safemerge.errors.SafemergeError`) are printed as one line and exit with code 2.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from safemerge import __version__
from safemerge.errors import SafemergeError

# module -> the top-level commands it registers; order = the order in `safemerge --help`: the pipeline order.
# A command line naming one of them imports only its module (the others cost ~0.2 s of imports per run);
# tests/test_cli_registry.py checks this table against what each module registers.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "safemerge.data.cli": ("testbed",),
    "safemerge.data.synth_cli": ("synth",),
    "safemerge.train.cli": ("train",),
    "safemerge.merge.cli": ("merge",),
    "safemerge.search.cli": ("search",),
    "safemerge.evaluate.cli": ("eval", "serve"),
    "safemerge.study.cli": ("study",),
}


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


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = sys.argv[1:] if argv is None else argv
    app = build_app(command_modules(args))
    try:
        app(args=args, prog_name="safemerge")
    except SafemergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written was kept, re-run to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
