"""`fakelite demo`: the main job on built-in data — build FaceSynth, train the NPR detector in full precision,
evaluate it, quantize it to W2A2 (QMDD) and W4A4 (LSQ), export both integer ONNX graphs, check parity and time them
next to FP32. The pipeline: fakelite/pipelines/demo.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _stage(title: str) -> None:
    typer.secho(f"\n== {title} ==", bold=True)


def _warn(msg: str, color: str) -> None:
    typer.secho(msg, fg=color, err=True)


def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Where everything goes (git-ignored)")] = Path("runs/demo"),
    size: Annotated[int, typer.Option(help="FaceSynth image size")] = 64,
    epochs: Annotated[int, typer.Option(help="Full-precision training epochs")] = 10,
    qat_epochs: Annotated[int, typer.Option("--qat-epochs", help="W2A2 quantization-aware training epochs")] = 4,
    w4_epochs: Annotated[int, typer.Option("--w4-epochs", help="W4A4 LSQ quantization-aware training epochs")] = 3,
    bench_size: Annotated[int, typer.Option("--bench-size", help="Input side for the latency table (the "
                                                                  "deployment target: 224)")] = 224,
    quick: Annotated[bool, typer.Option(help="Tiny data and few steps (smoke test, ~1 min)")] = False,
    fresh: Annotated[bool, typer.Option(help="Redo every stage even if its outputs exist")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: all cores)")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
    wild_units: Annotated[int, typer.Option("--wild-units", help="Real-media stage: WildSynth test images per "
                                                                   "family scored by the packaged models")] = 40,
) -> None:
    """Run the whole pipeline on the built-in FaceSynth benchmark and print the results; then the packaged
    real-media models on a WildSynth test sample (per family and policy) and on 12 real photos and videos.

    Example: fakelite demo --out runs/demo
    """
    from fakelite.pipelines.demo import run_demo

    timings = run_demo(out, size=size, epochs=epochs, qat_epochs=qat_epochs, w4_epochs=w4_epochs,
                       bench_size=bench_size, quick=quick, fresh=fresh, threads=threads, quiet=quiet,
                       wild_units=wild_units, echo=typer.echo, stage=_stage, warn=_warn)
    typer.echo("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    typer.echo(f"outputs under {out}/: data/, fp/ (model.fakelite, metrics.json, eval.json, curves.png), "
               f"w2a2/ and w4a4/ (model.fakelite, eval.json), export/ (model_w2a2_int.onnx, model_w4a4_int.onnx, "
               f"speed.json), wild/ + wild_tables.json, real_check.json")
