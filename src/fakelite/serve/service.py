"""The service behind the routes: the detector (loaded once, in the background), admission state, the thread pool,
the private temp folder, auth, model info and cost, and one detection (limits probed first, then `detect_file`).

Headers, frames and faces are read in the isolated decode worker (`deploy/isolated.py`): a native crash or hang
costs that request only.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import Request
from torch import nn

from fakelite.artifact import load
from fakelite.data.io import BadInput
from fakelite.deploy.detect import detect_file
from fakelite.deploy.faces import make_face_detector
from fakelite.deploy.isolated import image_size_isolated, probe_video_isolated
from fakelite.deploy.runtime import Detector
from fakelite.quant.cost import model_cost
from fakelite.serve.errors import ApiError
from fakelite.serve.metrics import Metrics
from fakelite.serve.settings import ServeSettings
from fakelite.serve.upload import Upload

__all__ = ["Service"]

log = logging.getLogger("fakelite.serve")


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
        model = None
        if self.model_path:  # a private copy: cost() hooks its forward pass, the shared detector stays untouched
            try:
                model = load(self.model_path)
            except Exception:  # noqa: BLE001
                model = None
        else:
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
                self._face_detector = make_face_detector("haar")
            return self._face_detector

    def timed_detection(self, up: Upload, frames: int, faces: str, aggregate: str) -> dict[str, Any]:
        """`run_detection`, its wall time recorded in the `detect` stage histogram (what the server spends per request)."""
        t0 = time.perf_counter()
        try:
            return self.run_detection(up, frames, faces, aggregate)
        finally:
            self.metrics.stage.labels("detect").observe(time.perf_counter() - t0)

    def run_detection(self, up: Upload, frames: int, faces: str, aggregate: str) -> dict[str, Any]:
        """Probe the limits, then detect: the JSON answer of POST /v1/detect (less latency_ms); ApiError on bad input."""
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

