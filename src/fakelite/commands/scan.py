"""`fakelite scan`: resumable batch scoring of folders, file lists and globs into a Parquet results folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fakelite.commands.common import fail


def scan_command(
    inputs: Annotated[list[str], typer.Argument(help="Folders (recursive), file lists (.txt/.lst/.csv) or globs ('a/**/*.jpg')")],
    model: Annotated[Path, typer.Option("--model", help=".fakelite, .onnx or .tflite (on a cluster: a path every node can read)")],
    out: Annotated[Path, typer.Option("--out", help="Results folder (Parquet parts); re-run the same command to resume")],
    workers: Annotated[int, typer.Option("--workers", help="Scoring processes (or Ray actors), one Detector with 1 thread each")] = 1,
    ray: Annotated[bool, typer.Option("--ray/--no-ray", help="Run on Ray Data ($RAY_ADDRESS, or a local Ray); default: Ray when $RAY_ADDRESS is set")] = False,
    faces: Annotated[str, typer.Option(help="auto (images: faces if found; videos: faces required) | on | off")] = "auto",
    frames: Annotated[int, typer.Option(help="Video: evenly spaced frames to score")] = 32,
    every: Annotated[int | None, typer.Option(help="Video: score every k-th frame instead")] = None,
    aggregate: Annotated[str, typer.Option(help="Video score: mean | confident (DFDC rule)")] = "mean",
    all_faces: Annotated[bool, typer.Option("--all-faces", help="Score every face, not just the largest")] = False,
    face_detector: Annotated[str, typer.Option("--face-detector", help="haar | blazeface")] = "haar",
    backend: Annotated[str, typer.Option(help="auto | torch | onnxruntime | litert")] = "auto",
    commit_rows: Annotated[int, typer.Option("--commit-rows", help="Commit a Parquet part every this many rows")] = 256,
    commit_seconds: Annotated[float, typer.Option("--commit-seconds", help="... or after this many seconds")] = 10.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the summary JSON here")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar")] = False,
) -> None:
    """Score every image and video under the inputs into a resumable results folder (one row per file content).

    Kill it at any moment and run the same command again: it finishes the job, every file scored exactly once.

    Example: fakelite scan /archive list.txt 'more/**/*.jpg' --model model.fakelite --out scan_results --workers 2
    """
    import os

    from fakelite.pipelines.scan import ScanError, ScanOptions, ScanStoreError, run_scan
    from fakelite.utils.progress import ProgressGroup

    opts = ScanOptions(faces=faces, frames=frames, every=every, aggregate=aggregate, all_faces=all_faces,
                       face_detector=face_detector)
    use_ray = ray or bool(os.environ.get("RAY_ADDRESS"))
    with ProgressGroup(quiet) as group:
        state: dict = {}

        def progress(done: int, total: int, rate: float) -> None:
            if "advance" not in state:
                state["advance"] = group.task("scan", total)
            state["advance"](1, info=f"{rate:.1f} files/s")

        try:
            s = run_scan(inputs, model, out, opts, workers=workers, use_ray=use_ray, backend=backend,
                         commit_rows=commit_rows, commit_seconds=commit_seconds, progress=progress)
        except (ScanError, ScanStoreError) as e:
            fail(str(e))
    for msg in s["input_errors"]:
        typer.echo(f"skipped input {msg}", err=True)
    rate = f", {s['files_per_s']:.2f} files/s" if s["files_per_s"] else ""
    typer.echo(f"{s['files']} files: {s['already_done']} already in {s['out']}, {s['scored']} scored now, "
               f"{s['duplicates']} duplicate content, {s['errors']} with errors; "
               f"{s['rows_in_store']} rows in the store ({s['engine']}, {s['workers']} workers, {s['wall_s']:.1f} s{rate})")
    if s["labels"]:
        typer.echo("labels: " + ", ".join(f"{k} {v}" for k, v in sorted(s["labels"].items())))
    for msg, n in s["errors_by_reason"].items():
        typer.echo(f"  {n} × {msg}", err=True)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(s, indent=1))
        typer.echo(f"wrote {json_out}")
