"""`fakelite demo`: the main job on built-in data — build FaceSynth, train the NPR detector in full
precision, evaluate it on every FaceSynth test set and print the table; then quantize, export and time it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer


def _stage(title: str) -> None:
    typer.secho(f"\n== {title} ==", bold=True)


def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Where everything goes (git-ignored)")] = Path("runs/demo"),
    size: Annotated[int, typer.Option(help="FaceSynth image size")] = 64,
    epochs: Annotated[int, typer.Option(help="Full-precision training epochs")] = 10,
    qat_epochs: Annotated[int, typer.Option("--qat-epochs", help="W2A2 quantization-aware training epochs")] = 4,
    quick: Annotated[bool, typer.Option(help="Tiny data and few steps (smoke test, ~1 min)")] = False,
    fresh: Annotated[bool, typer.Option(help="Redo every stage even if its outputs exist")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: all cores)")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
) -> None:
    """Run the whole pipeline on the built-in FaceSynth benchmark and print the results.

    Example: fakelite demo --out runs/demo
    """
    import torch

    from fakelite import artifact
    from fakelite.data.synth import build_facesynth
    from fakelite.eval.evaluate import evaluate
    from fakelite.eval.report import print_eval
    from fakelite.models import create_model
    from fakelite.train.loop import TrainConfig, fit

    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    timings: dict[str, float] = {}

    _stage(f"1/3 FaceSynth benchmark ({size}×{size}) → {data}")
    t = time.time()
    summary_path = data / "summary.json"
    if summary_path.exists() and not fresh:
        summary = json.loads(summary_path.read_text())
        typer.echo(f"reusing {data} (delete it or pass --fresh to rebuild)")
    else:
        summary = build_facesynth(data, size=size, quick=quick, progress=not quiet)
    timings["data"] = time.time() - t
    psnr = summary.get("psnr_test", summary.get("psnr", {}))
    if psnr:
        typer.echo("reconstruction PSNR on test (dB): " + ", ".join(f"{k} {v:.1f}" for k, v in psnr.items()))

    _stage(f"2/3 Train npr_resnet23 in full precision → {out / 'fp'}")
    t = time.time()
    fp_path = out / "fp" / "model.fakelite"
    if fp_path.exists() and not fresh:
        typer.echo(f"reusing {fp_path}")
    else:
        cfg = TrainConfig(epochs=1 if quick else epochs, batch_size=32, lr=2e-4, crop=size, seed=0, quiet=quiet,
                          lr_milestones=(max(1, epochs // 2),), max_steps_per_epoch=3 if quick else None)
        fit(create_model("npr_resnet23"), data, out / "fp", cfg, provenance={"demo": True})
    timings["train"] = time.time() - t

    _stage("3/3 Evaluate on every FaceSynth test set")
    t = time.time()
    model = artifact.load(fp_path)
    result = evaluate(model, data / "test", quiet=quiet)
    (out / "fp" / "eval.json").write_text(json.dumps(result, indent=2))
    print_eval(result, title="FP npr_resnet23 on FaceSynth (Acc at 0.5; Acc@t at the threshold chosen on val)")
    timings["eval"] = time.time() - t

    timings["total"] = time.time() - t0
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    typer.echo("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    typer.echo(f"outputs under {out}/: data/, fp/model.fakelite, fp/metrics.json, fp/eval.json, fp/curves.png")
