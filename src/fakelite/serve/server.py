"""Starting the HTTP service: the start-up checks that end `fakelite serve` at once with one line (a model that
cannot load, a bad option), and uvicorn with N worker processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
from pathlib import Path
from typing import Any

from fakelite.artifact import ArtifactError
from fakelite.deploy.backends import UnknownBackend, canonical
from fakelite.deploy.runtime import Detector
from fakelite.packaged import resolve_model
from fakelite.serve.metrics import multiprocess_metrics_dir
from fakelite.serve.settings import ENV_VAR, ServeSettings

__all__ = ["ServeStartError", "check_model_loads", "check_port_free", "listen_socket", "prepare_server", "run_server"]


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
    """Run uvicorn with `workers` processes; each loads the model once and shares it across its threads.

    With several workers on a platform that has SO_REUSEPORT (Linux, the BSDs), every worker listens on its own
    socket bound to the same port and the kernel hashes each new connection to one of them. uvicorn's own
    `--workers` shares one listening socket instead, and the first worker to wake accepts a whole burst of
    keep-alive connections and keeps them: in the load test one of two workers sat idle in 2 of 3 rounds
    (docs/results/serve_quiet.md). Raises ServeStartError when the port is taken."""
    os.environ[ENV_VAR] = settings.validate().to_json()
    config: dict[str, Any] = dict(factory=True, log_level=log_level, server_header=False, date_header=True,
                                  timeout_keep_alive=5, limit_concurrency=max_connections, proxy_headers=False)
    with multiprocess_metrics_dir(workers):
        if workers > 1 and hasattr(socket, "SO_REUSEPORT"):
            _run_reuseport_workers(host, port, workers, config)
            return
        import uvicorn

        uvicorn.run(APP_FACTORY, host=host, port=port, workers=workers, **config)


APP_FACTORY = "fakelite.serve.app:app_from_env"


def check_port_free(host: str, port: int) -> None:
    """ServeStartError (one line) when nothing can listen on host:port (taken, no such address, no permission)."""
    try:
        listen_socket(host, port, reuse_port=False).close()
    except OSError as e:
        raise ServeStartError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A listening TCP socket on host:port (IPv6 when host has a ':'), optionally with SO_REUSEPORT."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    s.listen(2048)
    return s


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies, even by SIGKILL (prctl PR_SET_PDEATHSIG), so no
    orphaned worker keeps serving the port. Elsewhere a no-op."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent already died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(host: str, port: int, config: dict[str, Any]) -> None:
    import uvicorn

    _die_with_parent()

    sock = listen_socket(host, port, reuse_port=True)
    uvicorn.Server(uvicorn.Config(APP_FACTORY, **config)).run(sockets=[sock])


def _run_reuseport_workers(host: str, port: int, workers: int, config: dict[str, Any]) -> None:
    """Start `workers` spawned processes, each serving on its own SO_REUSEPORT socket; stop them all on
    SIGINT/SIGTERM or when any of them exits."""
    check_port_free(host, port)  # SO_REUSEPORT would otherwise quietly share it with another server of ours
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(host, port, config), name=f"fakelite-serve-{i}")
             for i in range(workers)]
    for proc in procs:
        proc.start()

    asked_to_stop: list[int] = []

    def stop(*sig: Any) -> None:
        if sig:
            asked_to_stop.append(sig[0])
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn finishes the requests in flight, then exits

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        from multiprocessing.connection import wait

        wait([proc.sentinel for proc in procs])  # the first worker to exit ends the service
    finally:
        stop()
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    died = [p for p in procs if p.exitcode not in (0, None, -signal.SIGTERM)]
    if not asked_to_stop and died:  # a worker crashed or failed to start: the service did not stop on request
        raise ServeStartError(f"worker {died[0].name} exited with code {died[0].exitcode}; the service stopped")
