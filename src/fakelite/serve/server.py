"""Starting the HTTP service: the start-up checks that end `fakelite serve` at once with one line (a model that
cannot load, a bad option), and uvicorn with N worker processes."""

from __future__ import annotations

import os
from pathlib import Path

from fakelite.artifact import ArtifactError
from fakelite.deploy.backends import UnknownBackend, canonical
from fakelite.deploy.runtime import Detector
from fakelite.packaged import resolve_model
from fakelite.serve.metrics import multiprocess_metrics_dir
from fakelite.serve.settings import ENV_VAR, ServeSettings

__all__ = ["ServeStartError", "check_model_loads", "prepare_server", "run_server"]


class ServeStartError(Exception):
    """The service cannot start; the message is one line naming the model file or the option at fault."""


def prepare_server(model: Path | str | None, *, workers: int, port: int, backend: str = "auto",
                   **fields: object) -> ServeSettings:
    """Check everything `fakelite serve` needs before uvicorn starts and return the validated settings.

    `model` is a model file or a packaged model name (None: `default`); `fields` are further `ServeSettings`
    fields (threads, limits, ...). The model is loaded once here, so a model that cannot load ends the start-up
    instead of leaving a service that is up but never ready.

    Raises:
        ServeStartError: unknown packaged name, missing file, unknown backend, workers < 1, a port outside
            1-65535, invalid settings, or a model that does not load.
    """
    try:
        path = resolve_model("default" if model is None else model)
    except ArtifactError as e:
        raise ServeStartError(str(e)) from None
    if not path.is_file():
        raise ServeStartError(f"{path}: no such model file")
    try:
        backend = canonical(backend)
    except UnknownBackend as e:
        raise ServeStartError(f"--backend: {e}") from None
    if workers < 1:
        raise ServeStartError("--workers must be >= 1")
    if not 0 < port < 65536:
        raise ServeStartError(f"--port {port}: not a TCP port")
    try:
        settings = ServeSettings(model=str(path.resolve()), backend=backend, **fields).validate()
    except ValueError as e:
        raise ServeStartError(str(e)) from None
    check_model_loads(path, backend, fields.get("threads"))
    return settings


def check_model_loads(model: Path, backend: str, threads: int | None) -> None:
    """Load the model once; raise ServeStartError with one line (naming the file) when it cannot load."""
    try:
        Detector.load(model, backend=backend, threads=threads)
    except Exception as e:  # noqa: BLE001 - any load failure gets the same one-line message
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise ServeStartError(why if str(model) in why or model.name in why
                              else f"{model}: cannot load the model ({why})") from None


def run_server(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
               log_level: str = "info", max_connections: int = 256) -> None:
    """Run uvicorn with `workers` processes; each loads the model once and shares it across its threads."""
    import uvicorn

    os.environ[ENV_VAR] = settings.validate().to_json()
    with multiprocess_metrics_dir(workers):
        uvicorn.run("fakelite.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, server_header=False, date_header=True, timeout_keep_alive=5,
                    limit_concurrency=max_connections, proxy_headers=False)


