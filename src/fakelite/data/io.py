"""Robust image decoding: every mode becomes 8-bit RGB; bad files raise BadInput with a one-line reason.

Pillow's decompression-bomb guard stays on (and its warning is promoted to an error), so a header that claims
30000×30000 pixels is refused before the pixels are decoded.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
MAX_PIXELS = 40_000_000  # larger than any photo a detector needs; the guard Pillow enforces below 2× this

ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadInput(ValueError):
    """A user file that cannot be used. str() is one line naming the file and the problem."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))  # composite on white, as browsers show it
        img = Image.alpha_composite(bg, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode image bytes to an (H, W, 3) uint8 RGB array (first frame of animations)."""
    if not data:
        raise BadInput(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise BadInput(name, f"image too large ({w}×{h} pixels; limit {MAX_PIXELS:,})")
                if w < 2 or h < 2:
                    raise BadInput(name, f"image too small ({w}×{h} pixels)")
                img.seek(0)
                img.load()
                return _to_rgb(img)
    except BadInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInput(name, "image too large (decompression-bomb guard)") from None
    except UnidentifiedImageError:
        raise BadInput(name, "not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadInput(name, f"corrupt or truncated image ({msg[:100]})") from None


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, or raise BadInput naming the file."""
    p = Path(path)
    try:
        if p.is_symlink() and not p.exists():
            raise BadInput(p, "broken symbolic link")
        data = p.read_bytes()
    except BadInput:
        raise
    except FileNotFoundError:
        raise BadInput(p, "no such file") from None
    except IsADirectoryError:
        raise BadInput(p, "is a directory, not an image") from None
    except PermissionError:
        raise BadInput(p, "permission denied") from None
    except OSError as e:
        raise BadInput(p, f"cannot read ({e.strerror})") from None
    return decode_image(data, str(p))


def is_image_path(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTS


def is_video_path(p: Path) -> bool:
    return p.suffix.lower() in VIDEO_EXTS
