"""`fakelite compare`: the DeFakeQ comparison study (`fakelite.studies.defakeq_compare`) from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fakelite.commands.common import fail, load_model_or_fail


def compare_command(
    data: Annotated[Path, typer.Option("--data", help="Dataset root with train/ and test/<set>/{0_real,1_fake}")],
    fp: Annotated[Path, typer.Option("--fp", help="Full-precision .fakelite to quantize")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: writes defakeq.md and defakeq.json here")] = Path("runs/compare"),
    img_dir: Annotated[Path | None, typer.Option("--img-dir", help="Charts folder (default: OUT/img)")] = None,
    calib: Annotated[int, typer.Option("--calib", help="Calibration images from train/")] = 256,
    per_set: Annotated[int, typer.Option("--per-set", help="Test images per set (balanced; 0 = all)")] = 200,
    quick: Annotated[bool, typer.Option("--quick", help="Smoke test: W3 budget; PTQ percentile, HAQ+calib, HAQ+VEFT+calib; 1 step per phase")] = False,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    quiet: Annotated[bool, typer.Option(help="No per-model lines")] = False,
) -> None:
    """Compare DeFakeQ (HAQ mixed precision, VEFT, progressive contrastive calibration) with uniform PTQ.

    Example: fakelite compare --data runs/facesynth64 --fp runs/fp64/model.fakelite --out runs/compare --threads 2
    """
    import torch

    from fakelite.studies.defakeq_compare import run_compare

    if threads:
        torch.set_num_threads(threads)
    model = load_model_or_fail(fp)
    if getattr(model, "fakelite_quant", None):
        fail(f"{fp}: already quantized; give the full-precision model")
    try:
        res = run_compare(model, data, out, img_dir, quick=quick, calib=calib, per_set=per_set or None, seed=seed,
                          quiet=quiet, echo=typer.echo)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    typer.echo(f"wrote {out / 'defakeq.md'} and {out / 'defakeq.json'} ({res['total_wall_s'] / 60:.1f} min)")
