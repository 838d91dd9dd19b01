"""`fakelite export`, `fakelite detect`, `fakelite stream`, `fakelite bench`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fakelite.commands.common import fail, load_model_or_fail, resolve_model_or_fail, scoring_overrides
from fakelite.deploy.backends import HELP as BACKEND_HELP

POLICY_HELP = "Scoring of large images: center | resize256 | tiles (default: the model's stored policy)"


def _load_detector(model: Path, backend: str = "auto", threads: int | None = None):
    from fakelite.artifact import ArtifactError
    from fakelite.deploy.backends import UnknownBackend, canonical
    from fakelite.deploy.runtime import Detector

    try:
        backend = canonical(backend)
    except UnknownBackend as e:
        fail(f"--backend: {e}")
    try:
        return Detector.load(model, backend=backend, threads=threads)
    except ArtifactError as e:
        fail(str(e))
    except RuntimeError as e:  # LiteRT not installed
        fail(str(e))


def export_command(
    model: Annotated[Path, typer.Option("--model", help="A .fakelite file or a packaged model name (default, ...)")],
    out: Annotated[Path, typer.Option("--out", help="Output file (.onnx or .tflite)")],
    format: Annotated[str, typer.Option("--format", help="onnx (ORT integer graph for quantized models) | onnx-qdq "
                                                         "(standard QDQ: ONNX Runtime and OpenVINO) | tflite")] = "onnx",
    qdq: Annotated[bool, typer.Option("--qdq", help="Same as --format onnx-qdq")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="FP models: ORT static int8 (needs --data). Quantized models "
                                                      "always export as integer graphs")] = False,
    calib: Annotated[int, typer.Option("--calib", help="Calibration images for --int8")] = 64,
    data: Annotated[Path | None, typer.Option("--data", help="Images for calibration and the parity check")] = None,
    strict: Annotated[bool, typer.Option(help="Integer export: bit-exact codes everywhere (ConvInteger where a "
                                              "QLinearConv bias would round)")] = False,
    exact: Annotated[bool, typer.Option("--exact", help="onnx-qdq: float-output convs as exact integer accumulators "
                                                        "(ONNX Runtime then computes the integer model; OpenVINO "
                                                        "runs those convs in float32)")] = False,
    check: Annotated[int, typer.Option("--check", help="Images for the parity check (0: skip)")] = 16,
    policy: Annotated[str | None, typer.Option("--policy", help=POLICY_HELP + "; stored in the graph's header")] = None,
    aggregate: Annotated[str | None, typer.Option("--aggregate", help="tiles: mean | max | topk (stored)")] = None,
) -> None:
    """Export a deployable graph with the fakelite header embedded, and print the parity check.

    Example: fakelite export --model runs/q/model.fakelite --format onnx --out model.onnx --data runs/demo/data/test
    """
    import torch

    from fakelite.deploy.bench import calibration_array
    from fakelite.deploy.onnx import export_onnx
    from fakelite.deploy.parity import parity

    m = load_model_or_fail(model)
    scoring_overrides(m, policy, aggregate)
    if format not in ("onnx", "onnx-qdq", "tflite"):
        fail(f"--format must be onnx, onnx-qdq or tflite, not {format!r}")
    qdq = qdq or format == "onnx-qdq"
    if exact and not qdq:
        fail("--exact is an option of the QDQ graph: use it with --format onnx-qdq")
    if qdq and format == "tflite":
        fail("--qdq is an ONNX graph form: use --format onnx-qdq")
    if format == "tflite":
        from fakelite.deploy.litert import LiteRTUnavailable
        from fakelite.deploy.litert_export import export_tflite
        from fakelite.deploy.parity import parity_tflite

        quant = bool(getattr(m, "fakelite_quant", None))
        if int8 and not quant and data is None:
            fail("--int8 for a full-precision model needs --data (calibration images)")
        cal = calibration_array(m.preprocess, data, calib) if int8 and not quant else None
        try:
            rep = export_tflite(m, out, int8=int8, calib=cal)
        except (LiteRTUnavailable, ValueError) as e:
            fail(str(e))
        typer.echo(f"wrote {out} ({rep['kind']}, {rep['bytes']:,} bytes) and {out}.json (header)")
        if rep["kind"] == "tflite-integer-emulated":
            typer.echo("note: LiteRT has no low-bit kernels: this graph computes the integer codes in float "
                       "(same decisions, not faster); the ONNX export runs them as integers", err=True)
        if check:
            x = torch.from_numpy(calibration_array(m.preprocess, data, check, seed=1))
            p = parity_tflite(m, out, x)
            typer.echo(f"parity on {p['n']} {'images' if data else 'random inputs'}: max |logit diff| "
                       f"{p['max_abs_logit_diff']:.3g}, same decisions {p['same_decisions']}/{p['n']}")
        return
    quant = bool(getattr(m, "fakelite_quant", None))
    if qdq and not quant:
        int8 = True  # the QDQ graph of a full-precision model is ORT static int8
    if int8 and not quant and data is None:
        fail("--int8 for a full-precision model needs --data (calibration images)")
    cal = calibration_array(m.preprocess, data, calib) if int8 and not quant else None
    try:
        rep = export_onnx(m, out, int8=int8, calib=cal, strict=strict, qdq=qdq, exact=exact)
    except ValueError as e:
        fail(str(e))
    from fakelite.deploy.export_report import op_summary

    typer.echo(f"wrote {out} ({rep['kind']}, {out.stat().st_size:,} bytes): {op_summary(rep['ops'])}")
    if rep.get("layers"):
        floats = {k: v for k, v in rep["layers"].items() if v.startswith("float") or "rounded" in v}
        if floats:
            typer.echo("not bit-exact integer: " + "; ".join(f"{k}: {v}" for k, v in floats.items()))
    if check:
        x = torch.from_numpy(calibration_array(m.preprocess, data, check, seed=1))
        p = parity(m, out, x)
        typer.echo(f"parity on {p['n']} {'images' if data else 'random inputs'}: max |logit diff| "
                   f"{p['max_abs_logit_diff']:.3g}, same decisions {p['same_decisions']}/{p['n']}")


def detect_command(
    paths: Annotated[list[Path], typer.Argument(help="Images, videos or folders (recursive)")],
    model: Annotated[Path | None, typer.Option("--model", help=".fakelite, .onnx or .tflite, or a packaged model "
                                                               "name (default: `default`)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result JSON here")] = None,
    faces: Annotated[str, typer.Option(help="auto (images: faces if found; videos: faces required) | on | off")] = "auto",
    frames: Annotated[int, typer.Option(help="Video: evenly spaced frames to score")] = 32,
    every: Annotated[int | None, typer.Option(help="Video: score every k-th frame instead")] = None,
    aggregate: Annotated[str, typer.Option(help="Video score: mean | confident (DFDC rule)")] = "mean",
    all_faces: Annotated[bool, typer.Option("--all-faces", help="Score every face, not just the largest")] = False,
    face_detector: Annotated[str, typer.Option("--face-detector", help="haar | blazeface (ai-edge-litert)")] = "haar",
    face_resize: Annotated[bool, typer.Option("--face-resize/--no-face-resize",
                                              help="Resize face crops to the model's input side (for models trained on "
                                                   "resized face crops); default keeps native pixels, as NPR needs")] = False,
    annotate: Annotated[Path | None, typer.Option(help="Write the (first) video annotated with boxes/scores (mp4)")] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "auto",
    threads: Annotated[int | None, typer.Option(help="Inference threads")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar")] = False,
    policy: Annotated[str | None, typer.Option("--policy", help=POLICY_HELP)] = None,
    tile_aggregate: Annotated[str | None, typer.Option("--tile-aggregate", help="tiles: combine tile logits by "
                                                                                "mean | max | topk (--aggregate is "
                                                                                "the video rule)")] = None,
    topk: Annotated[int | None, typer.Option("--topk", help="tiles, --tile-aggregate topk: mean of the k largest "
                                                         "tile logits (default: the model's, 3)")] = None,
    max_tiles: Annotated[int | None, typer.Option("--max-tiles", help="tiles: at most this many crops per image "
                                                                   "(default: the model's, 16)")] = None,
    jsonl: Annotated[Path | None, typer.Option("--jsonl", help="Append each result here as it is known (JSON Lines; "
                                                               "default: next to --json, same name .jsonl)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Keep the results already in the JSON Lines file and "
                                                          "score only the files not there yet")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds one file may take to decode in the isolated "
                                                             "worker (videos: without progress, 10× in all); past "
                                                             "it the file is reported and skipped")] = 120.0,
) -> None:
    """Score images, folders and videos: real/fake verdicts with face boxes and per-frame scores.

    Every file is decoded in an isolated worker process (a crash or hang costs that file only); results are
    appended to a JSON Lines file as they come, so `--resume` after a kill scores only what is left.

    Example: fakelite detect clip.mp4 photos/ --model model.onnx --json detect.json --annotate clip_annotated.mp4

    Example (resume a killed run): fakelite detect photos/ --model model.onnx --json detect.json --resume
    """
    from fakelite.data.io import display_path
    from fakelite.data.walk import format_not_read
    from fakelite.deploy.detect import AGGREGATES, FACE_MODES, annotate_video, detect_paths

    if faces not in FACE_MODES:
        fail(f"--faces must be one of {', '.join(FACE_MODES)}, not {faces!r}")
    if aggregate not in AGGREGATES:
        fail(f"--aggregate must be mean or confident, not {aggregate!r}")
    if timeout <= 0:
        fail(f"--timeout must be > 0 s, not {timeout}")
    if jsonl is None and json_out is not None:
        jsonl = json_out.with_suffix(".jsonl")
    if resume and jsonl is None:
        fail("--resume needs --json (or --jsonl): the JSON Lines file of the earlier run")
    det = _load_detector(resolve_model_or_fail(model), backend, threads)
    scoring_overrides(det, policy, tile_aggregate, topk, max_tiles)
    try:
        out = detect_paths(det, paths, faces=faces, frames=frames, every=every, aggregate=aggregate,
                           all_faces=all_faces, face_detector=face_detector, face_resize=face_resize, quiet=quiet,
                           jsonl=jsonl, resume=resume, timeout=timeout)
    except (ValueError, RuntimeError) as e:
        fail(str(e))
    for r in out["results"]:
        name = display_path(r["path"])
        if r["error"]:
            typer.echo(f"{name}: skipped ({display_path(r['error'])})", err=True)
        elif r["score"] is None:
            typer.echo(f"{name}: {r.get('note', 'no score')}")
        else:
            extra = ""
            if r["kind"] == "video":
                extra = f", {r['frames_with_face']}/{r['frames_sampled']} frames with a face"
                if r.get("frames_unreadable"):
                    extra += f", {r['frames_unreadable']} unreadable frame(s) passed"
            typer.echo(f"{name}: {r['label']} (score {r['score']:.4f}{extra})")
    if out["skipped"]:
        typer.echo(f"skipped {out['skipped']} file(s)", err=True)
    if out.get("not_read"):
        typer.echo(f"not read: {format_not_read(out['not_read'])} (of {out['files']} file(s); see 'not_read' in "
                   "the JSON)", err=True)
    if out.get("resumed"):
        typer.echo(f"resumed: {out['resumed']} result(s) taken from {display_path(jsonl)}")
    if annotate is not None:
        vids = [r for r in out["results"] if r["kind"] == "video" and not r["error"]]
        if not vids:
            fail("--annotate needs a readable video among the inputs")
        annotate_video(vids[0]["path"], vids[0], annotate, det.threshold)
        typer.echo(f"wrote {annotate}")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(out, indent=1))
        typer.echo(f"wrote {json_out}")


def stream_command(
    model: Annotated[Path, typer.Option("--model", help=".fakelite, .onnx or .tflite")],
    source: Annotated[str, typer.Option("--source", help="Camera index (0), a video file or rtsp:// URL")] = "0",
    display: Annotated[bool, typer.Option("--display/--no-display", help="Show a window (needs a display)")] = True,
    json_log: Annotated[Path | None, typer.Option("--json", help="Write the per-frame log + summary here")] = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Stop after this many processed frames")] = None,
    face_detector: Annotated[str, typer.Option("--face-detector", help="haar | blazeface")] = "haar",
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "auto",
    threads: Annotated[int | None, typer.Option(help="Inference threads")] = None,
) -> None:
    """Real-time detection on a camera, file or stream; drops frames it cannot process in time.

    Ctrl-C (SIGINT) or SIGTERM ends it cleanly: the summary is printed and the --json log written.

    Example: fakelite stream --model model.onnx --source clip.mp4 --no-display --json stream.json
    """
    from fakelite.deploy.stream import run_stream

    det = _load_detector(model, backend, threads)
    src: str | int = int(source) if source.isdigit() else source
    try:
        s = run_stream(det, src, display=display, json_log=json_log, max_frames=max_frames,
                       face_detector=face_detector)
    except RuntimeError as e:
        fail(str(e))
    if s.get("stopped_by"):
        typer.echo(f"stopped by {s['stopped_by']}", err=True)
    lat = s["latency_ms"].get("total_ms", {})
    typer.echo(f"{s['processed']} frames processed, {s['dropped']} dropped, {s['fps']} fps; "
               f"latency median {lat.get('median', 0)} ms, p90 {lat.get('p90', 0)} ms")
    if s.get("frames_unreadable"):
        typer.echo(f"{s['frames_unreadable']} frame(s) of {s['frames_total']} could not be decoded (passed)", err=True)
    if s.get("error"):
        from fakelite.data.io import display_path

        typer.echo(f"stopped early: {display_path(s['error'])}", err=True)
    if json_log:
        typer.echo(f"wrote {json_log}")


def bench_command(
    model: Annotated[Path, typer.Option("--model", help=".fakelite (exported on the fly) or .onnx/.tflite, or a "
                                                        "packaged model name")],
    backend: Annotated[str, typer.Option(help="torch | onnx (=onnxruntime) | onnx-int8 | onnx-qdq | openvino | "
                                              "openvino-qdq | tflite (=litert) | auto")] = "torch",
    size: Annotated[int | None, typer.Option(help="Input side (default: the model's crop)")] = None,
    threads: Annotated[int, typer.Option(help="Inference threads")] = 1,
    batch: Annotated[int, typer.Option(help="Batch size")] = 1,
    runs: Annotated[int, typer.Option(help="Timed runs (after 5 warm-up runs)")] = 30,
    compare: Annotated[str | None, typer.Option(help="Comma list, e.g. torch,onnx,onnx-int8: each in its own "
                                                     "process, with speed ratios")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Calibration images for onnx-int8 of FP models")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result JSON here")] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="Also time scoring one --image-size² image "
                                                                "end to end under this policy (center | "
                                                                "resize256 | tiles)")] = None,
    aggregate: Annotated[str | None, typer.Option("--aggregate", help="tiles: mean | max | topk")] = None,
    image_size: Annotated[int, typer.Option("--image-size", help="Image side for --policy")] = 1024,
    fp_model: Annotated[Path | None, typer.Option("--fp-model", help="Full-precision .fakelite timed first in PyTorch "
                                                                     "(row torch-fp32): the baseline of the ratios")] = None,
) -> None:
    """Latency (median, p90), throughput, peak RSS and model bytes of one or several backends.

    Ratios are against the first row. For a quantized model, `torch` runs the fake-quant PyTorch model (simulated
    quantization, slower than FP32); --fp-model times the FP32 model instead, which is what the README's ratios use.

    Example: fakelite bench --model runs/q/model.fakelite --compare torch,onnx-int8 --size 224 --threads 1
    """
    import tempfile

    from fakelite.deploy.bench import bench_name, model_macs, prepare, run_bench
    from fakelite.deploy.bench import compare as run_compare

    names = [b.strip() for b in (compare or backend).split(",") if b.strip()]
    try:
        names = [bench_name(b) for b in names]
    except ValueError as e:
        fail(str(e))
    model = resolve_model_or_fail(model)
    if not model.is_file():
        fail(f"{model}: no such model file")
    from fakelite.data.preprocess import Preprocess
    from fakelite.deploy.bench_report import add_baseline, bench_table, fake_quant_note

    try:
        Preprocess().with_scoring(policy, aggregate)
    except ValueError as e:
        fail(f"--policy/--aggregate: {e}")
    if fp_model is not None and not fp_model.is_file():
        fail(f"{fp_model}: no such model file")
    try:
        if compare or fp_model is not None:
            res = run_compare(model, names, size, threads, batch, runs, data, policy, aggregate, image_size)
            if fp_model is not None:
                res = add_baseline(res, run_compare(fp_model, ["torch"], size, threads, batch, runs, data))
        else:
            with tempfile.TemporaryDirectory() as td:
                f = prepare(model, names[0], Path(td), data)
                res = run_bench(f, names[0], size, threads, batch, runs=runs, policy=policy, aggregate=aggregate,
                                image_size=image_size, macs=model_macs(model, size))
    except (ValueError, RuntimeError) as e:
        fail(str(e))
    typer.echo(bench_table(res))
    note = fake_quant_note(model, res, fp_model)
    if note:
        typer.echo(note, err=True)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(res, indent=1))
        typer.echo(f"wrote {json_out}")
