"""A corpus of bad user files, written into a folder, for every entry point that reads user files.

`make_corpus(dir)` writes the files and returns `{name: BadFile}`; each entry says what it is and whether it is
*expected to be refused* (`bad=True`) or is an odd-but-valid image that must decode (`bad=False`, e.g. CMYK JPEG,
16-bit PNG, palette PNG with transparency, animated GIF → first frame).

Run as a script to write the corpus somewhere for manual poking:  python tests/badinputs.py /tmp/bad
"""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class BadFile:
    path: Path
    kind: str  # "image" | "video" | "other"
    bad: bool  # True: must be refused with a one-line message; False: odd but valid, must decode
    note: str


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png_header(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose IHDR (valid CRC) claims width×height RGB pixels, with one tiny IDAT: a decompression bomb
    as far as the header is concerned."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _img(seed: int = 0, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _png_bytes(arr: np.ndarray | Image.Image, **kw) -> bytes:
    im = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def small_mp4(path: Path, frames: int = 12, size: int = 64) -> bool:
    """Write a real little mp4 with OpenCV; False if no mp4 encoder is available."""
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size, size))
    if not w.isOpened():
        return False
    rng = np.random.default_rng(1)
    for _ in range(frames):
        w.write(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    w.release()
    return path.exists() and path.stat().st_size > 0


def make_corpus(d: str | os.PathLike, *, unreadable: bool = True) -> dict[str, BadFile]:
    """Write the bad-input corpus into `d` (created) and return its entries by name."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, BadFile] = {}

    def put(name: str, data: bytes, kind: str, bad: bool, note: str) -> None:
        p = d / name
        p.write_bytes(data)
        out[name] = BadFile(p, kind, bad, note)

    good_png = _png_bytes(_img(0))
    put("zero_bytes.png", b"", "image", True, "empty file")
    put("truncated.png", good_png[: len(good_png) // 2], "image", True, "PNG cut in half")
    jbuf = io.BytesIO()
    Image.fromarray(_img(1)).save(jbuf, format="JPEG", quality=90)
    put("truncated.jpg", jbuf.getvalue()[: len(jbuf.getvalue()) // 2], "image", True, "JPEG cut in half")
    put("text_as.png", b"this is not an image\n" * 10, "image", True, "text file with an image extension")
    put("wrong_ext_png_as.jpg", good_png, "image", False, "a PNG named .jpg (content decides: valid)")
    cbuf = io.BytesIO()
    Image.fromarray(_img(2)).convert("CMYK").save(cbuf, format="JPEG", quality=90)
    put("cmyk.jpg", cbuf.getvalue(), "image", False, "CMYK JPEG → RGB")
    a16 = (np.random.default_rng(3).integers(0, 65536, (32, 32))).astype(np.uint16)
    put("gray16.png", _png_bytes(Image.fromarray(a16)), "image", False, "16-bit greyscale PNG")
    import cv2

    rgb16 = np.random.default_rng(5).integers(0, 65536, (32, 32, 3)).astype(np.uint16)
    put("rgb16.png", cv2.imencode(".png", rgb16)[1].tobytes(), "image", False, "16-bit RGB PNG")
    put("one_pixel.png", _png_bytes(np.zeros((1, 1, 3), np.uint8)), "image", True, "1×1 image")
    pal = Image.fromarray(_img(4)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    put("palette_transparent.png", _png_bytes(pal, transparency=0), "image", False, "palette PNG with transparency")
    put("huge_header.png", huge_png_header(), "image", True, "IHDR claims 30000×30000 (bomb guard)")
    gbuf = io.BytesIO()
    frames = [Image.fromarray(_img(10 + i)).convert("P") for i in range(3)]
    frames[0].save(gbuf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    put("animated.gif", gbuf.getvalue(), "image", False, "animated GIF → first frame")
    put("text_as.mp4", b"not a video at all\n" * 20, "video", True, "text file named .mp4")

    mp4 = d / "truncated.mp4"
    if small_mp4(mp4):
        data = mp4.read_bytes()
        mp4.write_bytes(data[: len(data) // 3])
        out["truncated.mp4"] = BadFile(mp4, "video", True, "real mp4 cut to a third")

    link = d / "broken_link.png"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(d / "does_not_exist.png")
    out["broken_link.png"] = BadFile(link, "image", True, "symlink to a missing file")

    if unreadable:
        p = d / "unreadable.png"
        p.write_bytes(good_png)
        os.chmod(p, 0)
        # as root, chmod 000 does not stop reads: then the file is readable and valid
        out["unreadable.png"] = BadFile(p, "image", not running_as_root(),
                                        "chmod 000" + (" (root: permissions do not apply)" if running_as_root() else ""))
    return out


def bad_images(corpus: dict[str, BadFile]) -> list[BadFile]:
    return [f for f in corpus.values() if f.kind == "image" and f.bad]


def odd_but_valid_images(corpus: dict[str, BadFile]) -> list[BadFile]:
    return [f for f in corpus.values() if f.kind == "image" and not f.bad]


def restore_permissions(corpus: dict[str, BadFile]) -> None:
    """Let pytest's tmp cleanup remove the chmod-000 file."""
    f = corpus.get("unreadable.png")
    if f is not None and f.path.exists():
        os.chmod(f.path, 0o644)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "badinputs")
    for name, f in make_corpus(target).items():
        print(f"{'BAD ' if f.bad else 'ODD '} {name:28s} {f.note}")
