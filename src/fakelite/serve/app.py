"""`fakelite serve`: a hardened HTTP API and a web page over one shared Detector.

Endpoints: POST /v1/detect (multipart upload of an image or a video), GET /v1/model, GET /healthz, GET /readyz,
GET /metrics (Prometheus), GET / (the page, assets under /static), /docs (OpenAPI).

Why it is built this way:
- The body is streamed by hand into a private temp folder (mode 0700) and counted as it arrives, so a huge upload
  is cut off at the limit (413) instead of being buffered; the file is always deleted, on errors and timeouts too.
- What a file *is* comes from its magic bytes, never from its name or Content-Type; image pixel counts are read
  from the header before any decode, a video's real length from its packet index (bounded, never the header's
  claim) before any frame is analysed. Headers, frames and faces are read in the isolated decode worker
  (`deploy/isolated.py`): a native crash or hang costs that request only.
- Admission is bounded: at most `max_concurrency` detections run and `max_queue` wait; anything more gets 503 with
  Retry-After at once, so a burst never piles up memory or latency. Work runs on a dedicated thread pool whose
  slot is held until the thread really finishes (a timed-out request answers 504 but cannot overbook the CPU).
- Every error is `{"error": {"code", "message"}}` with no stack trace or server path in it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from fakelite.serve.settings import ServeSettings
from fakelite.serve.sniff import SNIFF_BYTES, Sniffed, sniff

log = logging.getLogger("fakelite.serve")
STATIC_DIR = Path(__file__).resolve().parent / "static"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPART_OVERHEAD = 64 * 1024  # room for boundaries, part headers and small form fields on top of the file
MAX_FIELD_BYTES = 1024
MAX_PARTS = 16
FACES_CHOICES = ("auto", "on", "off")  # fakelite.deploy.detect.FACE_MODES
AGGREGATE_CHOICES = ("mean", "confident")  # fakelite.deploy.detect.AGGREGATES
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; script-src 'self'; "
            "style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


# ----------------------------------------------------------------------------------------------------- errors
class ApiError(Exception):
    """An error answered to the client as {"error": {"code", "message"}} with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests",
                 500: "internal_error", 503: "unavailable", 504: "timeout"}


# ------------------------------------------------------------------------------------------ response schemas
class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Face(BaseModel):
    box: list[float]
    score: float | None = None
    confidence: float | None = None


class Frame(BaseModel):
    index: int
    time: float | None = None
    score: float | None = None
    faces: list[Face] = []


class DetectResult(BaseModel):
    filename: str
    kind: str
    format: str
    score: float | None = None
    label: str | None = None
    threshold: float
    note: str | None = None
    input: str | None = None
    faces: list[Face] = []
    frames: list[Frame] = []
    aggregate: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    fps: float | None = None
    frames_with_face: int | None = None
    truncated: bool | None = None
    frames_total: int | None = None
    frames_requested: int | None = None
    frames_decoded: int | None = None
    frames_unreadable: int | None = None
    header_frames: int | None = None
    rotation: int | None = None
    model_id: str
    latency_ms: float


_ERRORS_DOC = {s: {"model": ErrorBody} for s in (400, 401, 408, 413, 415, 422, 503, 504)}


# ---------------------------------------------------------------------------------------------------- metrics
class Metrics:
    """Prometheus collectors in a registry of this app's own (several apps can live in one process).

    With `--workers N` the service runs in prometheus_client's multiprocess mode ($PROMETHEUS_MULTIPROC_DIR, set
    by `run_server`): every worker writes its values to files there and any worker's /metrics answers the sum over
    all of them (gauges: `multiprocess_mode` below — live sums, the slowest model load, ready only when all are).
    """

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("fakelite_http_requests", "HTTP requests by endpoint, method and status code",
                                ["endpoint", "method", "code"], registry=r)
        self.latency = Histogram("fakelite_http_request_duration_seconds", "HTTP request latency",
                                 ["endpoint"], buckets=self.BUCKETS, registry=r)
        self.inflight = Gauge("fakelite_http_requests_in_flight", "HTTP requests being served now", registry=r,
                              multiprocess_mode="livesum")
        self.detect_running = Gauge("fakelite_detections_running", "Detections running on worker threads", registry=r,
                                    multiprocess_mode="livesum")
        self.detect_admitted = Gauge("fakelite_detect_admitted", "Detect requests admitted (running + waiting)",
                                     registry=r, multiprocess_mode="livesum")
        self.rejected = Counter("fakelite_rejected", "Requests refused before any work, by reason", ["reason"],
                                registry=r)
        self.model_load = Gauge("fakelite_model_load_seconds", "Seconds the model took to load", registry=r,
                                multiprocess_mode="max")
        self.model_ready = Gauge("fakelite_model_ready", "1 once the model is loaded (in every live worker)",
                                 registry=r, multiprocess_mode="livemin")
        self.upload_bytes = Histogram("fakelite_upload_bytes", "Size of accepted uploads",
                                      buckets=(1e3, 1e4, 1e5, 1e6, 5e6, 1e7, 2.5e7, 1e8), registry=r)

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if os.environ.get(MULTIPROC_ENV):  # the sum over every worker process, not just this one
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


_KNOWN_ENDPOINTS = ("/v1/detect", "/v1/model", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/")


def _endpoint_label(path: str) -> str:
    if path.startswith("/static/"):
        return "/static"
    return path if path in _KNOWN_ENDPOINTS else "other"  # bounded label set, whatever clients request


class ServiceMiddleware:
    """Pure ASGI middleware: request metrics and security headers (CSP on the page, nosniff everywhere)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = _endpoint_label(scope.get("path", ""))
        status = {"code": 500}
        page = endpoint in ("/", "/static")

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if page:
                    headers += [(b"content-security-policy", PAGE_CSP.encode()), (b"x-frame-options", b"DENY")]
                message = {**message, "headers": headers}
            await send(message)

        self.metrics.inflight.inc()
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.inflight.dec()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
            self.metrics.requests.labels(endpoint, scope.get("method", ""), str(status["code"])).inc()


# ----------------------------------------------------------------------------------------------------- upload
@dataclass
class Upload:
    """One received file in the private temp folder; `remove()` is idempotent and always called."""

    path: Path
    filename: str
    size: int
    sniffed: Sniffed
    fields: dict[str, str] = field(default_factory=dict)

    def remove(self) -> None:
        _unlink(self.path)


def _unlink(path: Path | str | None) -> None:
    if path is None:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:  # pragma: no cover - nothing a client can do about it
        log.warning("could not delete upload temp file: %s", e)


_SAFE_NAME = re.compile(r"[^\w.\- ()\[\]+,@]")


def _safe_filename(name: str | None) -> str:
    """The client's file name reduced to a short, printable base name (never used as a path)."""
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    base = _SAFE_NAME.sub("_", base).strip(" .") or "upload"
    return base[:120]


def _parse_disposition(value: bytes) -> dict[str, str]:
    from python_multipart.multipart import parse_options_header

    _, params = parse_options_header(value)
    return {k.decode("latin-1").lower(): v.decode("utf-8", "replace") for k, v in params.items()}


async def receive_upload(request: Request, settings: ServeSettings, tmpdir: Path) -> Upload:
    """Stream the request body into a 0600 file in `tmpdir`, enforcing the size limit as bytes arrive.

    multipart/form-data: the part named "file" (or the first part with a filename) is the upload; small text
    fields ride along (frames, faces, aggregate). application/octet-stream: the whole body is the file.
    """
    from python_multipart.multipart import MultipartParser, parse_options_header

    limit = settings.max_upload_bytes
    ctype_raw = request.headers.get("content-type", "")
    ctype, params = parse_options_header(ctype_raw)
    ctype = ctype.lower()
    if ctype == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise ApiError(400, "bad_multipart", "multipart/form-data without a boundary")
        body_limit = limit + MULTIPART_OVERHEAD
    elif ctype == b"application/octet-stream":
        boundary, body_limit = None, limit
    else:
        shown = ctype.decode("latin-1")[:60] or "none"
        raise ApiError(415, "unsupported_content_type",
                       f"send the file as multipart/form-data (field 'file') or application/octet-stream, not {shown}")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > body_limit:
                raise ApiError(413, "upload_too_large", f"upload larger than the limit of {settings.max_upload_mb:g} MB")
        except ValueError:
            raise ApiError(400, "bad_request", "invalid Content-Length") from None

    fd, tmp = tempfile.mkstemp(dir=tmpdir, prefix="up-")
    f = os.fdopen(fd, "wb")
    st: dict[str, Any] = {"size": 0, "head": b"", "filename": None, "found": False, "parts": 0,
                          "fields": {}, "cur": None, "hdr_field": b"", "hdr_value": b"", "headers": {},
                          "too_big": False, "field_buf": b""}

    def write_file(data: bytes) -> None:
        st["size"] += len(data)
        if st["size"] > limit:
            st["too_big"] = True
            return
        if len(st["head"]) < SNIFF_BYTES:
            st["head"] += data[: SNIFF_BYTES - len(st["head"])]
        f.write(data)

    parser = None
    if boundary is not None:
        def on_part_begin() -> None:
            st["parts"] += 1
            st["headers"], st["cur"], st["field_buf"] = {}, None, b""
            if st["parts"] > MAX_PARTS:
                raise ApiError(400, "bad_multipart", f"too many form parts (limit {MAX_PARTS})")

        def on_header_field(data: bytes, start: int, end: int) -> None:
            st["hdr_field"] += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            st["hdr_value"] += data[start:end]

        def on_header_end() -> None:
            st["headers"][st["hdr_field"].lower()] = st["hdr_value"]
            st["hdr_field"], st["hdr_value"] = b"", b""

        def on_headers_finished() -> None:
            disp = _parse_disposition(st["headers"].get(b"content-disposition", b""))
            name, filename = disp.get("name", ""), disp.get("filename")
            if not st["found"] and (name == "file" or filename is not None):
                st["found"], st["cur"], st["filename"] = True, "file", filename
            else:
                st["cur"] = ("field", name)

        def on_part_data(data: bytes, start: int, end: int) -> None:
            if st["cur"] == "file":
                write_file(data[start:end])
            elif st["cur"] is not None:
                st["field_buf"] += data[start:end]
                if len(st["field_buf"]) > MAX_FIELD_BYTES:
                    raise ApiError(400, "bad_multipart", "form field too long")

        def on_part_end() -> None:
            if isinstance(st["cur"], tuple) and st["cur"][1]:
                st["fields"][st["cur"][1]] = st["field_buf"].decode("utf-8", "replace").strip()
            st["cur"] = None

        parser = MultipartParser(boundary, callbacks={
            "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
            "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data, "on_part_end": on_part_end})

    ok = False
    try:
        total = 0
        async for chunk in request.stream():
            if not chunk:
                continue
            total += len(chunk)
            if total > body_limit:
                st["too_big"] = True
            elif parser is not None:
                try:
                    parser.write(chunk)
                except ApiError:
                    raise
                except Exception as e:  # noqa: BLE001 - python-multipart raises several kinds
                    raise ApiError(400, "bad_multipart", f"malformed multipart body ({type(e).__name__})") from None
            else:
                write_file(chunk)
            if st["too_big"]:
                raise ApiError(413, "upload_too_large", f"upload larger than the limit of {settings.max_upload_mb:g} MB")
        if parser is not None:
            try:
                parser.finalize()
            except Exception:  # noqa: BLE001
                raise ApiError(400, "bad_multipart", "malformed multipart body") from None
            if not st["found"]:
                raise ApiError(400, "missing_file", "no file in the form (send it in a field named 'file')")
        f.close()
        if st["size"] == 0:
            raise ApiError(400, "empty_file", "the uploaded file is empty (0 bytes)")
        sniffed = sniff(st["head"])
        if sniffed is None:
            raise ApiError(415, "unsupported_media_type",
                           "not a supported image (PNG, JPEG, GIF, BMP, WebP, TIFF, HEIC, AVIF) or video (MP4, MOV, AVI, MKV, WebM)")
        final = Path(tmp + sniffed.ext)
        os.rename(tmp, final)  # readers dispatch on the extension: give them the real one
        tmp = str(final)
        ok = True
        return Upload(final, _safe_filename(st["filename"]), st["size"], sniffed, dict(st["fields"]))
    finally:
        if not f.closed:
            f.close()
        if not ok:
            _unlink(tmp)


# ----------------------------------------------------------------------------------------------- the service
class Service:
    """Shared state of one app: the detector, limits, admission control, the thread pool and the temp folder."""

    def __init__(self, settings: ServeSettings, detector: Any = None, model_path: str | None = None):
        self.settings = settings
        self.detector = detector
        self.model_path = model_path
        self.metrics = Metrics()
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self.tmpdir: Path | None = None
        self.admitted = 0
        self.slots: asyncio.Semaphore | None = None
        self.pool = ThreadPoolExecutor(max_workers=settings.max_concurrency, thread_name_prefix="fakelite-detect")
        self._cost: dict | None = None
        self._cost_done = False
        self._lock = threading.Lock()
        self._face_detector: Any = None
        if detector is not None:
            self.metrics.model_ready.set(1)
            self.metrics.model_load.set(0)

    @property
    def ready(self) -> bool:
        return self.detector is not None

    # -- lifecycle
    def ensure_tmpdir(self) -> Path:
        with self._lock:
            if self.tmpdir is None or not self.tmpdir.is_dir():
                d = Path(tempfile.mkdtemp(prefix="fakelite-serve-", dir=self.settings.tmp_dir))
                os.chmod(d, stat.S_IRWXU)  # 0700: uploads are private to this user
                self.tmpdir = d
            return self.tmpdir

    def load_model(self) -> None:
        """Load the model once (on a background thread at startup) and publish its load time."""
        t0 = time.perf_counter()
        try:
            from fakelite.deploy.runtime import Detector

            det = Detector.load(self.model_path, backend=self.settings.backend, threads=self.settings.threads)
            det.set_scoring(self.settings.policy, self.settings.aggregate)
        except Exception as e:  # noqa: BLE001 - reported via /readyz and the log, the service stays up
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.load_error = msg.replace(str(self.model_path), Path(str(self.model_path)).name)
            log.error("model failed to load: %s", msg)
            return
        self.load_seconds = time.perf_counter() - t0
        self.metrics.model_load.set(self.load_seconds)
        self.detector = det
        self.metrics.model_ready.set(1)
        log.info("model %s loaded in %.2f s", getattr(det, "model_id", "?"), self.load_seconds)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    # -- auth
    def check_auth(self, request: Request) -> None:
        key = self.settings.api_key
        if not key:
            return
        given = request.headers.get("x-api-key")
        if given is None:
            auth = request.headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong API key (send X-API-Key or Authorization: Bearer)",
                           {"WWW-Authenticate": "Bearer"})

    # -- model info
    def model_summary(self) -> dict[str, Any]:
        """What /readyz reports: the served model's id, architecture, threshold, backend and file name."""
        det = self.detector
        header = dict(getattr(det, "header", None) or {})
        arch = header.get("arch")
        return {"id": str(getattr(det, "model_id", "unknown")),
                "arch": arch.get("name") if isinstance(arch, dict) else arch,
                "threshold": float(getattr(det, "threshold", header.get("threshold", 0.5))),
                "backend": getattr(det, "backend", None),
                "file": Path(self.model_path).name if self.model_path else None}

    def model_info(self) -> dict[str, Any]:
        det = self.detector
        header = dict(getattr(det, "header", None) or {})
        info: dict[str, Any] = {
            "model_id": str(getattr(det, "model_id", "unknown")),
            "arch": header.get("arch"),
            "preprocess": header.get("preprocess"),
            "threshold": float(getattr(det, "threshold", header.get("threshold", 0.5))),
            "quant": header.get("quant"),
            "provenance": header.get("provenance"),
            "metrics": header.get("metrics"),
            "backend": getattr(det, "backend", None),
            "backend_reason": getattr(det, "backend_reason", None),
            "load_seconds": self.load_seconds,
            "threshold_source": header.get("threshold_source"),
            "temperature": float(getattr(det, "temperature", header.get("temperature")) or 1.0),
        }
        pre = getattr(det, "preprocess", None)
        if pre is not None and hasattr(pre, "policy"):  # the scoring in force (after --policy overrides)
            info["scoring"] = {"policy": pre.policy, "aggregate": pre.aggregate, "topk": pre.topk,
                               "max_tiles": pre.max_tiles, "crop": pre.crop}
        cost = self.cost()
        if cost is not None:
            info["cost"] = cost
        return info

    def cost(self) -> dict | None:
        """fakelite.quant.cost.model_cost of the served model, computed once; None when unavailable."""
        if self._cost_done:
            return self._cost
        self._cost_done = True
        try:
            from fakelite.quant.cost import model_cost
        except ImportError:
            return None
        model = None
        if self.model_path:  # a private copy: cost() hooks its forward pass, the shared detector stays untouched
            try:
                from fakelite.artifact import load

                model = load(self.model_path)
            except Exception:  # noqa: BLE001
                model = None
        else:
            import copy

            from torch import nn

            shared = getattr(self.detector, "model", None)
            model = copy.deepcopy(shared) if isinstance(shared, nn.Module) else None
        if model is None:
            return None
        try:
            cost = model_cost(model)
            self._cost = cost if isinstance(cost, dict) else getattr(cost, "__dict__", None)
        except Exception as e:  # noqa: BLE001 - cost is informative, never fatal
            log.warning("model cost unavailable: %s", e)
        return self._cost

    # -- detection (runs on a worker thread)
    def probe(self, up: Upload) -> dict[str, Any]:
        """Check pixel/duration limits before anything is analysed: images from the header (size as displayed,
        EXIF orientation applied); videos from their real length, counted from the packet index in the isolated
        decode worker and bounded (counting stops just past the limit), never from the header's claim."""
        s = self.settings
        if up.sniffed.kind == "image":
            from fakelite.data.io import BadInput
            from fakelite.deploy.isolated import image_size_isolated

            try:  # the header is parsed in the isolated worker too (HEIC/AVIF headers are native code)
                w, h = image_size_isolated(up.path, timeout=max(1.0, s.request_timeout_s))
            except BadInput as e:
                if e.category == "too large":
                    raise ApiError(413, "image_too_large",
                                   f"image has too many pixels (limit {s.max_pixels:,})") from None
                raise ApiError(422, "corrupt_image", f"{up.sniffed.format.upper()} data could not be read") from None
            if w * h > s.max_pixels:
                raise ApiError(413, "image_too_large",
                               f"image is {w}×{h} = {w * h:,} pixels; the limit is {s.max_pixels:,}")
            return {"width": w, "height": h}
        from fakelite.data.io import BadInput
        from fakelite.deploy.isolated import probe_video_isolated

        try:
            info = probe_video_isolated(up.path, max_seconds=s.max_video_seconds,
                                        max_frames=int(s.max_video_seconds * 240) + 1,
                                        timeout=max(1.0, s.request_timeout_s))
        except BadInput as e:
            if e.category == "too large":
                raise ApiError(413, "video_too_large", _scrub(f"{up.filename}: {e.reason}", up)) from None
            raise ApiError(422, "corrupt_video", _scrub(f"{up.filename}: {e.reason}", up)) from None
        w, h = info.width, info.height
        if w <= 0 or h <= 0:
            raise ApiError(422, "corrupt_video", "video has no readable frames")
        if w * h > s.max_pixels:
            raise ApiError(413, "video_too_large",
                           f"video frames are {w}×{h} = {w * h:,} pixels; the limit is {s.max_pixels:,}")
        if info.capped:
            raise ApiError(413, "video_too_long", f"video lasts more than the limit of {s.max_video_seconds:g} s")
        if (info.duration_s or 0) > s.max_video_seconds:
            raise ApiError(413, "video_too_long",
                           f"video lasts {info.duration_s:.1f} s; the limit is {s.max_video_seconds:g} s")
        return {"width": w, "height": h, "duration_s": info.duration_s, "frames_total": info.frames,
                "header_frames": info.header_frames}

    def face_detector(self) -> Any:
        """One face detector shared by all requests (the deploy detectors lock around their non-reentrant core)."""
        with self._lock:
            if self._face_detector is None:
                from fakelite.deploy.faces import make_face_detector

                self._face_detector = make_face_detector("haar")
            return self._face_detector

    def run_detection(self, up: Upload, frames: int, faces: str, aggregate: str) -> dict[str, Any]:
        from fakelite.data.io import BadInput
        from fakelite.deploy.detect import detect_file

        info = self.probe(up)
        # faces are found in the isolated decode worker (a native crash or hang there costs this request only)
        kw: dict[str, Any] = {"face_detector": "haar", "timeout": max(1.0, self.settings.request_timeout_s)}
        try:
            res = detect_file(self.detector, up.path, faces=faces, frames=frames, aggregate=aggregate, **kw)
        except BadInput as e:
            res = {"error": e.reason}
        err = res.get("error")
        if err:
            code = "corrupt_image" if up.sniffed.kind == "image" else "corrupt_video"
            raise ApiError(422, code, _scrub(str(err), up))
        score = res.get("score")  # None: no face found where faces were required (a note says so)
        out = {
            "filename": up.filename,
            "kind": res.get("kind", up.sniffed.kind),
            "format": up.sniffed.format,
            "score": None if score is None else float(score),
            "label": res.get("label"),
            "threshold": float(getattr(self.detector, "threshold", 0.5)),
            "note": res.get("note"),
            "input": res.get("input"),
            "faces": _clean_faces(res.get("faces")),
            "frames": [{"index": int(fr.get("index", i)), "time": fr.get("time"), "score": fr.get("score"),
                        "faces": _clean_faces(fr.get("faces"))} for i, fr in enumerate(res.get("frames") or [])],
            "aggregate": aggregate if up.sniffed.kind == "video" else None,
            **info,
            **{k: res[k] for k in ("width", "height") if res.get(k)},  # as displayed (EXIF/rotation applied)
            **({k: res.get(k) for k in ("fps", "frames_with_face", "truncated", "duration_s", "frames_total",
                                        "frames_requested", "frames_decoded", "frames_unreadable", "header_frames",
                                        "rotation") if k in res or k in ("fps", "frames_with_face", "truncated")}
               if up.sniffed.kind == "video" else {}),
            "model_id": str(getattr(self.detector, "model_id", "unknown")),
        }
        return out


def _clean_faces(faces: Any) -> list[dict[str, Any]]:
    out = []
    for fc in faces or []:
        box = [float(v) for v in (fc.get("box") or [])][:4]
        conf = fc.get("confidence")
        out.append({"box": box, "score": None if fc.get("score") is None else float(fc["score"]),
                    "confidence": None if conf is None else float(conf)})
    return out


def _scrub(msg: str, up: Upload) -> str:
    """Remove server paths from a message: the temp file path becomes the client's file name."""
    msg = msg.replace(str(up.path), up.filename)
    msg = re.sub(r"(/[\w.\-]+){2,}", "<file>", msg)  # any other absolute path
    return msg.splitlines()[0][:300] if msg else "unreadable input"


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
        code = _STATUS_CODES.get(exc.status_code, "error")
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
              response_model=DetectResult, responses=_ERRORS_DOC, openapi_extra=detect_body)
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
            loop = asyncio.get_running_loop()
            svc.metrics.detect_running.inc()
            job: Future = svc.pool.submit(svc.run_detection, up, frames, faces, aggregate)
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


def run_server(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
               log_level: str = "info", max_connections: int = 256) -> None:
    """Run uvicorn with `workers` processes; each loads the model once and shares it across its threads."""
    import uvicorn

    from fakelite.serve.settings import ENV_VAR

    os.environ[ENV_VAR] = settings.validate().to_json()
    with multiprocess_metrics_dir(workers):
        uvicorn.run("fakelite.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, server_header=False, date_header=True, timeout_keep_alive=5,
                    limit_concurrency=max_connections, proxy_headers=False)


@contextmanager
def multiprocess_metrics_dir(workers: int):
    """With several workers, point $PROMETHEUS_MULTIPROC_DIR at an empty private folder for the server's life
    (unless the caller set one: then its stale *.db files are removed), so /metrics sums all workers."""
    if workers <= 1:
        yield None
        return
    given = os.environ.get(MULTIPROC_ENV)
    d = Path(given) if given else Path(tempfile.mkdtemp(prefix="fakelite-metrics-"))
    d.mkdir(parents=True, exist_ok=True)
    for f in d.glob("*.db"):  # values of an earlier run would be added to this one's
        f.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(d)
    try:
        yield d
    finally:
        if not given:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(d, ignore_errors=True)
