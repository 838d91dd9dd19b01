"""`fakelite data synth`: build the FaceSynth benchmark offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fakelite.commands.common import fail


def synth_command(
    out: Annotated[Path, typer.Option("--out", help="Output folder: train/, val/, test/<family>/, summary.json")],
    size: Annotated[int, typer.Option(help="Image side in pixels (even)")] = 64,
    quick: Annotated[bool, typer.Option(help="A few dozen images and tiny generators (tests, < 1 min)")] = False,
    seed: Annotated[int, typer.Option(help="Random seed (the build is deterministic)")] = 0,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
) -> None:
    """Build FaceSynth: 999 real CelebA faces and fakes from five generator families trained here.

    Example: fakelite data synth --out runs/facesynth64 --size 64
    """
    from fakelite.data.synth import FaceSynthError, build_facesynth

    try:
        summary = build_facesynth(out, size=size, quick=quick, seed=seed, progress=not quiet)
    except FaceSynthError as e:
        fail(str(e))
    psnr = summary.get("psnr_test", {})
    typer.echo("PSNR on test (dB): " + ", ".join(f"{k} {v:.1f}" for k, v in psnr.items()))
    typer.echo(f"wrote {out} (seen generator: {summary.get('seen')}); summary in {out / 'summary.json'}")
