"""The `fakelite` command line: one Typer app; every command is a thin function over the library
(the functions live in fakelite.commands.*; heavy imports happen inside them, so `--help` is instant)."""

from __future__ import annotations

import logging
import re

import typer
import typer.core

from fakelite.commands import train as train_cmds


def _option_type_label(self, ctx):
    """The type column of `--help`: on/off flags take no value, so they show none (typer prints `<bool>`, which
    reads as if `--ptq true` worked); a repeatable option shows its element type, not `<list[Path]>`."""
    if self.is_flag or self.count:
        return None
    label = _typer_type_label(self, ctx)
    if isinstance(label, str) and self.multiple:
        label = re.sub(r"^<list\[(.+)\]>$", r"<\1>", label) + " (repeatable)"
    return label


def _argument_type_label(self, ctx):
    """A variadic argument (`paths...`) shows its element type (`<Path>`), not `<list[Path]>`."""
    label = _typer_argument_label(self, ctx)
    return re.sub(r"^<list\[(.+)\]>$", r"<\1>", label) if isinstance(label, str) else label


_typer_type_label = typer.core.TyperOption.display_type_rich
_typer_argument_label = typer.core.TyperArgument.display_type_rich
typer.core.TyperOption.display_type_rich = _option_type_label
typer.core.TyperArgument.display_type_rich = _argument_type_label

APP_HELP = """Train, compress and deploy lightweight deepfake detectors on CPU.

Start with: fakelite demo   (builds a small benchmark, trains, quantizes, exports and benchmarks; see README)

Example: fakelite detect photo.jpg clip.mp4 --model runs/demo/fp/model.fakelite --json verdicts.json

Example: fakelite train --data runs/demo/data --out runs/fp --epochs 5 && fakelite eval --model runs/fp/model.fakelite --data runs/demo/data/test

Each command has --help with an example."""

app = typer.Typer(
    name="fakelite",
    help=APP_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="""Datasets: build the FaceSynth and WildSynth benchmarks, split folders.

Example: fakelite data synth --out runs/facesynth64 --size 64

Example: fakelite data wild --out runs/wildsynth

Example: fakelite data split --src faces/ --ratios 70/15/15 --out faces_split --link""", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _show_version(value: bool) -> None:
    if value:
        from fakelite import __version__

        typer.echo(f"fakelite {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print the version and exit"),
) -> None:
    """Options of `fakelite` itself (the commands are listed below)."""

app.command("train")(train_cmds.train_command)
app.command("eval")(train_cmds.eval_command)


@app.command("models")
def models_command() -> None:
    """List the registered architectures with their parameter counts, and the packaged models (`--model default`).

    Example: fakelite models
    """
    from fakelite.models import create_model, get_entry, list_models
    from fakelite.packaged import packaged_models

    typer.echo("architectures:")
    for name in list_models():
        m = create_model(name)
        n = sum(p.numel() for p in m.parameters())
        e = get_entry(name)
        recipe = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in e.training.items())
        typer.echo(f"  {name:20s} {n:>12,d} params  {e.description}" + (f"  [train: {recipe}]" if recipe else ""))
    typer.echo("packaged models (--model NAME):")
    for r in packaged_models():
        if not r["installed"]:
            typer.echo(f"  {r['name']:14s} not installed ({r.get('error') or 'expected ' + r['path']}); "
                       f"meant to be {r['role']}")
            continue
        src = r["threshold_source"] or {}
        fpr = f" (FPR {100 * src['target_fpr']:.0f} % on real)" if src.get("target_fpr") is not None else ""
        typer.echo(f"  {r['name']:14s} {r['arch']} {r['bits']:6s} {r['bytes'] / 1e3:8.1f} kB  threshold "
                   f"{r['threshold']:.4f}{fpr}  policy {r['policy']}  {r['description']}")


def _register_optional() -> None:
    """Commands owned by other modules, registered here so `fakelite --help` lists them all."""
    from fakelite.commands import ablation, compress, data_synth, demo, importing, quant, robust
    from fakelite.commands import compare as compare_cmds
    from fakelite.commands import deploy as deploy_cmds
    from fakelite.commands import scan as scan_cmds
    from fakelite.commands import threshold as threshold_cmds
    from fakelite.serve import command as serve_cmds

    data_app.command("synth")(data_synth.synth_command)
    data_app.command("wild")(data_synth.wild_command)
    app.command("import")(importing.import_command)
    app.command("quantize")(quant.quantize_command)
    app.command("cost")(quant.cost_command)
    app.command("ablation")(ablation.ablation_command)
    app.command("compare")(compare_cmds.compare_command)
    app.command("prune")(compress.prune_command)
    app.command("distill")(compress.distill_command)
    app.command("recipe")(compress.recipe_command)
    app.command("baseline")(compress.baseline_command)
    data_app.command("split")(compress.split_command)
    app.command("export")(deploy_cmds.export_command)
    app.command("detect")(deploy_cmds.detect_command)
    app.command("stream")(deploy_cmds.stream_command)
    app.command("bench")(deploy_cmds.bench_command)
    app.command("scan")(scan_cmds.scan_command)
    app.command("serve")(serve_cmds.serve_command)
    app.command("robustness")(robust.robustness_command)
    app.command("demo")(demo.demo_command)
    app.command("threshold")(threshold_cmds.threshold_command)


_register_optional()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
