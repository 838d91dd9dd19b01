"""`fakelite demo`: the main job on built-in data — build FaceSynth, train the NPR detector in full
precision, evaluate it on every FaceSynth test set and print the table; then quantize it to W2A2 with QMDD's
method (NPR + CQB + SLR), export the integer ONNX graph, check parity and time it next to FP32."""

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

    _stage(f"1/5 FaceSynth benchmark ({size}×{size}) → {data}")
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

    _stage(f"2/5 Train npr_resnet23 in full precision → {out / 'fp'}")
    t = time.time()
    fp_path = out / "fp" / "model.fakelite"
    if fp_path.exists() and not fresh:
        typer.echo(f"reusing {fp_path}")
    else:
        cfg = TrainConfig(epochs=1 if quick else epochs, batch_size=32, lr=2e-4, crop=size, seed=0, quiet=quiet,
                          lr_milestones=(max(1, epochs // 2),), max_steps_per_epoch=3 if quick else None)
        torch.manual_seed(0)  # the initial weights too: the demo's numbers must repeat run to run
        fit(create_model("npr_resnet23"), data, out / "fp", cfg, provenance={"demo": True})
    timings["train"] = time.time() - t

    _stage("3/5 Evaluate on every FaceSynth test set")
    t = time.time()
    model = artifact.load(fp_path)
    result = evaluate(model, data / "test", quiet=quiet)
    (out / "fp" / "eval.json").write_text(json.dumps(result, indent=2))
    print_eval(result, title="FP npr_resnet23 on FaceSynth (Acc at 0.5; Acc@t at the threshold chosen on val)")
    timings["eval"] = time.time() - t

    _stage(f"4/5 Quantize to W2A2 (QMDD: NPR + CQB + SLR-N2UQ), {qat_epochs} QAT epochs → {out / 'w2a2'}")
    t = time.time()
    q_path = out / "w2a2" / "model.fakelite"
    if q_path.exists() and not fresh:
        typer.echo(f"reusing {q_path}")
    else:
        from fakelite.quant import QuantConfig
        from fakelite.quant.qat import run_quantization

        qcfg = QuantConfig(w_bits=2, a_bits=2, quantizer="slr-n2uq", cqb=True)
        run_quantization(artifact.load(fp_path), data, out / "w2a2", qcfg, epochs=1 if quick else qat_epochs,
                         lr_schedule="linear", max_steps=3 if quick else None, quiet=quiet,
                         calib=32 if quick else 256, provenance={"demo": True})
    qmodel = artifact.load(q_path)
    qresult = evaluate(qmodel, data / "test", quiet=quiet)
    (out / "w2a2" / "eval.json").write_text(json.dumps(qresult, indent=2))
    print_eval(qresult, title="W2A2 npr_resnet23 (QMDD: NPR + CQB + SLR) on FaceSynth")
    timings["quantize"] = time.time() - t

    _stage("5/5 Export the integer ONNX graph, check parity, time it next to FP32")
    t = time.time()
    _export_and_time(fp_path, q_path, qmodel, data, out, size, quick)
    timings["export+bench"] = time.time() - t

    timings["total"] = time.time() - t0
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    typer.echo("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    typer.echo(f"outputs under {out}/: data/, fp/ (model.fakelite, metrics.json, eval.json, curves.png), "
               f"w2a2/ (model.fakelite, eval.json), export/ (model_fp32.onnx, model_w2a2_int.onnx, speed.json)")


def _export_and_time(fp_path: Path, q_path: Path, qmodel, data: Path, out: Path, size: int, quick: bool) -> None:
    """Integer ONNX of the W2A2 model with a parity check on test images, then latency of FP32 PyTorch,
    FP32 ONNX Runtime and the integer graph (each in its own process) and the file sizes side by side."""
    import torch
    from rich.table import Table

    from fakelite.data.dataset import ImageDataset
    from fakelite.data.folders import labelled_images
    from fakelite.deploy.bench import compare
    from fakelite.deploy.onnx import export_onnx, parity
    from fakelite.eval.report import wide_console

    exp = out / "export"
    exp.mkdir(parents=True, exist_ok=True)
    rep = export_onnx(qmodel, exp / "model_w2a2_int.onnx")
    items = labelled_images(data / "test")
    items = items[:: max(1, len(items) // 400)]  # an even sample over every test set
    ds = ImageDataset(items, qmodel.preprocess)
    samples = [s[0] for s in (ds[i] for i in range(len(ds))) if s is not None]
    if not samples:
        typer.secho(f"no readable test images under {data / 'test'}: skipping export and timing", fg="red", err=True)
        return
    xs = torch.stack(samples)
    par = parity(qmodel, rep["path"], xs)
    typer.echo(f"integer ONNX parity on {par['n']} FaceSynth test images: same decision on {par['same_decisions']}, "
               f"max |logit diff| {par['max_abs_logit_diff']:.2e}")
    runs = 10 if quick else 50
    fp = compare(fp_path, ["torch", "onnx"], size=size, threads=1, runs=runs)
    q = compare(q_path, ["onnx-int8"], size=size, threads=1, runs=runs)
    rows = {**fp["results"], **{"onnx-int8 (W2A2)": q["results"]["onnx-int8"]}}
    base = rows["torch"]["latency_ms"]["median"]
    t = Table(title=f"npr_resnet23 at {size}×{size}, batch 1, 1 thread")
    for c in ("backend", "median ms", "p90 ms", "speed-up vs FP32 PyTorch", "file"):
        t.add_column(c, justify="left" if c == "backend" else "right")
    for name, r in rows.items():
        t.add_row(name, f"{r['latency_ms']['median']:.2f}", f"{r['latency_ms']['p90']:.2f}",
                  f"{base / r['latency_ms']['median']:.2f}×", f"{r['model_bytes'] / 1e3:,.0f} kB")
    t.add_row("W2A2 .fakelite (packed)", "", "", "", f"{q_path.stat().st_size / 1e3:,.0f} kB")
    wide_console().print(t)
    (exp / "speed.json").write_text(json.dumps({"parity": par, "bench": rows}, indent=2))
