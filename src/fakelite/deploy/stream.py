"""`fakelite stream`: capture → face → score in real time, dropping frames it cannot process in time.

Video files are decoded by the frame-exact PyAV reader in the isolated worker (`deploy/isolated.py`): frames the
decoder rejects are skipped and counted (`frames_unreadable`), a crash or hang of the decoder ends the stream with
an `error` in the summary instead of killing the process, and any file name works. Cameras and URLs use OpenCV.
A grabber thread reads the source continuously and keeps only the latest frame; the main loop takes whatever is
newest, so latency stays bounded when scoring is slower than the source (the dropped count says how many frames
were skipped). Files are read at their native rate (the grabber sleeps 1/fps per frame) unless `realtime=False`,
in which case every frame is processed (useful for offline logs). Shows FPS and per-stage latency in a window
(if a display exists and --no-display is not given) and writes a JSON log.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from fakelite.data.io import BadInput, display_path
from fakelite.deploy.faces import crop_face, make_face_detector
from fakelite.deploy.isolated import FRAME_TIMEOUT_S, probe_video_isolated, read_video_isolated
from fakelite.deploy.signals import stop_on_signals


class LatestFrame:
    """Grabber thread holding only the most recent frame of a cv2.VideoCapture source."""

    def __init__(self, source: str | int, realtime: bool = True):
        # a regular file goes to the PyAV reader in the isolated worker; cameras, devices and URLs to OpenCV
        self.is_file = isinstance(source, str | Path) and os.path.isfile(source)
        if isinstance(source, str | Path) and not self.is_file:
            try:
                os.fsdecode(source).encode("utf-8")
            except UnicodeEncodeError:  # never hand OpenCV a name that is not UTF-8 (it crashes on it)
                raise RuntimeError(f"{display_path(source)}: no such file") from None
        self.cap = None
        self.error: str | None = None
        self.info: list = []
        self._worker: list = []
        if self.is_file:
            try:
                fps = probe_video_isolated(source).fps
            except BadInput as e:
                raise RuntimeError(str(e)) from None
            self._frames = read_video_isolated(source, all_frames=True, info_out=self.info, timeout=float("inf"),
                                               per_frame_timeout=FRAME_TIMEOUT_S, worker_out=self._worker)
        else:
            import cv2

            self.cap = cv2.VideoCapture(str(source) if isinstance(source, Path) else source)
            if not self.cap.isOpened():
                raise RuntimeError(f"{source}: cannot open the video source")
            fps = self.cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.period = 1.0 / fps if self.is_file and realtime and fps > 0 else 0.0
        self.realtime = realtime
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._index = -1
        self.grabbed = 0
        self.finished = False
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        t_next = time.perf_counter()
        while not self._stop:
            ok, frame = self._read()
            if not ok:
                break
            with self._cond:
                if not self.realtime:  # offline: wait until the consumer took the previous frame
                    while self._frame is not None and not self._stop:
                        self._cond.wait(0.05)
                self._frame, self._index = frame, self.grabbed
                self.grabbed += 1
                self._cond.notify_all()
            if self.period:
                t_next += self.period
                time.sleep(max(0.0, t_next - time.perf_counter()))
        if self.cap is None:
            self._frames.close()  # stops the decode worker if the stream ended early
        with self._cond:
            self.finished = True
            self._cond.notify_all()

    def _read(self) -> tuple[bool, np.ndarray | None]:
        if self.cap is not None:
            return self.cap.read()
        try:
            _, _, rgb, _ = next(self._frames)
        except StopIteration:
            return False, None
        except BadInput as e:  # the decoder crashed or hung on this file: end the stream, say why
            self.error = str(e)
            return False, None
        return True, np.ascontiguousarray(rgb[..., ::-1])  # RGB → BGR, as OpenCV sources give

    def take(self, timeout: float = 5.0) -> tuple[int, np.ndarray] | None:
        """The newest frame not yet taken (index, BGR), or None when the source ended."""
        with self._cond:
            end = time.perf_counter() + timeout
            while self._frame is None and not self.finished:
                if not self._cond.wait(max(0.0, end - time.perf_counter())):
                    return None
            if self._frame is None:
                return None
            f, i = self._frame, self._index
            self._frame = None
            self._cond.notify_all()
            return i, f

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        if self.cap is not None:
            self.cap.release()
        elif self._thread.is_alive():  # blocked waiting on the decode worker: stop it
            for w in self._worker:
                w.kill()


def run_stream(detector, source: str | int, display: bool = True, json_log: Path | None = None,
               max_frames: int | None = None, face_detector: str = "haar", realtime: bool = True,
               on_frame: Any = None) -> dict[str, Any]:
    """Run the loop until the source ends (or max_frames processed / 'q' pressed / SIGINT or SIGTERM received);
    returns the summary (and writes `json_log`) in every one of those cases. summary["stopped_by"] names the
    signal that ended the loop (None otherwise)."""
    with stop_on_signals() as stop:
        return _run_stream(detector, source, display, json_log, max_frames, face_detector, realtime, on_frame, stop)


def _run_stream(detector, source, display, json_log, max_frames, face_detector, realtime, on_frame,
                stop) -> dict[str, Any]:
    import cv2

    fd = make_face_detector(face_detector)
    grab = LatestFrame(source, realtime=realtime)
    show = display
    log: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    stages = {"face_ms": [], "score_ms": [], "total_ms": []}
    try:
        while (max_frames is None or len(log) < max_frames) and not stop.is_set():
            item = grab.take()
            if item is None or stop.is_set():
                break
            idx, bgr = item
            t0 = time.perf_counter()
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            faces = fd(rgb)[:1]
            t1 = time.perf_counter()
            scores = detector.predict_arrays([crop_face(rgb, f.box) for f in faces]) if faces else []
            t2 = time.perf_counter()
            rec = {"index": idx, "time": round(t2 - t_start, 4),
                   "faces": [{"box": list(map(int, f.box)), "score": float(s)} for f, s in zip(faces, scores, strict=True)],
                   "face_ms": round((t1 - t0) * 1e3, 2), "score_ms": round((t2 - t1) * 1e3, 2),
                   "total_ms": round((t2 - t0) * 1e3, 2)}
            for k in stages:
                stages[k].append(rec[k])
            log.append(rec)
            if on_frame is not None:
                on_frame(rec)
            if show:
                try:
                    fps = len(log) / max(1e-9, time.perf_counter() - t_start)
                    for f in rec["faces"]:
                        x, y, w, h = f["box"]
                        colour = (0, 0, 255) if f["score"] >= detector.threshold else (0, 200, 0)
                        cv2.rectangle(bgr, (x, y), (x + w, y + h), colour, 2)
                        cv2.putText(bgr, f"{f['score']:.2f}", (x, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                                    colour, 2)
                    cv2.putText(bgr, f"{fps:.1f} fps  face {rec['face_ms']:.0f} ms  score {rec['score_ms']:.0f} ms",
                                (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
                    cv2.imshow("fakelite", bgr)
                    if cv2.waitKey(1) & 0xFF == ord("q"):
                        break
                except cv2.error:  # headless OpenCV build / no display: keep going without a window
                    show = False
    finally:
        grab.close()
        if display and show:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
    wall = time.perf_counter() - t_start
    summary = {
        "source": str(source), "model": detector.model_id, "processed": len(log), "grabbed": grab.grabbed,
        "dropped": max(0, grab.grabbed - len(log)), "wall_s": round(wall, 3),
        "fps": round(len(log) / wall, 2) if wall > 0 else 0.0,
        "latency_ms": {k: {"median": round(float(np.median(v)), 2), "p90": round(float(np.percentile(v, 90)), 2)}
                       for k, v in stages.items() if v},
        "frames": log, "stopped_by": stop.signal_name,
    }
    if grab.is_file:
        vi = grab.info[-1] if grab.info else None
        summary.update(error=grab.error, frames_total=vi.frames if vi else None,
                       frames_unreadable=vi.frames_unreadable if vi else None)
    if json_log is not None:
        Path(json_log).parent.mkdir(parents=True, exist_ok=True)
        Path(json_log).write_text(json.dumps(summary, indent=1))
    return summary
