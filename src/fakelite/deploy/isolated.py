"""Decoding of untrusted files in an isolated worker process: a crash or hang of native code costs one file.

Decoders (FFmpeg through PyAV, Pillow's codecs) and the face detector are native code fed with files from the
field. `detect`, `serve` and `stream` run them in a child process (a fresh Python running `_child_main`) that
answers over pipes; the parent keeps the model and the batch. If the child dies (a segmentation fault, an abort)
or does not answer within the time limit, the parent kills it, reports that file as `BadInput` ("decoder crashed
(signal SIGSEGV)" / "decoding took longer than 60 s (stopped)") and starts a fresh child for the next file.

Protocol (no pickle): every message is a 12-byte header (JSON length, payload length), a JSON object and an
optional payload of raw uint8 pixels whose shape the JSON gives. File names travel as the bytes the file system
holds (base64), and the child opens them through Python file objects, so names that are not valid UTF-8 work.

Fault injection for tests: `FAKELITE_DECODE_FAULT="segv:NAME"` or `"hang:NAME"` makes the child crash or hang on
files whose name contains NAME (read by the child only).
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fakelite.data.io import BadInput, exif_size, load_rgb, register_heif
from fakelite.data.video_reader import VideoInfo, probe_video, read_video
from fakelite.deploy.faces import make_face_detector

HEADER = struct.Struct(">IQ")
DEFAULT_TIMEOUT_S = 120.0  # one file: decode (+ faces) of an image or of a video's sampled frames
FRAME_TIMEOUT_S = 30.0  # streaming: the longest wait for the next frame
FAULT_ENV = "FAKELITE_DECODE_FAULT"
SRC = str(Path(__file__).resolve().parents[2])  # the folder holding the fakelite package
# The child needs decoding and face detection only: it registers the fakelite package without running its
# __init__ (which loads torch for the model API), so a fresh child starts in a fraction of a second.
_BOOT = ("import sys, types; src = sys.argv[1]; sys.path.insert(0, src); m = types.ModuleType('fakelite'); "
         "m.__path__ = [src + '/fakelite']; sys.modules['fakelite'] = m; "
         "from fakelite.deploy.isolated import _child_main; _child_main()")


class WorkerFailure(BadInput):
    """The worker crashed or hung on a file (a BadInput, so batches report it and go on)."""


# ------------------------------------------------------------------------------------------------ framing
def _pack(obj: dict[str, Any], payload: bytes | memoryview = b"") -> bytes:
    j = json.dumps(obj).encode()
    return HEADER.pack(len(j), len(payload)) + j + bytes(payload)


def _read_exact_blocking(f, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _encode_path(path: str | os.PathLike) -> str:
    return base64.b64encode(os.fsencode(path)).decode("ascii")


def _decode_path(s: str) -> bytes:
    return base64.b64decode(s)


# -------------------------------------------------------------------------------------------- the child
def _fault(path_bytes: bytes) -> None:
    spec = os.environ.get(FAULT_ENV, "")
    for item in filter(None, spec.split(",")):
        kind, _, name = item.partition(":")
        if name and name.encode() in path_bytes:
            if kind == "segv":
                os.kill(os.getpid(), signal.SIGSEGV)
            if kind == "hang":
                time.sleep(3600)


class _Child:
    def __init__(self, out) -> None:
        self.out = out
        self._fds: dict[str, Any] = {}

    def send(self, obj: dict[str, Any], arr: np.ndarray | None = None) -> None:
        if arr is not None:
            arr = np.ascontiguousarray(arr, dtype=np.uint8)
            obj = {**obj, "shape": list(arr.shape)}
            self.out.write(_pack(obj, memoryview(arr).cast("B")))
        else:
            self.out.write(_pack(obj))
        self.out.flush()

    def faces(self, rgb: np.ndarray, spec: str | None, all_faces: bool) -> list | None:
        if not spec:
            return None
        if spec not in self._fds:
            self._fds[spec] = make_face_detector(spec)
        found = self._fds[spec](rgb)
        if not all_faces:
            found = found[:1]
        return [[*map(int, f.box), float(f.confidence)] for f in found]

    def handle(self, req: dict[str, Any]) -> None:
        path = os.fsdecode(_decode_path(req["path"]))
        _fault(os.fsencode(path))
        op = req["op"]
        if op == "image":
            rgb = load_rgb(path)
            self.send({"type": "image", "faces": self.faces(rgb, req.get("faces"), req.get("all_faces", False))}, rgb)
        elif op == "image_size":
            w, h = _image_size(path)
            self.send({"type": "size", "width": w, "height": h})
        elif op == "probe":
            info = probe_video(path, req.get("max_frames"), req.get("max_seconds"))
            self.send({"type": "info", "info": info.report()})
        elif op == "video":
            info: list = []
            gen = read_video(path, req.get("frames"), req.get("every"), info_out=info,
                             max_frames=req.get("max_frames"), max_seconds=req.get("max_seconds"),
                             all_frames=bool(req.get("all_frames")))
            for idx, t, rgb in gen:
                self.send({"type": "frame", "index": idx, "time": t,
                           "faces": self.faces(rgb, req.get("faces"), req.get("all_faces", False))}, rgb)
            self.send({"type": "info", "info": info[0].report()})
        else:
            raise ValueError(f"unknown op {op!r}")


def _image_size(path: str) -> tuple[int, int]:
    """(width, height) as displayed, from the header only (no pixels decoded); BadInput when it cannot be read."""
    import warnings

    from PIL import Image

    register_heif()
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as img:
                return exif_size(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInput(path, "image too large (decompression-bomb guard)") from None
    except OSError as e:
        if isinstance(e, FileNotFoundError | PermissionError):
            raise BadInput(path, "cannot read the file") from None
        raise BadInput(path, "not an image (unrecognised or unreadable header)") from None
    except Exception:  # noqa: BLE001 - any parser error is one line
        raise BadInput(path, "not an image (unrecognised or unreadable header)") from None


def _child_main() -> None:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything native code prints goes to stderr, never into the protocol
    inp = sys.stdin.buffer
    child = _Child(out)
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # noqa: BLE001 - faces are optional here
        pass
    while True:
        head = _read_exact_blocking(inp, HEADER.size)
        if head is None:
            return
        jn, pn = HEADER.unpack(head)
        body = _read_exact_blocking(inp, jn + pn)
        if body is None:
            return
        req = json.loads(body[:jn])
        try:
            child.handle(req)
            child.send({"type": "end"})
        except BadInput as e:
            child.send({"type": "error", "reason": e.reason})
        except Exception as e:  # noqa: BLE001 - one line for the report; the child lives on
            msg = str(e).splitlines()[0][:200] if str(e) else ""
            child.send({"type": "error", "reason": f"cannot read ({type(e).__name__}{': ' + msg if msg else ''})"})


# ------------------------------------------------------------------------------------------- the parent
def _signal_name(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"


class DecodeWorker:
    """One child process; `request` yields its messages for one file, with a deadline."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        err = None if os.environ.get("FAKELITE_WORKER_STDERR") else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, SRC], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=err, env=env, close_fds=True)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int | None:
        if self.proc is None:
            return None
        p, self.proc = self.proc, None
        if p.poll() is None:
            p.kill()
        try:
            rc = p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        for f in (p.stdin, p.stdout):
            try:
                f.close()
            except OSError:
                pass
        return rc

    @staticmethod
    def _read(fd: int, n: int, deadline: float) -> bytes | None:
        """n bytes from the child, None at EOF (it died, or another thread killed it); TimeoutError at deadline."""
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            try:
                r, _, _ = select.select([fd], [], [], min(left, 1.0))
                if not r:
                    continue
                chunk = os.read(fd, min(n - len(buf), 1 << 20))
            except (OSError, ValueError):
                return None
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def request(self, path: str | os.PathLike, req: dict[str, Any], timeout: float,
                per_message: float | None = None) -> Iterator[tuple[dict[str, Any], np.ndarray | None]]:
        """Send one request; yield (message, pixels) until "end". Raises BadInput for the file's own errors and
        WorkerFailure (a BadInput) when the child crashes or passes the time limit."""
        if not self.alive:
            self.start()
        finished = False
        fd = self.proc.stdout.fileno()
        try:
            try:
                self.proc.stdin.write(_pack({**req, "path": _encode_path(path)}))
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, AttributeError):
                rc = self.kill()
                raise WorkerFailure(path, f"decoder process died ({_signal_name(rc or 0)})") from None
            t_end = time.monotonic() + timeout
            while True:
                deadline = t_end if per_message is None else min(t_end, time.monotonic() + per_message)
                try:
                    head = self._read(fd, HEADER.size, deadline)
                    if head is not None:
                        jn, pn = HEADER.unpack(head)
                        body = self._read(fd, jn + pn, deadline)
                    else:
                        body = None
                except TimeoutError:
                    self.kill()
                    limit = timeout if per_message is None or t_end <= deadline else per_message
                    raise WorkerFailure(path, f"decoding took longer than {limit:g} s (stopped)") from None
                if body is None:
                    rc = self.kill()
                    raise WorkerFailure(path, f"decoder crashed ({_signal_name(rc if rc is not None else -9)})")
                msg = json.loads(body[:jn])
                arr = None
                if pn:
                    arr = np.frombuffer(body[jn:], dtype=np.uint8).reshape(msg["shape"])
                kind = msg.get("type")
                if kind == "end":
                    finished = True
                    return
                if kind == "error":
                    finished = True
                    raise BadInput(path, msg.get("reason") or "unreadable")
                yield msg, arr
        finally:
            if not finished:  # the caller stopped early or the child failed: its state is unknown
                self.kill()


class WorkerPool:
    """Idle workers reused across files and threads (one per concurrent request)."""

    def __init__(self, max_idle: int = 4) -> None:
        self._idle: list[DecodeWorker] = []
        self._lock = threading.Lock()
        self.max_idle = max_idle

    def acquire(self) -> DecodeWorker:
        with self._lock:
            while self._idle:
                w = self._idle.pop()
                if w.alive:
                    return w
        return DecodeWorker()

    def release(self, w: DecodeWorker) -> None:
        with self._lock:
            if w.alive and len(self._idle) < self.max_idle:
                self._idle.append(w)
                return
        w.kill()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()


POOL = WorkerPool()
atexit.register(POOL.close)


def _run(path, req: dict[str, Any], timeout: float, per_message: float | None = None,
         worker_out: list | None = None):
    w = POOL.acquire()
    if worker_out is not None:
        worker_out.append(w)
    try:
        yield from w.request(path, req, timeout, per_message)
    finally:
        POOL.release(w)


def load_image_isolated(path: str | os.PathLike, faces: str | None = None, all_faces: bool = False,
                        timeout: float = DEFAULT_TIMEOUT_S) -> tuple[np.ndarray, list | None]:
    """(upright (H, W, 3) uint8 RGB, faces) of an image file decoded in the worker.

    `faces`: a face-detector name ("haar", "blazeface") to run in the worker too, or None. Faces come back as
    [x, y, w, h, confidence] lists, largest first (only the largest unless `all_faces`). Raises BadInput.
    """
    for msg, arr in _run(path, {"op": "image", "faces": faces, "all_faces": all_faces}, timeout):
        if msg.get("type") == "image" and arr is not None:
            rgb, found = arr.copy(), msg.get("faces")
    return rgb, found


def image_size_isolated(path: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT_S) -> tuple[int, int]:
    """(width, height) of an image as displayed (EXIF orientation), read from its header in the worker; no pixel
    is decoded. Raises BadInput ("too large" for a decompression bomb)."""
    size = None
    for msg, _ in _run(path, {"op": "image_size"}, timeout):
        if msg.get("type") == "size":
            size = (int(msg["width"]), int(msg["height"]))
    if size is None:
        raise BadInput(path, "not an image (no answer from the decoder)")
    return size


def probe_video_isolated(path: str | os.PathLike, max_frames: int | None = None, max_seconds: float | None = None,
                         timeout: float = DEFAULT_TIMEOUT_S) -> VideoInfo:
    """`fakelite.data.video_reader.probe_video` in the worker (bounded packet count). Raises BadInput."""
    info = None
    for msg, _ in _run(path, {"op": "probe", "max_frames": max_frames, "max_seconds": max_seconds}, timeout):
        if msg.get("type") == "info":
            info = VideoInfo(**msg["info"])
    if info is None:
        raise BadInput(path, "not a readable video (no answer from the decoder)")
    return info


def read_video_isolated(path: str | os.PathLike, frames: int | None = 32, every: int | None = None,
                        info_out: list | None = None, faces: str | None = None, all_faces: bool = False,
                        max_frames: int | None = None, max_seconds: float | None = None, all_frames: bool = False,
                        timeout: float = DEFAULT_TIMEOUT_S, per_frame_timeout: float | None = None,
                        worker_out: list | None = None) -> Iterator[tuple[int, float, np.ndarray, list | None]]:
    """`fakelite.data.video_reader.read_video` in the worker: yields (index, time s, upright RGB, faces).

    `info_out` receives the final VideoInfo when the video ends. `timeout` bounds the whole file,
    `per_frame_timeout` the wait for each frame (streaming). `worker_out` receives the DecodeWorker (a caller
    on another thread may `kill()` it to stop at once). Raises BadInput (WorkerFailure on crash/hang).
    """
    req = {"op": "video", "frames": frames, "every": every, "faces": faces, "all_faces": all_faces,
           "max_frames": max_frames, "max_seconds": max_seconds, "all_frames": all_frames}
    for msg, arr in _run(path, req, timeout, per_frame_timeout, worker_out):
        if msg.get("type") == "frame" and arr is not None:
            yield int(msg["index"]), float(msg["time"]), arr.copy(), msg.get("faces")
        elif msg.get("type") == "info" and info_out is not None:
            info_out.append(VideoInfo(**msg["info"]))

