"""`fakelite robustness`: detectors under JPEG, blur, rescaling, noise, low light, occlusion and combinations."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from fakelite.commands.common import fail, load_model_or_fail


def _labels(paths: list[Path]) -> list[str]:
    """Short, unique names for the models: the file stem, or the run folder for `model.fakelite`."""
    names = []
    for p in paths:
        base = p.parent.name if p.stem == "model" and p.parent.name else p.stem
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def robustness_command(
    model: Annotated[list[Path], typer.Option("--model", help="A .fakelite file; repeat to compare models side by side")],
    data: Annotated[Path, typer.Option("--data", help="Test sets root (a dataset root with test/ uses test/)")],
    out: Annotated[Path, typer.Option("--out", help="Run folder for robustness.{md,json} and robustness_<pert>.png")] = Path("runs/robustness"),
    quick: Annotated[bool, typer.Option(help="Subsample to --per-set images per test set (balanced)")] = False,
    per_set: Annotated[int, typer.Option("--per-set", help="Images per test set with --quick")] = 100,
    perturbation: Annotated[list[str] | None, typer.Option("--perturbation", "-p", help="Only these (jpeg, blur, rescale, noise, low_light, occlusion, wild); repeatable")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random perturbations (noise, occlusion) and of --quick")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per inference batch")] = 64,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar")] = False,
) -> None:
    """Acc/AP/AUC under perturbations at several strengths (applied before the model's preprocessing).

    Writes a table (stdout and OUT/robustness.md), OUT/robustness.json and one chart per perturbation
    (OUT/robustness_<pert>.png, all models side by side). Deterministic.

    Example: fakelite robustness --model runs/fp64/model.fakelite --model runs/w2a2/model.fakelite --data runs/facesynth64 --quick
    """
    import torch

    from fakelite.eval import robustness as rb

    if threads:
        torch.set_num_threads(threads)
    models = {name: load_model_or_fail(p) for name, p in zip(_labels(model), model, strict=True)}
    try:
        sets = rb.resolve_data(data)
    except FileNotFoundError as e:
        fail(str(e))
    if quick:
        sets = rb.subsample(sets, per_set, seed)
    try:
        res = rb.run_robustness(models, sets, perturbation, seed=seed, batch_size=batch_size, quiet=quiet)
    except KeyError as e:
        fail(str(e).strip("'\""))
    res["command"] = "fakelite " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    res["model_files"] = {name: str(p) for name, p in zip(res["models"], model, strict=True)}
    res["quick"] = quick
    rb.print_table(res)
    if res["skipped"]:
        typer.echo(f"skipped {len(res['skipped'])} unreadable file(s); see 'skipped' in the JSON", err=True)
    written = rb.write(res, out)
    typer.echo(f"wrote {', '.join(str(p) for p in written[:2])} and {len(written) - 2} chart(s) in {out}")
