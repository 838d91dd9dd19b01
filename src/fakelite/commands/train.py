"""`fakelite train` and `fakelite eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fakelite.commands.common import (
    fail,
    load_model_or_fail,
    parse_recipe,
    resolve_model_or_fail,
    scoring_overrides,
)


def train_command(
    data: Annotated[Path, typer.Option("--data", help="Dataset root with train/ and val/ (ForenSynths/FaceSynth layout)")],
    model: Annotated[str, typer.Option("--model", help="Architecture name (see `fakelite models`)")] = "npr_resnet23",
    out: Annotated[Path, typer.Option("--out", help="Run folder: writes model.fakelite, metrics.json, curves.png")] = Path("runs/train"),
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: recipe, else 50)")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Batch size (default 32)")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: the architecture's recipe, shown by "
                                                  "`fakelite models`: 2e-4 NPR ResNets, 1e-3 MobileNetV3)")] = None,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    crop: Annotated[int | None, typer.Option(help="Crop size (default: the model's, capped by the data's image size)")] = None,
    input: Annotated[str | None, typer.Option("--input", help="npr or rgb (default: the model's)")] = None,
    recipe: Annotated[Path | None, typer.Option(help="YAML recipe (train: keys of TrainConfig; augment: ...)")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from --out's checkpoint (refused when "
                                              "there is none, unless --fresh)")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="With --resume: start from epoch 0 when --out holds no "
                                                        "checkpoint (for jobs relaunched with --resume)")] = False,
    keep_checkpoint: Annotated[bool, typer.Option("--keep-checkpoint", help="Keep --out's checkpoint.safetensors "
                                                                            "after the run finishes")] = False,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap steps per epoch (quick runs)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, or cuda to train on a GPU (the saved model is the "
                                        "same format either way)")] = "cpu",
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
    policy: Annotated[str | None, typer.Option("--policy", help="Scoring policy stored in the model: center | "
                                                                "resize256 | tiles (docs/scoring.md)")] = None,
    aggregate: Annotated[str | None, typer.Option("--aggregate", help="tiles: mean | max | topk")] = None,
    target_fpr: Annotated[float, typer.Option("--target-fpr", help="Threshold: flag at most this fraction of val/0_real")] = 0.05,
    youden: Annotated[bool, typer.Option("--youden", help="Keep the balanced-accuracy (Youden) threshold of "
                                                          "val instead of --target-fpr")] = False,
) -> None:
    """Train a full-precision detector.

    Example: fakelite train --data runs/demo/data --model npr_resnet23 --out runs/fp --epochs 5
    """
    from fakelite.pipelines.train import TrainSetupError, run_train
    from fakelite.utils.distributed import rank_world

    if resume and not (out / "checkpoint.safetensors").is_file():
        if not fresh:
            fail(f"{out}: no checkpoint.safetensors to resume from (is --out right?); add --fresh to start a new "
                 "run there, or drop --resume")
        typer.echo(f"note: {out} holds no checkpoint: starting from epoch 0 (--fresh)", err=True)
    try:
        cfg_dict = parse_recipe(recipe) if recipe else {}
    except (FileNotFoundError, KeyError, ValueError) as e:
        fail(str(e).strip("'\""))
    try:
        metrics = run_train(data, model, out, recipe=cfg_dict, recipe_path=recipe, epochs=epochs,
                            batch_size=batch_size, lr=lr, seed=seed, max_steps=max_steps, threads=threads, quiet=quiet,
                            device=device, crop=crop, input=input, policy=policy, aggregate=aggregate, resume=resume,
                            keep_checkpoint=keep_checkpoint)
    except TrainSetupError as e:
        fail(str(e))
    if rank_world()[0] != 0:  # under torchrun only rank 0 reports
        return
    v, vt = metrics["val"], metrics["val_at_threshold"]
    typer.echo(f"best epoch {metrics['best_epoch']}: val acc {v['acc']:.4f} (at 0.5) / {vt['acc']:.4f} "
               f"(at threshold {metrics['threshold']:.4f}), AP {v['ap']:.4f}, AUC {v['auc']:.4f}; "
               f"{metrics['wall_seconds']:.0f} s")
    if not youden:
        from fakelite.commands.threshold import apply_target_fpr, echo_target_fpr

        try:
            echo_target_fpr(apply_target_fpr(out, data, target_fpr, quiet=True))
        except (FileNotFoundError, ValueError) as e:
            fail(f"--target-fpr: {e}")
    typer.echo(f"wrote {out / 'model.fakelite'} and {out / 'metrics.json'}")


def eval_command(
    data: Annotated[Path, typer.Option("--data", help="Root holding one or many test sets (0_real/1_fake); a "
                                                      "dataset root with train/ is scored on its test/ only")],
    model: Annotated[Path | None, typer.Option("--model", help="A .fakelite file, an exported .onnx/.tflite (scored "
                                                               "by its runtime: the deployed file itself), or a "
                                                               "packaged model name (default: `default`)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result JSON here")] = None,
    plots: Annotated[Path | None, typer.Option(help="Write ROC/PR curves and confusion matrices (PNG) here")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per inference batch")] = 64,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar")] = False,
    policy: Annotated[str | None, typer.Option("--policy", help="Override the stored scoring policy: center | "
                                                                "resize256 | tiles")] = None,
    aggregate: Annotated[str | None, typer.Option("--aggregate", help="tiles: mean | max | topk")] = None,
    topk: Annotated[int | None, typer.Option("--topk", help="tiles, --aggregate topk: mean of the k largest tile "
                                                         "logits (default: the model's, 3)")] = None,
    max_tiles: Annotated[int | None, typer.Option("--max-tiles", help="tiles: at most this many crops per image "
                                                                   "(default: the model's, 16)")] = None,
    backend: Annotated[str, typer.Option(help="Runtime of an exported .onnx: auto | onnxruntime | openvino")] = "auto",
) -> None:
    """Acc/AP/AUC/EER on every test set under --data, plus the mean; TPR at the stored target FPR, FPR/TPR at
    the stored threshold and the expected calibration error (ECE) per set.

    Example: fakelite eval --model runs/fp/model.fakelite --data runs/demo/data/test --json eval.json --plots plots/

    Example (the exported integer graph, in ONNX Runtime): fakelite eval --model q.onnx --data runs/demo/data/test
    """
    import torch

    from fakelite.eval.evaluate import evaluate
    from fakelite.eval.report import print_eval

    if threads:
        torch.set_num_threads(threads)
    model = resolve_model_or_fail(model)
    if model.suffix.lower() in (".onnx", ".tflite"):  # the deployed file itself, through its runtime
        from fakelite.artifact import ArtifactError
        from fakelite.deploy.runtime import Detector

        try:
            m = Detector.load(model, backend=backend, threads=threads).as_module()
        except (ArtifactError, RuntimeError) as e:
            fail(str(e))
    else:
        m = load_model_or_fail(model)
    scoring_overrides(m, policy, aggregate, topk, max_tiles)
    try:
        result = evaluate(m, data, batch_size=batch_size, quiet=quiet, keep_scores=plots is not None)
    except FileNotFoundError as e:
        fail(str(e))
    scores = result.pop("_scores", None)
    from fakelite.utils.distributed import rank_world

    if rank_world()[0] != 0:  # under torchrun only rank 0 reports and writes
        return
    if result.get("note"):
        typer.echo(f"note: {result['note']}", err=True)
    print_eval(result, title=f"{model} on {data}")
    skipped = sum(s["skipped"] for s in result["sets"].values())
    if skipped:
        typer.echo(f"skipped {skipped} unreadable file(s); see 'skipped_files' in the JSON", err=True)
    if result["mean"].get("not_read"):
        from fakelite.data.walk import format_not_read

        typer.echo(f"not read: {format_not_read(result['mean']['not_read'])}; see 'not_read' in the JSON", err=True)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2))
        typer.echo(f"wrote {json_out}")
    if plots is not None and scores:
        from fakelite.eval.plots import eval_plots

        seen = (getattr(m, "provenance", None) or {}).get("data")
        title = f"{model.name}{f' (trained on {seen})' if seen else ''} on {result.get('root', data)}"
        written = eval_plots(scores, result["threshold"], plots, title=title)
        typer.echo(f"wrote {len(written)} plot(s) to {plots}")
