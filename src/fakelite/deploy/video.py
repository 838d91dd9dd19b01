"""Frame sampling with OpenCV: N evenly spaced frames (DeepfakeBench/DFDC use 32) or every k-th frame.

Unreadable, empty and truncated videos raise BadInput with one line naming the file. A truncated file
(frame count in the header larger than what decodes) yields the frames that do decode, as long as at least one
does; `VideoInfo.truncated` says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fakelite.data.io import BadInput


@dataclass
class VideoInfo:
    frames: int  # as the container claims (may be 0/unknown for some streams)
    fps: float
    width: int
    height: int
    truncated: bool = False


def open_video(path: str | Path):
    import cv2

    p = Path(path)
    if not p.is_file():
        raise BadInput(p, "no such file")
    if p.stat().st_size == 0:
        raise BadInput(p, "empty file (0 bytes)")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise BadInput(p, "not a readable video (OpenCV/FFmpeg cannot open it)")
    return cap


def video_info(cap) -> VideoInfo:
    import cv2

    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return VideoInfo(max(0, n), fps if np.isfinite(fps) and fps > 0 else 25.0, int(cap.get(3)), int(cap.get(4)))


def sample_indices(n_frames: int, frames: int | None = 32, every: int | None = None) -> list[int]:
    """Indices to decode: every k-th frame (if `every`), else `frames` evenly spaced (all if fewer)."""
    if n_frames <= 0:
        return []
    if every:
        return list(range(0, n_frames, max(1, int(every))))
    k = max(1, int(frames or 32))
    if n_frames <= k:
        return list(range(n_frames))
    return sorted({int(round(i)) for i in np.linspace(0, n_frames - 1, k)})


def iter_frames(path: str | Path, frames: int | None = 32, every: int | None = None,
                info_out: list | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (index, time in s, RGB uint8 frame) for the sampled frames; BadInput if none decodes.

    Decodes sequentially (grab() skips without decoding the pixels), which is robust to broken seeking.
    """
    import cv2

    cap = open_video(path)
    try:
        info = video_info(cap)
        if info_out is not None:
            info_out.append(info)
        wanted = sample_indices(info.frames, frames, every) if info.frames > 0 else None
        want = set(wanted) if wanted is not None else None
        last = max(wanted) if wanted else None
        got = 0
        i = 0
        while True:
            if last is not None and i > last:
                break
            take = want is None and (not every or i % max(1, int(every)) == 0) or (want is not None and i in want)
            if take:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                got += 1
                yield i, i / info.fps, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            else:
                if not cap.grab():
                    break
            i += 1
            if want is None and not every and got >= (frames or 32):
                break
        if wanted and got < len(wanted):
            info.truncated = True
        if got == 0:
            raise BadInput(path, "corrupt or truncated video (no frame could be decoded)")
    finally:
        cap.release()
