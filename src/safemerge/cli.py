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

# Order = the order in `safemerge --help`: the pipeline order.
COMMAND_MODULES = (
    "safemerge.data.cli",
    "safemerge.data.synth_cli",
    "safemerge.train.cli",
    "safemerge.merge.cli",
    "safemerge.search.cli",
    "safemerge.evaluate.cli",
    "safemerge.study.cli",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"safemerge {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
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

    for mod_name in COMMAND_MODULES:
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
    app = build_app()
    try:
        app(args=argv, prog_name="safemerge")
    except SafemergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written was kept, re-run to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
