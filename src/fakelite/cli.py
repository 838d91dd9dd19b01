"""The `fakelite` command line: one Typer app; every command is a thin function over the library
(the functions live in fakelite.commands.*; heavy imports happen inside them, so `--help` is instant)."""

from __future__ import annotations

import logging

import typer

from fakelite.commands import train as train_cmds

app = typer.Typer(
    name="fakelite",
    help="Train, compress and deploy lightweight deepfake detectors. Start with: make demo",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Datasets: build the FaceSynth benchmark, split folders.", no_args_is_help=True)
app.add_typer(data_app, name="data")

app.command("train")(train_cmds.train_command)
app.command("eval")(train_cmds.eval_command)


@app.command("models")
def models_command() -> None:
    """List the registered architectures with their parameter counts.

    Example: fakelite models
    """
    from fakelite.models import create_model, get_entry, list_models

    for name in list_models():
        m = create_model(name)
        n = sum(p.numel() for p in m.parameters())
        typer.echo(f"{name:20s} {n:>12,d} params  {get_entry(name).description}")


def _register_optional() -> None:
    """Commands owned by other modules, registered here so `fakelite --help` lists them all."""
    from fakelite.commands import ablation, compress, data_synth, demo, quant, robust
    from fakelite.commands import defakeq as defakeq_cmds
    from fakelite.commands import deploy as deploy_cmds
    from fakelite.commands import scan as scan_cmds
    from fakelite.commands import serve as serve_cmds

    data_app.command("synth")(data_synth.synth_command)
    app.command("quantize")(quant.quantize_command)
    app.command("cost")(quant.cost_command)
    app.command("ablation")(ablation.ablation_command)
    app.command("compare")(defakeq_cmds.compare_command)
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


_register_optional()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
