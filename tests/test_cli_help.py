"""`fakelite --help` lists every command of the interface contract, and each command's help has an example."""

import pytest
from typer.testing import CliRunner

from fakelite.cli import app

runner = CliRunner()

CONTRACT = ["train", "quantize", "eval", "cost", "export", "detect", "bench", "serve", "demo", "data"]


def test_top_level_help_lists_contract():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in CONTRACT:
        assert cmd in r.output, cmd


def _commands():
    import typer.main

    group = typer.main.get_command(app)
    out = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out += [[name, sub] for sub in cmd.commands]
        else:
            out.append([name])
    return out


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a))
def test_every_command_has_help_with_example(argv):
    r = runner.invoke(app, [*argv, "--help"])
    assert r.exit_code == 0, r.output
    assert "Example" in r.output, f"`fakelite {' '.join(argv)} --help` has no example"
