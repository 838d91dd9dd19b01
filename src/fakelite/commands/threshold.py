"""`fakelite threshold`: recalibrate an existing model's threshold (and temperature) on real images; and the
`--target-fpr` step that `fakelite train` / `fakelite quantize` run on their validation split's 0_real."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from fakelite.commands.common import fail, resolve_model_or_fail

POLICY_HELP = "Scoring of large images: center | resize256 | tiles (default: the model's stored policy)"
AGGREGATE_HELP = "tiles: combine tile logits by mean | max | topk (default: the model's)"


def threshold_command(
    model: Annotated[Path, typer.Option("--model", help="A .fakelite file (or a packaged model name)")],
    real: Annotated[Path, typer.Option("--real", help="Held-out REAL images: a folder (its 0_real/ folders when it "
                                                      "has any, else every image in it)")],
    out: Annotated[Path, typer.Option("--out", help="New .fakelite: same weights, new threshold")],
    target_fpr: Annotated[float, typer.Option("--target-fpr", help="Flag at most this fraction of the real images")] = 0.05,
    temperature_data: Annotated[Path | None, typer.Option(
        "--temperature-data", help="Folder with 0_real/1_fake: fit the temperature T (score = sigmoid(logit/T)) "
                                   "by minimising NLL before choosing the threshold")] = None,
    policy: Annotated[str | None, typer.Option("--policy", help=POLICY_HELP + "; stored in --out")] = None,
    aggregate: Annotated[str | None, typer.Option("--aggregate", help=AGGREGATE_HELP)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass while scoring")] = 64,
    quiet: Annotated[bool, typer.Option(help="No progress bar")] = False,
) -> None:
    """Choose the threshold on real images so that at most --target-fpr of them are flagged fake; write a copy of
    the model with that threshold (weights unchanged, bit for bit) and where it came from.

    Example: fakelite threshold --model runs/fp/model.fakelite --real data/val --target-fpr 0.05 --out fp_t.fakelite
    """
    from fakelite.artifact import ArtifactError
    from fakelite.eval.recalibrate import recalibrate_artifact

    path = resolve_model_or_fail(model)
    try:
        r = recalibrate_artifact(path, real, out, target_fpr, temperature_data, policy, aggregate,
                                 batch_size=batch_size, quiet=quiet)
    except (ArtifactError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    s = r["threshold_source"]
    temp = f", temperature {r['temperature']:.4g}" if "temperature" in s else ""
    typer.echo(f"threshold {r['threshold']:.6f}: {100 * s['fpr']:.2f} % of {s['n_real']} real images flagged "
               f"(target {100 * s['target_fpr']:.2f} %, policy {s['policy']}{temp})"
               + (f"; skipped {s['skipped']} unreadable file(s)" if s["skipped"] else ""))
    warning = small_sample_warning(s["n_real"], s["target_fpr"])
    if warning:
        typer.secho(f"warning: {warning}", fg="yellow", err=True)
    typer.echo(f"wrote {out}")


def small_sample_warning(n_real: int, target_fpr: float, min_expected: int = 10) -> str | None:
    """A one-line warning when n_real · target_fpr < `min_expected`: the threshold then rests on a handful of real
    images above it (at most ⌊F·n⌋ are flagged), and the FPR on new real images is uncertain. States the 95 % Wilson
    interval of a true FPR whose sample estimate is target_fpr on n_real images. None when the sample is large enough
    or the target is 0 (no real image may be flagged: nothing to estimate)."""
    f = float(target_fpr)
    if n_real <= 0 or f <= 0 or n_real * f >= min_expected:
        return None
    z = 1.96
    centre = (f + z * z / (2 * n_real)) / (1 + z * z / n_real)
    half = z * ((f * (1 - f) / n_real + z * z / (4 * n_real * n_real)) ** 0.5) / (1 + z * z / n_real)
    return (f"only {n_real} real images: at most {math.floor(n_real * f)} of them lie above a {100 * f:g} % FPR "
            f"threshold, so the FPR on new real images may be anywhere in {100 * max(0.0, centre - half):.1f}–"
            f"{100 * (centre + half):.1f} % (95 % interval); use ≥ {math.ceil(min_expected / f)} real images for a "
            f"firm threshold")


def apply_target_fpr(run: Path, data: Path, target_fpr: float, quiet: bool = True) -> dict:
    """After training into `run`: recalibrate `run/model.fakelite` in place on `data/val`'s real images and record
    the result in `run/metrics.json` ("threshold", "threshold_source", "threshold_youden": the old rule's value)."""
    from fakelite.data.folders import split_dir
    from fakelite.eval.recalibrate import recalibrate_artifact

    art = run / "model.fakelite"
    r = recalibrate_artifact(art, split_dir(data, "val"), art, target_fpr, quiet=quiet)
    mpath = run / "metrics.json"
    if mpath.is_file():
        metrics = json.loads(mpath.read_text())
        metrics["threshold_youden"] = metrics.get("threshold")
        metrics["threshold"], metrics["threshold_source"] = r["threshold"], r["threshold_source"]
        mpath.write_text(json.dumps(metrics, indent=2))
    return r


def echo_target_fpr(r: dict) -> None:
    s = r["threshold_source"]
    typer.echo(f"threshold {r['threshold']:.6f} at target FPR {100 * s['target_fpr']:.1f} % on {s['n_real']} "
               f"validation real images ({100 * s['fpr']:.2f} % flagged)")
