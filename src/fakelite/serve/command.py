"""`fakelite serve` and `python -m fakelite.serve`: the command line of the HTTP service (options → settings →
start-up checks → uvicorn; see server.py and app.py). It lives in serve/ so that `python -m fakelite.serve` needs
nothing above this package; the CLI registers it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fakelite.deploy.backends import HELP as BACKEND_HELP
from fakelite.serve.server import ServeStartError, check_port_free, prepare_server, run_server

__all__ = ["serve_command"]


def serve_command(
    model: Annotated[Path | None, typer.Option("--model", help="A .fakelite (or exported .onnx / .tflite) model, "
                                                               "or a packaged model name (default: `default`), "
                                                               "loaded once per worker")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind (127.0.0.1: this machine only; 0.0.0.0: all)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes (each loads the model)")] = 1,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="FAKELITE_API_KEY",
                                                help="Require this key (X-API-Key or Authorization: Bearer) on /v1/* and /metrics")] = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest upload accepted (413 beyond)")] = 25.0,
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="Largest image / video frame in pixels, read from the header (413 beyond)")] = 40_000_000,
    max_video_seconds: Annotated[float, typer.Option("--max-video-seconds", help="Longest video accepted (413 beyond)")] = 600.0,
    max_video_frames: Annotated[int, typer.Option("--max-video-frames", help="Most frames a client may ask to analyse per video")] = 64,
    frames: Annotated[int, typer.Option("--frames", help="Frames sampled per video by default")] = 32,
    timeout: Annotated[float, typer.Option("--timeout", help="Per-request time limit in seconds (504 beyond)")] = 30.0,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Detections running at once per worker")] = 2,
    queue: Annotated[int, typer.Option("--queue", help="Requests waiting for a slot per worker; more get 503 + Retry-After")] = 8,
    threads: Annotated[int | None, typer.Option(help="Inference threads per detector")] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "auto",
    cors_origin: Annotated[list[str] | None, typer.Option("--cors-origin", help="Allow this browser origin (repeatable); CORS is off without it")] = None,
    tmp_dir: Annotated[Path | None, typer.Option("--tmp-dir", help="Parent folder of the private (0700) upload folder")] = None,
    no_docs: Annotated[bool, typer.Option("--no-docs", help="Do not serve /docs and /openapi.json")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level")] = "info",
    policy: Annotated[str | None, typer.Option("--policy", help="Scoring of large images: center | resize256 | "
                                                                "tiles (default: the model's stored policy)")] = None,
    aggregate: Annotated[str | None, typer.Option("--aggregate", help="tiles: mean | max | topk")] = None,
) -> None:
    """Serve the HTTP API (POST /v1/detect, GET /v1/model, /healthz, /readyz, /metrics, /docs) and the web page at /.

    Example: fakelite serve --model runs/demo/fp/model.fakelite --port 8000 --api-key s3cret
    """
    try:
        settings = prepare_server(
            model, workers=workers, port=port, backend=backend, threads=threads, max_upload_mb=max_upload_mb,
            max_pixels=max_pixels, max_video_seconds=max_video_seconds, max_video_frames=max_video_frames,
            default_video_frames=min(frames, max_video_frames), request_timeout_s=timeout,
            max_concurrency=concurrency, max_queue=queue, api_key=api_key, cors_origins=list(cors_origin or []),
            tmp_dir=str(tmp_dir) if tmp_dir else None, docs=not no_docs, policy=policy, aggregate=aggregate)
        check_port_free(host, port)
    except ServeStartError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"fakelite serve: http://{host}:{port}/  (API docs at /docs; Ctrl-C stops)", err=True)
    try:
        run_server(settings, host=host, port=port, workers=workers, log_level=log_level)
    except ServeStartError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
