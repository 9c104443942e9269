"""The command -> module table of the CLI: each module registers exactly the commands listed for it, so a command
line that imports only its own module sees the same command as ``safemerge --help`` lists."""

from __future__ import annotations

import pytest
import typer

from safemerge import cli


def _commands(app: typer.Typer) -> set[str]:
    return set(typer.main.get_command(app).commands)


def test_each_module_registers_the_listed_commands():
    for module, names in cli.COMMAND_MODULES.items():
        assert _commands(cli.build_app([module])) == set(names), module
    assert _commands(cli.build_app()) == {n for names in cli.COMMAND_MODULES.values() for n in names}


def test_command_line_picks_its_module():
    assert cli.command_modules(["merge", "cfg.yaml", "out", "--threads", "2"]) == ["safemerge.merge.cli"]
    assert cli.command_modules(["serve", "--help"]) == ["safemerge.evaluate.cli"]
    everything = list(cli.COMMAND_MODULES)
    assert cli.command_modules([]) == everything
    assert cli.command_modules(["--help"]) == everything
    assert cli.command_modules(["mrege"]) == everything  # typer's "No such command" then lists them all


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["mrege"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "No such command" in err and "mrege" in err
