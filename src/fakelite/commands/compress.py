"""`fakelite prune`, `fakelite distill`, `fakelite recipe mobilenetv3`, `fakelite baseline`, `fakelite data split`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fakelite.commands.common import fail, load_model_or_fail


def prune_command(
    model: Annotated[Path, typer.Option("--model", help="A full-precision .fakelite model")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: model.fakelite, prune_report.json")],
    ratio: Annotated[float, typer.Option("--ratio", help="Fraction of channels (structured) or weights (unstructured) to remove")] = 0.3,
    data: Annotated[Path | None, typer.Option("--data", help="Dataset root (train/ val/ for fine-tuning, test/ for metrics)")] = None,
    structured: Annotated[bool, typer.Option("--structured/--unstructured", help="Remove whole channels (faster) or single weights (smaller file)")] = True,
    global_pruning: Annotated[bool | None, typer.Option("--global/--per-layer", help="One global ranking or per layer (default: per layer for structured, global for unstructured)")] = None,
    finetune_epochs: Annotated[int, typer.Option("--finetune-epochs", help="Fine-tuning epochs after pruning (needs --data)")] = 0,
    lr: Annotated[float, typer.Option(help="Fine-tuning learning rate")] = 1e-4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Fine-tuning batch size")] = 32,
    round_to: Annotated[int | None, typer.Option("--round-to", help="Keep channel counts multiples of this (structured)")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap steps per epoch (quick runs)")] = None,
    latency_runs: Annotated[int, typer.Option("--latency-runs", help="Timed runs for the CPU latency median")] = 30,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads for fine-tuning")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
) -> None:
    """Prune a detector (structured channels or unstructured weights), fine-tune, and report before/after.

    Example: fakelite prune --model runs/fp/model.fakelite --data runs/demo/data --ratio 0.3 --finetune-epochs 3 --out runs/pruned
    """
    import torch

    from fakelite.artifact import ArtifactError
    from fakelite.compress.prune import PruneConfig
    from fakelite.pipelines.prune import print_prune_report, run_prune
    from fakelite.train.loop import TrainConfig

    if not 0 < ratio < 1:
        fail(f"--ratio must be between 0 and 1 (exclusive), got {ratio}")
    if finetune_epochs > 0 and data is None:
        fail("--finetune-epochs needs --data (a dataset with train/ and val/)")
    if data is not None and not data.is_dir():
        fail(f"{data}: no such data folder")
    if threads:
        torch.set_num_threads(threads)
    g = (not structured) if global_pruning is None else global_pruning
    cfg = PruneConfig(ratio=ratio, structured=structured, global_pruning=g, round_to=round_to)
    tc = TrainConfig(lr=lr, lr_schedule="cosine", batch_size=batch_size, max_steps_per_epoch=max_steps,
                     threads=threads, quiet=quiet)
    try:
        load_model_or_fail(model)
        report = run_prune(model, out, cfg, data=data, finetune_epochs=finetune_epochs, train_cfg=tc,
                           latency_runs=latency_runs, quiet=quiet)
    except (ArtifactError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    print_prune_report(report)
    typer.echo(f"wrote {report['out']} and {out / 'prune_report.json'}")


def distill_command(
    teacher: Annotated[Path, typer.Option("--teacher", help="Teacher .fakelite model")],
    student: Annotated[str, typer.Option("--student", help="Student architecture name, or a .fakelite (pruned/quantized) to continue from")],
    data: Annotated[Path, typer.Option("--data", help="Dataset root with train/ and val/")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: model.fakelite (the student), metrics.json")],
    temperature: Annotated[float, typer.Option(help="Softening temperature T")] = 4.0,
    alpha: Annotated[float, typer.Option(help="λ: weight of T²·KL against (1 − λ)·BCE")] = 0.5,
    feature_weight: Annotated[float, typer.Option("--feature-weight", help="Weight of the feature-MSE term (0 = logits only)")] = 0.0,
    input: Annotated[str | None, typer.Option("--input", help="Student input npr or rgb (new students only)")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs")] = 10,
    lr: Annotated[float, typer.Option(help="Learning rate")] = 1e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="Adam weight decay (L2)")] = 0.0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size")] = 32,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap steps per epoch (quick runs)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
) -> None:
    """Distil a student detector from a teacher (logit KD, optional feature KD; QAT/pruned students accepted).

    Example: fakelite distill --teacher runs/fp/model.fakelite --student mobilenetv3_small --data runs/demo/data --out runs/kd --epochs 5
    """
    from fakelite.artifact import ArtifactError
    from fakelite.compress.distill import DistillConfig
    from fakelite.pipelines.distill import run_distill

    t = load_model_or_fail(teacher)
    try:
        m = run_distill(t, student, data, out, DistillConfig(temperature, alpha, feature_weight), input=input,
                        epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size, seed=seed,
                        max_steps=max_steps, threads=threads, quiet=quiet,
                        provenance={"teacher_path": str(teacher), "student": student})
    except (ArtifactError, KeyError, ValueError, FileNotFoundError) as e:
        fail(str(e).strip("'\""))
    v = m["val"]
    typer.echo(f"best epoch {m['best_epoch']}: val acc {v['acc']:.4f}, AP {v['ap'] or 0:.4f}, AUC {v['auc'] or 0:.4f}; "
               f"{m['wall_seconds']:.0f} s")
    typer.echo(f"wrote {out / 'model.fakelite'} and {out / 'metrics.json'}")


def recipe_command(
    name: Annotated[str, typer.Argument(help="Recipe name (mobilenetv3)")],
    data: Annotated[Path, typer.Option("--data", help="Dataset root with train/ val/ test/")],
    out: Annotated[Path, typer.Option("--out", help="Run folder (one subfolder per step, model.fakelite, mobilenetv3.{md,json})")],
    teacher: Annotated[Path | None, typer.Option("--teacher", help="Teacher .fakelite (trained here if omitted)")] = None,
    epochs: Annotated[int, typer.Option(help="Student distillation epochs (fine-tuning and QAT default to half)")] = 10,
    teacher_epochs: Annotated[int | None, typer.Option("--teacher-epochs", help="Teacher epochs (default: --epochs)")] = None,
    finetune_epochs: Annotated[int | None, typer.Option("--finetune-epochs", help="Fine-tuning epochs after pruning (default: half of --epochs, at least 1)")] = None,
    qat_epochs: Annotated[int | None, typer.Option("--qat-epochs", help="W4A4 LSQ QAT epochs (0 skips)")] = None,
    inputs: Annotated[str, typer.Option("--inputs", help="Student inputs to try, comma-separated")] = "npr,rgb",
    prune_ratio: Annotated[float, typer.Option("--prune-ratio", help="Fraction of channels the structured pruning step removes")] = 0.3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size of every step")] = 32,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap steps per epoch (quick runs)")] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 2,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    latency_runs: Annotated[int, typer.Option("--latency-runs", help="Timed runs per CPU latency median")] = 30,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
) -> None:
    """Run a compression recipe end to end and print its table (teacher → distil → prune → fine-tune → quantize).

    Example: fakelite recipe mobilenetv3 --data runs/facesynth64 --epochs 6 --out runs/mbv3
    """
    from fakelite.artifact import ArtifactError
    from fakelite.pipelines.mbv3 import RecipeConfig, print_table, run_recipe

    if name != "mobilenetv3":
        fail(f"unknown recipe {name!r}; available: mobilenetv3")
    if not data.is_dir():
        fail(f"{data}: no such data folder")
    ins = tuple(i.strip() for i in inputs.split(",") if i.strip())
    if not ins or any(i not in ("npr", "rgb") for i in ins):
        fail(f"--inputs must list npr and/or rgb, got {inputs!r}")
    if teacher is not None:
        load_model_or_fail(teacher)
    rc = RecipeConfig(epochs=epochs, teacher_epochs=teacher_epochs, finetune_epochs=finetune_epochs,
                      qat_epochs=qat_epochs, inputs=ins, prune_ratio=prune_ratio, batch_size=batch_size,
                      max_steps_per_epoch=max_steps, threads=threads, seed=seed, latency_runs=latency_runs,
                      quiet=quiet)
    try:
        result = run_recipe(data, out, rc, teacher=teacher)
    except (ArtifactError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    print_table(result["rows"], title=f"MobileNetV3 recipe on {data} (chosen student input: {result['chosen_input']})")
    typer.echo(f"wrote {out / 'model.fakelite'} (int8, export-ready), {out / 'mobilenetv3.md'}, {out / 'mobilenetv3.json'}"
               f"; {result['wall_seconds']:.0f} s")


def baseline_command(
    data: Annotated[Path, typer.Option("--data", help="Dataset root with train/ and test/ (or val/)")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result JSON here")] = None,
    cnn: Annotated[list[Path] | None, typer.Option("--cnn", help="A .fakelite CNN to put in the same table (repeatable)")] = None,
    crop: Annotated[int, typer.Option(help="Centre crop for the handcrafted features")] = 256,
    max_train: Annotated[int, typer.Option("--max-train", help="Use at most this many training images")] = 4000,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Also write the table as Markdown here")] = None,
) -> None:
    """SVM / decision tree / random forest on NPR, spectrum and colour features, beside CNN detectors.

    Example: fakelite baseline --data runs/facesynth64 --cnn runs/fp/model.fakelite --json baselines.json
    """
    from rich.console import Console
    from rich.table import Table

    from fakelite.artifact import ArtifactError
    from fakelite.studies.baselines import baselines_markdown, run_baselines

    if not data.is_dir():
        fail(f"{data}: no such data folder")
    for c in cnn or []:
        load_model_or_fail(c)
    try:
        res = run_baselines(data, crop=crop, cnn_models=list(cnn or []), max_train=max_train, seed=seed)
    except (ArtifactError, ValueError, FileNotFoundError) as e:
        fail(str(e))

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    sets = list(next(iter(res["methods"].values()))["sets"])
    t = Table(title=f"baselines on {data} ({res['train_images']} training images)")
    for c in ["model", "train Acc", *[f"{s} Acc" for s in sets], "mean Acc", "mean AP", "mean AUC"]:
        t.add_column(c, justify="left" if c == "model" else "right")
    for name, r in res["methods"].items():
        t.add_row(name, pct(r["train_acc"]), *[pct(r["sets"][s]["acc"]) for s in sets], pct(r["mean"]["acc"]),
                  pct(r["mean"]["ap"]), pct(r["mean"]["auc"]))
    Console(width=max(120, Console().width)).print(t)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(res, indent=2, default=str))
        typer.echo(f"wrote {json_out}")
    if markdown:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(baselines_markdown(res) + "\n")
        typer.echo(f"wrote {markdown}")


def split_command(
    src: Annotated[Path, typer.Option("--src", help="Flat folder with 0_real/ and 1_fake/ (or real/ and fake/)")],
    out: Annotated[Path, typer.Option("--out", help="New folder: train/ val/ test/ each with 0_real/ 1_fake/")],
    ratios: Annotated[str, typer.Option("--ratios", help="train/val/test proportions")] = "70/15/15",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same split)")] = 0,
    link: Annotated[bool, typer.Option("--link/--copy", help="Hard-link files instead of copying")] = False,
    group: Annotated[bool, typer.Option("--group/--no-group", help="Keep frames/crops of one source in one split")] = True,
) -> None:
    """Split a real/fake folder into train/val/test: stratified, deterministic, no source leakage across splits.

    Example: fakelite data split --src faces/ --ratios 70/15/15 --out faces_split --link
    """
    from fakelite.data.split import parse_ratios, split_folder

    try:
        r = parse_ratios(ratios)
        summary = split_folder(src, out, r, seed=seed, link=link, group=group)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        fail(str(e))
    for s, c in summary["splits"].items():
        typer.echo(f"{s:5s}: {c['real']:6d} real {c['fake']:6d} fake  ({c['groups']} source groups)")
    typer.echo(f"wrote {out} ({summary['groups']} source groups; see {out / 'split.json'})")
