"""`fakelite quantize` (QAT or PTQ from a full-precision .fakelite) and `fakelite cost`.

The QAT/PTQ logic lives in `fakelite.pipelines.qat.run_quantization`; `--recipe NAME` runs another pipeline
(`defakeq`: `fakelite.pipelines.defakeq.run_defakeq`); more can be added with `register_pipeline`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from fakelite.commands.common import fail, load_model_or_fail, scoring_overrides

QUANTIZER_CHOICES = "minmax|percentile|lsq|n2uq|slr-lsq|slr-n2uq|slr-minmax|binary"

# Pipelines `--recipe NAME` runs: name -> fn(fp_model, data, out, options: dict) -> metrics dict.
PIPELINES: dict[str, Callable[..., dict]] = {}


def register_pipeline(name: str, fn: Callable[..., dict]) -> None:
    """Make `fakelite quantize --recipe NAME` call fn(fp_model, data, out, options)."""
    PIPELINES[name] = fn


def _defakeq(fp, data: Path | None, out: Path, options: dict) -> dict:
    """`--recipe defakeq`: the DeFakeQ pipeline with the quantize command's options; errors exit in one line."""
    from fakelite.pipelines.defakeq import run_defakeq

    if options.get("budget_mb") is None and options.get("budget_bops") is None:
        fail("--recipe defakeq needs --budget-mb or --budget-bops")
    try:
        return run_defakeq(fp, data, out, budget_mb=options.get("budget_mb"), budget_bops=options.get("budget_bops"),
                           calib=int(options.get("calib", 256)), seed=int(options.get("seed", 0)),
                           size=options.get("size"), batch_size=int(options.get("batch_size", 32)),
                           quiet=bool(options.get("quiet", True)), calib_batches=options.get("calib_batches"),
                           calib_info=options.get("calib_info"))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))


register_pipeline("defakeq", _defakeq)


def _find_pipeline(name: str) -> Callable[..., dict]:
    if name not in PIPELINES:
        fail(f"--recipe {name!r} is not available (known: {', '.join(sorted(PIPELINES)) or 'none'}; "
             f"omit --recipe for plain QAT/PTQ)")
    return PIPELINES[name]


def quantize_command(
    model: Annotated[Path, typer.Option("--model", help="Full-precision .fakelite to start from")],
    data: Annotated[Path | None, typer.Option("--data", help="Dataset root with train/ (and val/) in 0_real/1_fake "
                                              "layout; optional for --ptq / --recipe defakeq with --calib-data")] = None,
    out: Annotated[Path, typer.Option("--out", help="Run folder: writes model.fakelite and metrics.json")] = Path("runs/quant"),
    w_bits: Annotated[int, typer.Option("--w-bits", help="Weight bits (1-8)")] = 2,
    a_bits: Annotated[int, typer.Option("--a-bits", help="Activation bits (1-8)")] = 2,
    quantizer: Annotated[str, typer.Option(help=f"Quantizer: {QUANTIZER_CHOICES}")] = "n2uq",
    cqb: Annotated[bool, typer.Option("--cqb/--no-cqb", help="QMDD's Connected Quantized Block shortcuts")] = False,
    epochs: Annotated[int, typer.Option(help="QAT epochs (ignored with --ptq)")] = 10,
    ptq: Annotated[bool, typer.Option("--ptq", help="Post-training quantization only: calibrate, no training")] = False,
    calib: Annotated[int, typer.Option("--calib", help="Images used for calibration / quantizer init (with --calib-data "
                                       "zeroq: 64 synthetic inputs unless set)")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training and calibration batch size")] = 32,
    lr: Annotated[float, typer.Option(help="Learning rate (quantizer parameters of N2UQ kinds get lr/10)")] = 2e-4,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    teacher_kd: Annotated[bool, typer.Option("--teacher-kd/--no-teacher-kd",
                                             help="Distil from the full-precision model (logit KD)")] = False,
    kd_weight: Annotated[float, typer.Option("--kd-weight", help="Weight of the KD term with --teacher-kd")] = 0.5,
    size: Annotated[int | None, typer.Option(help="Crop size (default: the model's)")] = None,
    first_last: Annotated[str, typer.Option("--first-last", help="Stem conv and classifier: 8bit|fp|target")] = "8bit",
    lr_schedule: Annotated[str, typer.Option("--lr-schedule", help="step|linear|cosine")] = "step",
    recipe: Annotated[str | None, typer.Option(help="Named recipe (e.g. defakeq)")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap steps per epoch (quick runs)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
    budget_mb: Annotated[float | None, typer.Option("--budget-mb", help="Storage budget in MB (recipes such as defakeq)")] = None,
    budget_bops: Annotated[float | None, typer.Option("--budget-bops", help="BOPs budget (recipes such as defakeq)")] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="Scoring policy stored in the model: center | "
                                                                "resize256 | tiles (default: the FP model's)")] = None,
    aggregate: Annotated[str | None, typer.Option("--aggregate", help="tiles: mean | max | topk")] = None,
    target_fpr: Annotated[float, typer.Option("--target-fpr", help="Threshold: flag at most this fraction of val/0_real")] = 0.05,
    youden: Annotated[bool, typer.Option("--youden", help="Keep the balanced-accuracy (Youden) threshold of "
                                                          "val instead of --target-fpr")] = False,
    keep_checkpoint: Annotated[bool, typer.Option("--keep-checkpoint", help="Keep --out's checkpoint.safetensors "
                                                                            "after the run finishes")] = False,
    grad_clip: Annotated[float | None, typer.Option(
        "--grad-clip", help="Cap each parameter's gradient at this L2 norm and zero non-finite ones "
                            "(the ablation uses 10; helps W1A1)")] = None,
    calib_data: Annotated[str | None, typer.Option("--calib-data", help="Calibrate on this folder of your own images "
                                                   "(0_real/1_fake, or unlabelled) or 'zeroq' (data-free: inputs "
                                                   "matched to the model's BatchNorm statistics) instead of DATA/train")] = None,
    zeroq_steps: Annotated[int, typer.Option("--zeroq-steps", help="ZeroQ optimisation steps per batch")] = 500,
    zeroq_label_weight: Annotated[float, typer.Option("--zeroq-label-weight", help="ZeroQ + a class term (GDFQ): "
                                                      "weight of BCE towards alternating real/fake targets; 0 = "
                                                      "ZeroQ as published")] = 0.0,
) -> None:
    """Quantize a trained detector: QAT through the training loop, or PTQ (--ptq) with calibration only.

    Without the training set (an imported checkpoint): --ptq or --recipe defakeq with --calib-data DIR|zeroq.

    Example: fakelite quantize --model runs/fp/model.fakelite --data runs/demo/data --out runs/w2a2 --w-bits 2 --a-bits 2 --quantizer slr-n2uq --cqb --epochs 5

    Example: fakelite quantize --model npr.fakelite --ptq --calib-data my_images/ --out runs/npr-w4a4 --w-bits 4 --a-bits 4 --quantizer lsq --size 64
    """
    import torch

    from fakelite.pipelines.qat import run_quantization
    from fakelite.quant import QuantConfig

    if threads:
        torch.set_num_threads(threads)
    fp = load_model_or_fail(model)
    if getattr(fp, "fakelite_quant", None):
        fail(f"{model}: already quantized; start from a full-precision model")
    scoring_overrides(fp, policy, aggregate)
    fp.threshold_source, fp.temperature = None, 1.0  # the FP model's operating point does not describe the new one
    if data is None and calib_data is None:
        fail("--data is required (or, for --ptq / --recipe defakeq, --calib-data DIR|zeroq)")
    if data is None and not ptq and recipe is None:
        fail("QAT needs --data (a dataset with train/); without one use --ptq with --calib-data")
    calib_batches = calib_info = None
    if calib_data is not None:
        from fakelite.quant.calib_data import calibration_set
        from fakelite.quant.zeroq import ZeroQConfig

        n_calib = calib if calib_data.lower() != "zeroq" or calib != 256 else 64  # ZeroQ default: 64 inputs
        try:
            cs = calibration_set(calib_data, fp, n=n_calib, batch_size=batch_size, seed=seed, size=size,
                                 zeroq=ZeroQConfig(steps=zeroq_steps, label_weight=zeroq_label_weight), quiet=quiet)
        except ValueError as e:
            fail(str(e))
        calib_batches, calib_info = cs.batches, cs.info
        typer.echo(f"calibration: {cs.n} images from {calib_data} ({cs.info['real']} real, {cs.info['fake']} fake; "
                   f"labels: {cs.info['labels']})")
    if recipe is not None:
        fn = _find_pipeline(recipe)
        options = dict(w_bits=w_bits, a_bits=a_bits, quantizer=quantizer, cqb=cqb, epochs=epochs, ptq=ptq,
                       calib=calib, batch_size=batch_size, lr=lr, seed=seed, teacher_kd=teacher_kd,
                       kd_weight=kd_weight, size=size, first_last=first_last, lr_schedule=lr_schedule,
                       max_steps=max_steps, quiet=quiet, source=str(model), budget_mb=budget_mb,
                       budget_bops=budget_bops, grad_clip=grad_clip, calib_batches=calib_batches,
                       calib_info=calib_info)
        metrics = fn(fp, data, out, options)
        typer.echo(_summary(f"recipe {recipe}", metrics if isinstance(metrics, dict) else {}))
        if data is not None:
            _target_fpr(out, data, target_fpr, youden)
        typer.echo(f"wrote {out / 'model.fakelite'} and {out / 'metrics.json'}")
        return
    try:
        qcfg = QuantConfig(w_bits=w_bits, a_bits=a_bits, quantizer=quantizer, cqb=cqb, first_last=first_last)
        if (qcfg.w_bits, qcfg.a_bits) != (w_bits, a_bits):
            typer.echo(f"note: --quantizer {quantizer} is 1-bit: quantizing W{qcfg.w_bits}A{qcfg.a_bits} "
                       f"(not W{w_bits}A{a_bits})")
        _, metrics = run_quantization(fp, data, out, qcfg, epochs=epochs, ptq=ptq, calib=calib,
                                      batch_size=batch_size, lr=lr, seed=seed, teacher_kd=teacher_kd,
                                      kd_weight=kd_weight, size=size, lr_schedule=lr_schedule, max_steps=max_steps,
                                      threads=threads, quiet=quiet, provenance={"source_model": str(model)},
                                      grad_clip=grad_clip, keep_checkpoint=keep_checkpoint,
                                      calib_batches=calib_batches, calib_info=calib_info)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    cost, v = metrics["cost"], metrics["val"]
    if v is None:  # PTQ without a dataset: closeness to the FP model on the calibration images
        a = metrics["calib_agreement"]
        typer.echo(f"PTQ W{qcfg.w_bits}A{qcfg.a_bits} {quantizer}: agrees with the FP model on "
                   f"{a['decision_agreement']:.1%} of {a['n']} calibration images (mean |Δlogit| "
                   f"{a['mean_abs_logit_diff']:.3f}); threshold {metrics['threshold']:.4f}: "
                   f"{metrics['threshold_source']}; storage {cost['storage_bytes'] / 1e3:.0f} kB "
                   f"({cost['storage_ratio']:.1f}x)")
        typer.echo(f"wrote {out / 'model.fakelite'} and {out / 'metrics.json'}")
        return
    typer.echo(_summary(f"{'PTQ' if ptq else 'QAT'} W{qcfg.w_bits}A{qcfg.a_bits} {quantizer}{' +CQB' if cqb else ''}",
                        metrics))
    _target_fpr(out, data, target_fpr, youden)
    typer.echo(f"wrote {out / 'model.fakelite'} and {out / 'metrics.json'}")


def _summary(label: str, metrics: dict) -> str:
    """'LABEL: val acc …, AP …; OPs … M (…x), storage … kB (…x)' from a metrics dict with "val" and "cost" (parts
    that are missing are left out; kB = 1000 bytes)."""
    parts = []
    v = metrics.get("val") or {}
    if v.get("acc") is not None:
        parts.append(f"val acc {v['acc']:.4f}, AP {v.get('ap') or 0:.4f}")
    elif not v:
        parts.append("no val/ split: no accuracy")
    c = metrics.get("cost") or {}
    if c:
        parts.append(f"OPs {c['ops'] / 1e6:.1f} M ({c['ops_ratio']:.1f}x), "
                     f"storage {c['storage_bytes'] / 1e3:.0f} kB ({c['storage_ratio']:.1f}x)")
    return f"{label}: " + "; ".join(parts)


def _target_fpr(out: Path, data: Path, target_fpr: float, youden: bool) -> None:
    """--target-fpr: the threshold of out/model.fakelite from data/val's real images (unless --youden)."""
    if youden:
        return
    from fakelite.commands.threshold import apply_target_fpr, echo_target_fpr

    try:
        echo_target_fpr(apply_target_fpr(out, data, target_fpr, quiet=True))
    except (FileNotFoundError, ValueError) as e:
        fail(f"--target-fpr: {e}")


def cost_command(
    model: Annotated[Path, typer.Option("--model", help="A .fakelite file")],
    size: Annotated[int | None, typer.Option(help="Input side (default: the model's crop)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the cost JSON here")] = None,
) -> None:
    """Params, MACs, FLOPs, BOPs, OPs (= FLOPs + BOPs/64) and storage of a model, as QMDD's Table 4 counts them.

    Example: fakelite cost --model runs/w2a2/model.fakelite --size 224 --json cost.json
    """
    from fakelite.quant.cost import model_cost

    m = load_model_or_fail(model)
    c = model_cost(m, size)
    try:
        from rich.table import Table

        from fakelite.eval.report import wide_console

        t = Table(title=f"{model} at {c['size']}x{c['size']}")
        t.add_column("metric")
        t.add_column("value", justify="right")
        rows = [("params", f"{c['params']:,}"), ("MACs", f"{c['macs'] / 1e6:,.1f} M"),
                ("FLOPs (FP layers)", f"{c['flops'] / 1e6:,.1f} M"), ("BOPs", f"{c['bops'] / 1e9:,.2f} G"),
                ("OPs", f"{c['ops'] / 1e6:,.1f} M ({c['ops_ratio']:.2f}x)"),
                ("storage", f"{c['storage_bytes'] / 1e3:,.1f} kB ({c['storage_ratio']:.2f}x)"),
                ("storage (QMDD formula)", f"{c['paper_storage_bytes'] / 1e3:,.1f} kB ({c['paper_storage_ratio']:.2f}x)"),
                ("bit widths", ", ".join(c["bits"]))]
        for r in rows:
            t.add_row(*r)
        wide_console().print(t)
    except ImportError:  # pragma: no cover
        typer.echo(json.dumps(c, indent=2))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(c, indent=2))
        typer.echo(f"wrote {json_out}")
