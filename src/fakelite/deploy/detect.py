"""`fakelite detect`: score images, folders and videos; the JSON of DESIGN.md §3.

{"results": [{"path", "kind": "image"|"video", "score", "label", "faces": [{"box": [x, y, w, h], "score",
 "confidence"}], "frames": [{"index", "time", "score", "faces": [...]}], "error": null|str, "note"?}], "skipped": N}

Faces (`faces=`):
- "off": the whole image / frame goes to the model (its own centre crop).
- "on": only face crops (largest face, or every face with all_faces=True; 1.3× margin); no face → no score.
- "auto" (default): images use faces when found, else the whole image; **videos require faces** — a video frame
  is a scene, and scoring its centre crop would answer a different question than "is this face fake?". A video
  with no face in any sampled frame gets score/label null and a note (never a fake 0.5).
Per frame, the score is the largest face's score (all_faces=True: the maximum over faces). Per video:
"mean" of frame scores (DeepfakeBench), or "confident" (DFDC winner): if more than n/2.5 frames (and more than
11 of 32, scaled) score > 0.8, the mean of those; else if more than 90 % score < 0.2, the mean of those; else
the mean.

Media input (docs/robustness.md, "Media input"): every file is decoded in an isolated worker process
(`deploy/isolated.py`; a crash or hang of native code becomes that file's `error`, within `timeout` seconds), videos
through the frame-exact PyAV reader (`data/video_reader.py`: frames sampled over what the file really holds,
reading on past undecodable frames; per-video counts `frames_total`, `frames_requested`, `frames_decoded`,
`frames_unreadable`, `duration_s`, `header_frames`...), images turned upright by their EXIF orientation. Folders
are walked by `data/walk.py` (symlinked folders followed once); files not read are counted by reason in
`not_read`. With `jsonl=`, each result is appended to a JSON Lines file as soon as it is known; `resume=True`
takes the results already there and scores only the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fakelite.data.io import IMAGE_EXTS, VIDEO_EXTS, BadInput, display_path, load_rgb, reason_category
from fakelite.data.video_reader import probe_video, read_video
from fakelite.data.walk import Walk, walk_files
from fakelite.deploy.faces import Face, crop_face, make_face_detector
from fakelite.deploy.isolated import DEFAULT_TIMEOUT_S, load_image_isolated, read_video_isolated
from fakelite.deploy.resultlog import ResultLog
from fakelite.utils.progress import progress_bar

FACE_MODES = ("auto", "on", "off")
AGGREGATES = ("mean", "confident")


def aggregate_scores(scores: Iterable[float], how: str = "mean") -> float | None:
    """Video score from frame scores ("mean" or DFDC "confident"); None when there is none."""
    s = np.asarray([x for x in scores if x is not None], dtype=np.float64)
    if not len(s):
        return None
    if how == "mean":
        return float(s.mean())
    if how != "confident":
        raise ValueError(f"unknown aggregate {how!r}; choose mean or confident")
    n = len(s)
    hi = s[s > 0.8]
    if len(hi) > n / 2.5 and len(hi) > 11 * n / 32:
        return float(hi.mean())
    lo = s[s < 0.2]
    if len(lo) > 0.9 * n:
        return float(lo.mean())
    return float(s.mean())


def collect_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[dict[str, Any]], Walk]:
    """Files to score, error results for bad arguments, and the folder walk (with what it left out, by reason).

    Folders are walked by `fakelite.data.walk.walk_files` (recursively, symlinked folders followed once, media
    suffixes the installed decoders open); files named on the command line are taken as given.
    """
    files: list[Path] = []
    errors: list[dict[str, Any]] = []
    walk = Walk()
    seen: set = set()
    for p in map(Path, paths):
        if p.is_dir():
            w = walk_files([p], IMAGE_EXTS | VIDEO_EXTS, _seen=seen)
            files += w.files
            walk.extend(Walk(left_out=w.left_out, loops=w.loops))
        elif not p.exists() and not p.is_symlink():
            errors.append(_error(p, "image", "no such file or folder"))
        elif not p.exists():
            errors.append(_error(p, "image", "broken symbolic link"))
        elif p.suffix.lower() not in IMAGE_EXTS | VIDEO_EXTS:
            errors.append(_error(p, "image", f"unsupported file type {p.suffix or '(none)'!r}"))
        else:
            files.append(p)
    return files, errors, walk


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[dict[str, Any]]]:
    """Files to score (folders recursively, media suffixes only, sorted) and error results for bad arguments."""
    files, errors, _ = collect_paths(paths)
    return files, errors


def _error(path: Path, kind: str, msg: str) -> dict[str, Any]:
    if not msg.startswith(display_path(path)):
        msg = f"{display_path(path)}: {msg}"
    return {"path": str(path), "kind": kind, "score": None, "label": None, "faces": [], "frames": [],
            "error": msg}


class _Ctx:
    def __init__(self, detector, faces: str, face_detector: str | Any, face_resize: bool = False,
                 isolate: bool = True, timeout: float | None = None):
        if faces not in FACE_MODES:
            raise ValueError(f"faces must be one of {', '.join(FACE_MODES)}, not {faces!r}")
        self.det = detector
        self.faces = faces
        self.isolate = isolate
        self.timeout = timeout
        self._fd_spec = face_detector
        self._fd = None if isinstance(face_detector, str) else face_detector
        # False (default): the crop keeps its native pixels and the model's centre crop applies — NPR reads
        # up-sampling traces at native resolution, which down-scaling would erase. True: area-resize the face crop
        # to the model's input side, for models trained on resized face crops (DeepfakeBench-style, RGB models).
        self.face_resize = face_resize

    @property
    def face_detector(self):
        if self._fd is None:
            self._fd = make_face_detector(self._fd_spec)
        return self._fd

    @property
    def worker_faces(self) -> str | None:
        """The face-detector name the isolated worker runs (None: faces off, or a detector object given)."""
        if self.faces == "off" or not isinstance(self._fd_spec, str):
            return None
        return self._fd_spec

    def label(self, score: float | None) -> str | None:
        return None if score is None else ("fake" if score >= self.det.threshold else "real")

    def score_faces(self, rgb: np.ndarray, all_faces: bool, found: list | None = None) -> list[dict[str, Any]]:
        """Detect (unless `found`: [x, y, w, h, confidence] lists from the worker), crop and score faces."""
        if found is not None:
            found = [Face(tuple(int(v) for v in f[:4]), float(f[4])) for f in found]
        else:
            found = self.face_detector(rgb)
        if not all_faces:
            found = found[:1]
        crops = [crop_face(rgb, f.box) for f in found]
        if self.face_resize:
            side = int(self.det.preprocess.crop)
            crops = [cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA if min(c.shape[:2]) > side
                                else cv2.INTER_LINEAR) if min(c.shape[:2]) >= 2 else c for c in crops]
        keep = [(f, c) for f, c in zip(found, crops, strict=True) if min(c.shape[:2]) >= 2]
        scores = self.det.predict_arrays([c for _, c in keep]) if keep else []
        return [{"box": list(map(int, f.box)), "score": float(s), "confidence": round(f.confidence, 4)}
                for (f, _), s in zip(keep, scores, strict=True)]


def _image_result(ctx: _Ctx, path: Path, all_faces: bool) -> dict[str, Any]:
    found = None
    if ctx.isolate:
        rgb, found = load_image_isolated(path, ctx.worker_faces, all_faces, ctx.timeout or DEFAULT_TIMEOUT_S)
    else:
        rgb = load_rgb(path)
    res = {"path": str(path), "kind": "image", "score": None, "label": None, "faces": [], "frames": [], "error": None}
    res["width"], res["height"] = int(rgb.shape[1]), int(rgb.shape[0])  # as displayed (EXIF orientation applied)
    if ctx.faces != "off":
        res["faces"] = ctx.score_faces(rgb, all_faces, found)
    if res["faces"]:
        res["score"] = max(f["score"] for f in res["faces"])
        res["input"] = "faces"
    elif ctx.faces == "on":
        res["note"] = "no face found"
    else:
        res["score"] = float(ctx.det.predict_arrays([rgb])[0])
        res["input"] = "whole image"
    res["label"] = ctx.label(res["score"])
    return res


def _video_result(ctx: _Ctx, path: Path, frames: int, every: int | None, aggregate: str,
                  all_faces: bool) -> dict[str, Any]:
    res = {"path": str(path), "kind": "video", "score": None, "label": None, "faces": [], "frames": [], "error": None}
    info: list = []
    if ctx.isolate:
        t = ctx.timeout or DEFAULT_TIMEOUT_S  # without progress (between two sampled frames); 10× in all
        gen = read_video_isolated(path, frames, every, info_out=info, faces=ctx.worker_faces, all_faces=all_faces,
                                  timeout=10 * t, per_frame_timeout=t)
    else:
        gen = ((i, t, rgb, None) for i, t, rgb in read_video(path, frames, every, info_out=info))
    for idx, t, rgb, found in gen:
        fr: dict[str, Any] = {"index": idx, "time": round(t, 4), "score": None, "faces": []}
        if ctx.faces == "off":
            fr["score"] = float(ctx.det.predict_arrays([rgb])[0])
        else:
            fr["faces"] = ctx.score_faces(rgb, all_faces, found)
            if fr["faces"]:
                fr["score"] = max(f["score"] for f in fr["faces"])
        res["frames"].append(fr)
    vi = info[-1]
    res.update(fps=vi.fps, width=vi.width, height=vi.height, frames_sampled=len(res["frames"]),
               truncated=vi.truncated, aggregate=aggregate, frames_total=vi.frames,
               frames_requested=vi.frames_requested, frames_decoded=vi.frames_decoded,
               frames_unreadable=vi.frames_unreadable, frames_substituted=vi.frames_substituted,
               duration_s=vi.duration_s, header_frames=vi.header_frames, header_duration_s=vi.header_duration_s,
               rotation=vi.rotation, codec=vi.codec)
    scored = [f["score"] for f in res["frames"] if f["score"] is not None]
    res["score"] = aggregate_scores(scored, aggregate)
    res["label"] = ctx.label(res["score"])
    res["frames_with_face"] = sum(1 for f in res["frames"] if f["faces"])
    res["input"] = "whole frames" if ctx.faces == "off" else ("faces" if scored else None)  # what was scored
    if res["score"] is None:
        res["note"] = "no face found in any sampled frame"
    elif vi.truncated:
        res["note"] = (f"video shorter than its header says ({vi.header_frames} frames claimed, {vi.frames} in the "
                       "file): sampled over the frames it holds" if vi.header_frames and vi.header_frames > vi.frames
                       else "video truncated: scored the frames that decode")
    elif vi.frames_unreadable:
        res["note"] = f"{vi.frames_unreadable} of {vi.frames} frame(s) could not be decoded: read on past them"
    return res


def detect_file(detector, path: str | Path, faces: str = "auto", frames: int = 32, every: int | None = None,
                aggregate: str = "mean", all_faces: bool = False, face_detector: str | Any = "haar",
                face_resize: bool = False, _ctx: _Ctx | None = None, isolate: bool = True,
                timeout: float | None = None) -> dict[str, Any]:
    """One result dict for one image or video (errors become {"error": "file: problem"}, never raise).

    `isolate` (default): decode (and find faces) in the worker process, so a native crash or hang costs this
    file only; `timeout`: its time limit in s (default `deploy.isolated.DEFAULT_TIMEOUT_S`); for a video, the
    longest wait without progress (until its next sampled frame), and 10× that in all.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be mean or confident, not {aggregate!r}")
    ctx = _ctx or _Ctx(detector, faces, face_detector, face_resize, isolate, timeout)
    p = Path(path)
    kind = "video" if p.suffix.lower() in VIDEO_EXTS else "image"
    try:
        if kind == "video":
            return _video_result(ctx, p, frames, every, aggregate, all_faces)
        return _image_result(ctx, p, all_faces)
    except BadInput as e:
        out = _error(p, kind, str(e))
        out["error_reason"] = reason_category(e.reason)
        return out


def detect_paths(detector, paths: list[str | Path], faces: str = "auto", frames: int = 32,
                 every: int | None = None, aggregate: str = "mean", all_faces: bool = False,
                 face_detector: str | Any = "haar", face_resize: bool = False, quiet: bool = True,
                 jsonl: str | Path | None = None, resume: bool = False, isolate: bool = True,
                 timeout: float | None = None) -> dict[str, Any]:
    """Score every image/video under `paths` (folders recursively); bad files are reported and counted.

    `jsonl`: append each result to this JSON Lines file as soon as it is known (a killed run loses nothing it
    finished). `resume`: take the results already in `jsonl` and score only the files not there yet.
    Returns the DESIGN.md §3 detect JSON plus `not_read` ({reason: count} of every file not scored: the walk's
    left-outs and the error results), `not_read_files` ([{"path", "reason"}] of the walk's), `resumed` (results
    taken from `jsonl`) and `files` (results + walk left-outs: every file accounted for).
    """
    ctx = _Ctx(detector, faces, face_detector, face_resize, isolate, timeout)
    files, results, walk = collect_paths(paths)
    log = ResultLog(jsonl, resume) if jsonl is not None else None
    done = log.done if log is not None else {}
    resumed = 0
    try:
        for r in results:
            if log is not None:
                log.write(r)
        with progress_bar("detect", len(files), quiet=quiet) as advance:
            for f in files:
                if str(f) in done:
                    results.append(done[str(f)])
                    resumed += 1
                else:
                    r = detect_file(detector, f, faces, frames, every, aggregate, all_faces, _ctx=ctx)
                    results.append(r)
                    if log is not None:
                        log.write(r)
                advance()
    finally:
        if log is not None:
            log.close()
    not_read = dict(walk.not_read)
    for r in results:
        if r.get("error"):
            why = r.get("error_reason") or reason_category(r["error"].split(": ", 1)[-1])
            not_read[why] = not_read.get(why, 0) + 1
    return {"results": results, "skipped": sum(1 for r in results if r["error"]), "model": detector.model_id,
            "threshold": detector.threshold, "faces": faces, "not_read": not_read,
            "not_read_files": [{"path": p, "reason": why} for p, why in walk.left_out],
            "symlink_loops": walk.loops, "files": len(results) + len(walk.left_out), "resumed": resumed}


def annotate_video(src: str | Path, result: dict[str, Any], out: str | Path, threshold: float) -> Path:
    """Write `out` (mp4v): every frame (upright) with the boxes/scores of the latest sampled frame and the verdict."""
    import cv2

    info = probe_video(src)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = {f["index"]: f for f in result.get("frames", [])}
    score = result.get("score")
    verdict = "no face found" if score is None else f"{result['label'].upper()}  {score:.3f}"
    current: dict[str, Any] | None = None
    writer = None
    try:
        for i, _, rgb in read_video(src, all_frames=True):
            frame = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), info.fps, (w, h))
                if not writer.isOpened():
                    raise BadInput(out, "cannot write the annotated video (mp4v)")
            current = frames.get(i, current)
            for f in (current or {}).get("faces", []):
                x, y, w, h = f["box"]
                colour = (0, 0, 255) if f["score"] >= threshold else (0, 200, 0)  # BGR: red fake, green real
                cv2.rectangle(frame, (x, y), (x + w, y + h), colour, 2)
                cv2.putText(frame, f"{f['score']:.2f}", (x, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2)
            cv2.putText(frame, verdict, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
            writer.write(frame)
    finally:
        if writer is not None:
            writer.release()
    return out
