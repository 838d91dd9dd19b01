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
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fakelite.data.io import IMAGE_EXTS, VIDEO_EXTS, BadInput, load_rgb

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


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[dict[str, Any]]]:
    """Files to score (folders recursively, media suffixes only, sorted) and error results for bad arguments."""
    files: list[Path] = []
    errors: list[dict[str, Any]] = []
    for p in map(Path, paths):
        if p.is_dir():
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for n in sorted(names):
                    q = Path(root) / n
                    if not n.startswith(".") and q.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS:
                        files.append(q)
        elif not p.exists():
            errors.append(_error(p, "image", "no such file or folder"))
        elif p.suffix.lower() not in IMAGE_EXTS | VIDEO_EXTS:
            errors.append(_error(p, "image", f"unsupported file type {p.suffix or '(none)'!r}"))
        else:
            files.append(p)
    return files, errors


def _error(path: Path, kind: str, msg: str) -> dict[str, Any]:
    return {"path": str(path), "kind": kind, "score": None, "label": None, "faces": [], "frames": [],
            "error": msg}


class _Ctx:
    def __init__(self, detector, faces: str, face_detector: str | Any, face_resize: bool = False):
        if faces not in FACE_MODES:
            raise ValueError(f"faces must be one of {', '.join(FACE_MODES)}, not {faces!r}")
        self.det = detector
        self.faces = faces
        self._fd_spec = face_detector
        self._fd = None if isinstance(face_detector, str) else face_detector
        # False (default): the crop keeps its native pixels and the model's centre crop applies — NPR reads
        # up-sampling traces at native resolution, which down-scaling would erase. True: area-resize the face crop
        # to the model's input side, for models trained on resized face crops (DeepfakeBench-style, RGB models).
        self.face_resize = face_resize

    @property
    def face_detector(self):
        if self._fd is None:
            from fakelite.deploy.faces import make_face_detector

            self._fd = make_face_detector(self._fd_spec)
        return self._fd

    def label(self, score: float | None) -> str | None:
        return None if score is None else ("fake" if score >= self.det.threshold else "real")

    def score_faces(self, rgb: np.ndarray, all_faces: bool) -> list[dict[str, Any]]:
        from fakelite.deploy.faces import crop_face

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
    rgb = load_rgb(path)
    res = {"path": str(path), "kind": "image", "score": None, "label": None, "faces": [], "frames": [], "error": None}
    if ctx.faces != "off":
        res["faces"] = ctx.score_faces(rgb, all_faces)
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
    from fakelite.deploy.video import iter_frames

    res = {"path": str(path), "kind": "video", "score": None, "label": None, "faces": [], "frames": [], "error": None}
    info: list = []
    for idx, t, rgb in iter_frames(path, frames, every, info_out=info):
        fr: dict[str, Any] = {"index": idx, "time": round(t, 4), "score": None, "faces": []}
        if ctx.faces == "off":
            fr["score"] = float(ctx.det.predict_arrays([rgb])[0])
        else:
            fr["faces"] = ctx.score_faces(rgb, all_faces)
            if fr["faces"]:
                fr["score"] = max(f["score"] for f in fr["faces"])
        res["frames"].append(fr)
    vi = info[0]
    res.update(fps=vi.fps, width=vi.width, height=vi.height, frames_sampled=len(res["frames"]),
               truncated=vi.truncated, aggregate=aggregate)
    scored = [f["score"] for f in res["frames"] if f["score"] is not None]
    res["score"] = aggregate_scores(scored, aggregate)
    res["label"] = ctx.label(res["score"])
    res["frames_with_face"] = sum(1 for f in res["frames"] if f["faces"])
    res["input"] = "whole frames" if ctx.faces == "off" else ("faces" if scored else None)  # what was scored
    if res["score"] is None:
        res["note"] = "no face found in any sampled frame"
    elif vi.truncated:
        res["note"] = "video truncated: scored the frames that decode"
    return res


def detect_file(detector, path: str | Path, faces: str = "auto", frames: int = 32, every: int | None = None,
                aggregate: str = "mean", all_faces: bool = False, face_detector: str | Any = "haar",
                face_resize: bool = False, _ctx: _Ctx | None = None) -> dict[str, Any]:
    """One result dict for one image or video (errors become {"error": "file: problem"}, never raise)."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be mean or confident, not {aggregate!r}")
    ctx = _ctx or _Ctx(detector, faces, face_detector, face_resize)
    p = Path(path)
    kind = "video" if p.suffix.lower() in VIDEO_EXTS else "image"
    try:
        if kind == "video":
            return _video_result(ctx, p, frames, every, aggregate, all_faces)
        return _image_result(ctx, p, all_faces)
    except BadInput as e:
        return _error(p, kind, str(e))


def detect_paths(detector, paths: list[str | Path], faces: str = "auto", frames: int = 32,
                 every: int | None = None, aggregate: str = "mean", all_faces: bool = False,
                 face_detector: str | Any = "haar", face_resize: bool = False, quiet: bool = True) -> dict[str, Any]:
    """Score every image/video under `paths` (folders recursively); bad files are reported and counted."""
    from fakelite.progress import progress_bar

    ctx = _Ctx(detector, faces, face_detector, face_resize)
    files, results = expand_paths(paths)
    with progress_bar("detect", len(files), quiet=quiet) as advance:
        for f in files:
            results.append(detect_file(detector, f, faces, frames, every, aggregate, all_faces, _ctx=ctx))
            advance()
    return {"results": results, "skipped": sum(1 for r in results if r["error"]), "model": detector.model_id,
            "threshold": detector.threshold, "faces": faces}


def annotate_video(src: str | Path, result: dict[str, Any], out: str | Path, threshold: float) -> Path:
    """Write `out` (mp4v): every frame with the boxes/scores of the latest sampled frame and the verdict."""
    import cv2

    from fakelite.deploy.video import open_video, video_info

    cap = open_video(src)
    info = video_info(cap)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), info.fps, (info.width, info.height))
    if not writer.isOpened():
        cap.release()
        raise BadInput(out, "cannot write the annotated video (mp4v)")
    frames = {f["index"]: f for f in result.get("frames", [])}
    score = result.get("score")
    verdict = "no face found" if score is None else f"{result['label'].upper()}  {score:.3f}"
    current: dict[str, Any] | None = None
    i = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            current = frames.get(i, current)
            for f in (current or {}).get("faces", []):
                x, y, w, h = f["box"]
                colour = (0, 0, 255) if f["score"] >= threshold else (0, 200, 0)  # BGR: red fake, green real
                cv2.rectangle(frame, (x, y), (x + w, y + h), colour, 2)
                cv2.putText(frame, f"{f['score']:.2f}", (x, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2)
            cv2.putText(frame, verdict, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
            writer.write(frame)
            i += 1
    finally:
        cap.release()
        writer.release()
    return out
