"""`fakelite ablation`: QMDD's study (Fig. 9 ablation, Table 2 lower half, Table 4, Fig. 7) in one command."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from fakelite.commands.common import fail


def ablation_command(
    data: Annotated[Path, typer.Option("--data", help="Benchmark root: train/, val/, test/<generator>/{0_real,1_fake}")],
    size: Annotated[int, typer.Option(help="Training/eval crop (capped by the image size)")] = 64,
    epochs: Annotated[int, typer.Option(help="QAT epochs of every quantized row")] = 3,
    fp_epochs: Annotated[int, typer.Option("--fp-epochs", help="Epochs of the two FP models (when trained here)")] = 8,
    out: Annotated[Path | None, typer.Option("--out", help="Where qmdd-ablation.{md,json} and the PNGs go "
                                             "[default: docs/results; with --quick runs/ablation-quick/results]")] = None,
    work: Annotated[Path | None, typer.Option("--work", help="Cache of per-row runs, a re-run resumes from it "
                                              "[default: runs/ablation; with --quick runs/ablation-quick]")] = None,
    fp_npr: Annotated[Path | None, typer.Option("--fp-npr", help="Use this FP NPR model instead of training one")] = None,
    fp_rgb: Annotated[Path | None, typer.Option("--fp-rgb", help="Use this FP RGB model instead of training one")] = None,
    lr: Annotated[float, typer.Option(help="QAT learning rate (quantizer parameters get lr/10)")] = 2e-4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size of every row")] = 32,
    calib: Annotated[int, typer.Option("--calib", help="Calibration images per QAT row")] = 256,
    teacher_kd: Annotated[bool, typer.Option("--teacher-kd/--no-teacher-kd",
                                             help="Logit KD from the FP model in every QAT row")] = False,
    seed: Annotated[int, typer.Option(help="Random seed (every row)")] = 0,
    cqb_study: Annotated[bool, typer.Option("--cqb-study", help="Also compare CQB α₀ = 0.5 and a fixed α = 0.9")] = False,
    deployable_w2a2: Annotated[bool, typer.Option("--deployable-w2a2", help="Also train the deployable W2A2 row (LSQ, "
                                                  "NPR, no CQB: the fast integer graph) next to QMDD's W2A2")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Smoke run: a few steps and images per row (< 90 s)")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    quiet: Annotated[bool, typer.Option("--quiet/--progress", help="Hide per-epoch progress bars")] = True,
) -> None:
    """Train and evaluate QMDD's ablation on one benchmark; write OUT/qmdd-ablation.{md,json} and PNG charts.

    Rows: FP RGB/NPR; W2A2 N2UQ RGB → +NPR → +CQB → +SLR (Fig. 9); MinMax W4A4, LSQ W4A4, N2UQ W3A3, binary W1A1,
    ours W3A3/W2A2 (Table 2); OPs and storage at 224² and the training size (Table 4); Fig. 7 histograms.
    Finished rows are cached under --work, so an interrupted study resumes.

    Example: fakelite ablation --data runs/facesynth64 --size 64 --epochs 3 --fp-epochs 8 --out docs/results
    """
    from fakelite.studies.qmdd_ablation import StudyConfig, run_study

    # a smoke run never overwrites the real study's cache or report unless asked to
    out = out or Path("runs/ablation-quick/results" if quick else "docs/results")
    work = work or Path("runs/ablation-quick" if quick else "runs/ablation")
    if epochs < 1 or fp_epochs < 1:
        fail("--epochs and --fp-epochs must be ≥ 1")
    if not (data / "train").is_dir() or not (data / "test").is_dir():
        fail(f"{data}: needs train/, val/ and test/<set>/{{0_real,1_fake}} folders")
    cfg = StudyConfig(data=data, work=work, out=out, size=size, epochs=epochs, fp_epochs=fp_epochs, lr=lr,
                      batch_size=batch_size, calib=calib, teacher_kd=teacher_kd, seed=seed, threads=threads,
                      quick=quick, cqb_study=cqb_study, deployable_w2a2=deployable_w2a2, fp_npr=fp_npr, fp_rgb=fp_rgb, quiet=quiet)
    parts = ["fakelite ablation", "--data", str(data), "--size", str(size), "--epochs", str(epochs),
             "--fp-epochs", str(fp_epochs), "--out", str(out), "--work", str(work)]
    for flag, val, default in (("--fp-npr", fp_npr, None), ("--fp-rgb", fp_rgb, None), ("--lr", lr, 2e-4),
                               ("--batch-size", batch_size, 32), ("--calib", calib, 256), ("--seed", seed, 0),
                               ("--threads", threads, None)):
        if val != default:
            parts += [flag, str(val)]
    parts += [f for f, on in (("--teacher-kd", teacher_kd), ("--cqb-study", cqb_study),
                                  ("--deployable-w2a2", deployable_w2a2), ("--quick", quick)) if on]
    command = " ".join(shlex.quote(p) if i else p for i, p in enumerate(parts))
    try:
        run_study(cfg, command=command)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
