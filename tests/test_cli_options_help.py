"""Every option of every command has help text; on/off flags show no value type; `--version`; examples at the
top level and in the data group; run-writing commands default to run folders, never to the committed docs/."""

import typer.main
from typer.testing import CliRunner

from fakelite import __version__
from fakelite.cli import app

runner = CliRunner()


def _walk(cmd, path=()):
    if hasattr(cmd, "commands"):
        yield path, cmd
        for name, sub in cmd.commands.items():
            yield from _walk(sub, (*path, name))
    else:
        yield path, cmd


def test_every_option_of_every_command_has_help():
    missing = [f"fakelite {' '.join(path)} {p.opts[0]}" for path, cmd in _walk(typer.main.get_command(app))
               for p in cmd.params if p.param_type_name == "option" and not (p.help or "").strip()]
    assert not missing, missing


def test_help_shows_no_bool_or_list_type_names():
    for path, _ in _walk(typer.main.get_command(app)):
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0, (path, r.output)
        assert "<bool>" not in r.output and "<list[" not in r.output, (path, r.output)


def test_flags_reject_values_and_help_says_so():
    r = runner.invoke(app, ["quantize", "--help"], env={"COLUMNS": "200"})
    line = next(ln for ln in r.output.splitlines() if "--ptq " in ln)
    assert "<" not in line.split("Post-training")[0]  # no value type: it is a switch


def test_version_and_top_level_examples():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"fakelite {__version__}"
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "Example: fakelite" in top and "fakelite demo" in top and "make demo" not in top
    assert "Example: fakelite data synth" in runner.invoke(app, ["data", "--help"], env={"COLUMNS": "200"}).output


def test_run_outputs_default_to_run_folders():
    group = typer.main.get_command(app)
    for name in ("robustness", "compare"):
        (out,) = [p for p in group.commands[name].params if p.name == "out"]
        assert str(out.default).startswith("runs/"), (name, out.default)
