"""`fakelite serve`: a hardened HTTP API and a web page over one shared Detector.

Endpoints: POST /v1/detect (multipart upload of an image or a video), GET /v1/model, GET /healthz, GET /readyz,
GET /metrics (Prometheus), GET / (the page, assets under /static), /docs (OpenAPI).

Why it is built this way:
- The body is streamed by hand into a private temp folder (mode 0700) and counted as it arrives, so a huge upload
  is cut off at the limit (413) instead of being buffered; the file is always deleted, on errors and timeouts too
  (`upload.py`).
- What a file *is* comes from its magic bytes, never from its name or Content-Type; image pixel counts are read
  from the header before any decode, a video's real length from its packet index (bounded, never the header's
  claim) before any frame is analysed. Headers, frames and faces are read in the isolated decode worker
  (`deploy/isolated.py`): a native crash or hang costs that request only (`service.py`).
- Admission is bounded: at most `max_concurrency` detections run and `max_queue` wait; anything more gets 503 with
  Retry-After at once, so a burst never piles up memory or latency. Work runs on a dedicated thread pool whose
  slot is held until the thread really finishes (a timed-out request answers 504 but cannot overbook the CPU).
- Every error is `{"error": {"code", "message"}}` with no stack trace or server path in it (`errors.py`).

This module holds the routes and the page; the pieces, one job per file: `errors.py`, `schemas.py` (response
models), `metrics.py` (Prometheus), `middleware.py` (metrics and security headers), `upload.py`, `service.py` (the
detector and the work), `server.py` (uvicorn), `command.py` (the command line).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fakelite.serve.errors import STATUS_CODES, ApiError, error_response
from fakelite.serve.metrics import MULTIPROC_ENV
from fakelite.serve.middleware import ServiceMiddleware
from fakelite.serve.schemas import ERRORS_DOC, DetectResult, ErrorBody
from fakelite.serve.service import Service
from fakelite.serve.settings import ServeSettings
from fakelite.serve.upload import Upload, receive_upload

__all__ = ["AGGREGATE_CHOICES", "FACES_CHOICES", "STATIC_DIR", "app_from_env", "create_app"]

log = logging.getLogger("fakelite.serve")
STATIC_DIR = Path(__file__).resolve().parent / "static"
FACES_CHOICES = ("auto", "on", "off")  # fakelite.deploy.detect.FACE_MODES
AGGREGATE_CHOICES = ("mean", "confident")  # fakelite.deploy.detect.AGGREGATES


def _int_param(value: str | None, name: str, default: int, lo: int, hi: int) -> int:
    if value is None or value == "":
        return default
    try:
        v = int(value)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be an integer") from None
    if not lo <= v <= hi:
        raise ApiError(400, "bad_parameter", f"{name} must be between {lo} and {hi}")
    return v


def _choice_param(value: str | None, name: str, default: str, choices: tuple[str, ...]) -> str:
    if value is None or value == "":
        return default
    if value not in choices:
        raise ApiError(400, "bad_parameter", f"{name} must be one of {', '.join(choices)}")
    return value


# --------------------------------------------------------------------------------------------------- factory
def create_app(model: str | os.PathLike | Any, settings: ServeSettings | None = None) -> FastAPI:
    """Build the FastAPI app over a model path (loaded once, in the background, at startup) or a ready detector.

    Tests inject a detector object (anything with predict/threshold/header/model_id that detect_file accepts).
    """
    settings = (settings or ServeSettings()).validate()
    if isinstance(model, str | os.PathLike):
        svc = Service(settings, model_path=str(model))
    else:
        svc = Service(settings, detector=model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.slots = asyncio.Semaphore(settings.max_concurrency)
        if getattr(svc.pool, "_shutdown", False):  # the app is started again (e.g. a second TestClient block)
            svc.pool = ThreadPoolExecutor(max_workers=settings.max_concurrency, thread_name_prefix="fakelite-detect")
        svc.ensure_tmpdir()
        loader = None
        if svc.detector is None and svc.model_path:
            loader = threading.Thread(target=svc.load_model, name="fakelite-model-load", daemon=True)
            loader.start()
        try:
            yield
        finally:
            svc.shutdown()
            if os.environ.get(MULTIPROC_ENV):  # drop this worker's live gauges from the sums
                from prometheus_client.multiprocess import mark_process_dead

                mark_process_dead(os.getpid())

    docs = settings.docs
    app = FastAPI(title="fakelite", version=_version(), lifespan=lifespan,
                  description="Deepfake detection for images and videos. Upload a file to POST /v1/detect.",
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json" if docs else None)
    app.state.service = svc

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Authorization", "Content-Type"], max_age=600)
    app.add_middleware(ServiceMiddleware, metrics=svc.metrics)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}"[:200])

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error (logged on the server)")

    # ------------------------------------------------------------------------------------------ endpoints
    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: 200 only once the model is loaded",
             responses={503: {"model": ErrorBody}})
    async def readyz() -> Response:
        if svc.ready:
            return JSONResponse({"status": "ready", "model_id": str(getattr(svc.detector, "model_id", "unknown")),
                                 "model": svc.model_summary(), "version": _version()})
        if svc.load_error:
            return error_response(503, "model_failed", f"model failed to load: {svc.load_error}")
        return error_response(503, "model_loading", "model is loading", {"Retry-After": "1"})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics (text format)")
    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        svc.check_auth(request)
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model", tags=["api"], summary="Model metadata, bits plan and cost",
             responses={401: {"model": ErrorBody}, 503: {"model": ErrorBody}})
    async def model_info(request: Request) -> Response:
        svc.check_auth(request)
        if not svc.ready:
            if svc.load_error:  # the same answer as /readyz
                raise ApiError(503, "model_failed", f"model failed to load: {svc.load_error}")
            raise ApiError(503, "model_loading", "model is not loaded yet", {"Retry-After": "1"})
        info = await asyncio.get_running_loop().run_in_executor(None, svc.model_info)
        info["limits"] = {"max_upload_mb": settings.max_upload_mb, "max_pixels": settings.max_pixels,
                          "max_video_seconds": settings.max_video_seconds,
                          "max_video_frames": settings.max_video_frames,
                          "request_timeout_s": settings.request_timeout_s}
        return JSONResponse(info)

    detect_body = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "image or video"},
            "frames": {"type": "integer", "description": "frames to sample from a video"},
            "faces": {"type": "string", "enum": list(FACES_CHOICES)},
            "aggregate": {"type": "string", "enum": list(AGGREGATE_CHOICES)}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}

    @app.post("/v1/detect", tags=["api"], summary="Detect a deepfake in an uploaded image or video",
              response_model=DetectResult, responses=ERRORS_DOC, openapi_extra=detect_body)
    async def detect(request: Request) -> Response:
        """Upload one file (multipart field `file`, or a raw `application/octet-stream` body).

        Returns the score (probability of fake), the label at the model's threshold, face boxes with per-face
        scores and, for videos, per-frame scores and their aggregate. Optional fields or query parameters:
        `frames`, `faces`, `aggregate`.
        """
        t0 = time.perf_counter()
        svc.check_auth(request)
        if not svc.ready:
            msg = f"model failed to load: {svc.load_error}" if svc.load_error else "model is loading"
            raise ApiError(503, "model_loading" if not svc.load_error else "model_failed", msg,
                           {"Retry-After": str(settings.retry_after_s)})
        if svc.slots is None:  # app used without its lifespan (plain TestClient without `with`)
            svc.slots = asyncio.Semaphore(settings.max_concurrency)
        if svc.admitted >= settings.max_concurrency + settings.max_queue:
            svc.metrics.rejected.labels("busy").inc()
            raise ApiError(503, "busy", "server is at capacity, retry shortly",
                           {"Retry-After": str(settings.retry_after_s)})
        svc.admitted += 1
        svc.metrics.detect_admitted.inc()
        deadline = t0 + settings.request_timeout_s
        up: Upload | None = None
        acquired = False
        try:
            try:
                up = await asyncio.wait_for(receive_upload(request, settings, svc.ensure_tmpdir()),
                                            timeout=max(0.001, deadline - time.perf_counter()))
            except TimeoutError:
                raise ApiError(408, "upload_timeout",
                               f"the upload did not finish within {settings.request_timeout_s:g} s") from None
            svc.metrics.upload_bytes.observe(up.size)
            t_up = time.perf_counter()
            svc.metrics.stage.labels("upload").observe(t_up - t0)
            q = request.query_params
            frames = _int_param(q.get("frames", up.fields.get("frames")), "frames",
                                settings.default_video_frames, 1, settings.max_video_frames)
            faces = _choice_param(q.get("faces", up.fields.get("faces")), "faces", settings.faces, FACES_CHOICES)
            aggregate = _choice_param(q.get("aggregate", up.fields.get("aggregate")), "aggregate", "mean",
                                      AGGREGATE_CHOICES)
            try:
                await asyncio.wait_for(svc.slots.acquire(), timeout=max(0.001, deadline - time.perf_counter()))
            except TimeoutError:
                raise ApiError(504, "timeout", f"no detection slot within {settings.request_timeout_s:g} s") from None
            acquired = True
            svc.metrics.stage.labels("queue").observe(time.perf_counter() - t_up)
            loop = asyncio.get_running_loop()
            svc.metrics.detect_running.inc()
            job: Future = svc.pool.submit(svc.timed_detection, up, frames, faces, aggregate)
            upload_ref = up

            def _finished(_: Future) -> None:
                # the slot is released only when the thread is really done, even after a 504
                svc.metrics.detect_running.dec()
                upload_ref.remove()
                loop.call_soon_threadsafe(svc.slots.release)

            job.add_done_callback(_finished)
            acquired = False  # ownership of the slot moved to the job
            fut = asyncio.wrap_future(job)
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "exception not retrieved"
            done, _ = await asyncio.wait({fut}, timeout=max(0.0, deadline - time.perf_counter()))
            if not done:
                raise ApiError(504, "timeout", f"detection did not finish within {settings.request_timeout_s:g} s")
            result = fut.result()
            result["latency_ms"] = round((time.perf_counter() - t0) * 1000.0, 2)
            return JSONResponse(result)
        finally:
            if acquired:
                svc.slots.release()
            if up is not None:
                up.remove()
            svc.admitted -= 1
            svc.metrics.detect_admitted.dec()

    # ------------------------------------------------------------------------------------------ the page
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if docs:
        _mount_docs(app)
    return app


def _swagger_ui_dir() -> Path | None:
    """Swagger UI 5 (reads the OpenAPI 3.1 document FastAPI writes) as shipped in the fastapi-offline wheel; None
    when it is not installed. swagger-ui-bundle's Swagger UI 3 cannot render 3.1 ("Unable to render this
    definition"), so it is not used."""
    import importlib.util

    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(list(spec.submodule_search_locations)[0]) / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() else None


def _mount_docs(app: FastAPI) -> None:
    """OpenAPI docs at /docs with Swagger UI 5 served by the app itself (from the fastapi-offline wheel), so the
    page works on machines without internet access — FastAPI's default loads its scripts from a CDN."""
    from fastapi.openapi.docs import get_swagger_ui_html

    assets = _swagger_ui_dir()
    if assets is not None:
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        if assets is None:
            return HTMLResponse("<p>Install fastapi-offline for the interactive docs; the schema is at "
                                "<a href='/openapi.json'>/openapi.json</a>.</p>")
        return get_swagger_ui_html(openapi_url="/openapi.json", title="fakelite API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("fakelite")
    except Exception:  # noqa: BLE001
        return "0"


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: settings come from $FAKELITE_SERVE_SETTINGS."""
    settings = ServeSettings.from_env()
    if not settings.model:
        raise RuntimeError("no model in the serve settings")
    return create_app(settings.model, settings)

