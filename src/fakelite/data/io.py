"""Robust image decoding: every mode becomes 8-bit RGB; bad files raise BadInput with a one-line reason.

Pillow's decompression-bomb guard stays on (and its warning is promoted to an error), so a header that claims
30000×30000 pixels is refused before the pixels are decoded. EXIF orientation is applied (PIL.ImageOps.exif_transpose),
so every consumer (training, eval, detect, serve, robustness) sees the picture the way a viewer shows it.

`IMAGE_EXTS` is decided by what the installed decoders open: Pillow's plugins whose codec is present (WebP, AVIF,
JPEG 2000 are feature checks) plus HEIC/HEIF through pillow-heif when it is installed (its opener is registered on
first use).
"""

from __future__ import annotations

import importlib.util
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# photo formats worth reading, with the Pillow feature their decoder needs (None: built in)
_CANDIDATE_EXTS = {
    ".png": None, ".apng": None, ".jpg": "jpg", ".jpeg": "jpg", ".jpe": "jpg", ".jfif": "jpg", ".mpo": "jpg",
    ".bmp": None, ".dib": None, ".gif": None, ".tif": None, ".tiff": None, ".ppm": None, ".pgm": None,
    ".pbm": None, ".pnm": None, ".tga": None, ".qoi": None, ".webp": "webp", ".avif": "avif",
    ".jp2": "jpg_2000", ".j2k": "jpg_2000", ".jpx": "jpg_2000",
}
HEIF_EXTS = {".heic", ".heif", ".hif"}


def _supported_image_exts() -> set[str]:
    from PIL import features

    known = Image.registered_extensions()
    out = set()
    for ext, feature in _CANDIDATE_EXTS.items():
        if ext not in known or known[ext] not in Image.OPEN:
            continue
        try:
            ok = feature is None or bool(features.check(feature))
        except (ValueError, ImportError):
            ok = False
        if ok:
            out.add(ext)
    if importlib.util.find_spec("pillow_heif") is not None:
        out |= HEIF_EXTS
    return out


IMAGE_EXTS = _supported_image_exts()
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
_heif_registered = False


def register_heif() -> bool:
    """Register pillow-heif's HEIC/HEIF opener with Pillow (once); False when pillow-heif is not installed."""
    global _heif_registered
    if not _heif_registered:
        try:
            import pillow_heif
        except ImportError:
            return False
        pillow_heif.register_heif_opener()
        _heif_registered = True
    return True


def reason_category(reason: str) -> str:
    """The reason class of a BadInput reason, for counts by reason: "too large", "not an image",
    "unsupported type" or "unreadable" (missing, permission, corrupt, truncated, empty, too small...)."""
    r = reason.lower()
    if "too large" in r or "too many" in r or "too long" in r:
        return "too large"
    if "not an image" in r or "unrecognised" in r or "not a readable video" in r:
        return "not an image"
    if "unsupported" in r:
        return "unsupported type"
    return "unreadable"


def display_path(path: str | os.PathLike) -> str:
    """`path` as printable text: bytes that are not valid UTF-8 (kept by Python as surrogate escapes) are shown
    as \\xNN, so a name from an old zip or FTP drop can be printed and logged."""
    s = os.fspath(path)
    if isinstance(s, bytes):
        return s.decode("utf-8", "backslashreplace")
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return os.fsencode(s).decode("utf-8", "backslashreplace")
MAX_IMAGE_BYTES = 256 * 1024 * 1024  # an image file larger than this is refused before it is read ("too large")
MAX_PIXELS = 40_000_000  # larger than any photo a detector needs; the guard Pillow enforces below 2× this

ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadInput(ValueError):
    """A user file that cannot be used. str() is one line naming the file and the problem."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{display_path(path)}: {reason}")

    @property
    def category(self) -> str:
        """"too large", "not an image", "unsupported type" or "unreadable" (see `reason_category`)."""
        return reason_category(self.reason)


def to_rgb(img: Image.Image) -> np.ndarray:
    """An HxWx3 uint8 RGB array of a PIL image of any mode: 16/32-bit greys scaled to 0–255, float greys in [0, 1]
    scaled by 255, transparent images composited on white."""
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


def exif_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of `img` as displayed: swapped when the EXIF orientation (5–8) turns it by 90°."""
    w, h = img.size
    try:
        o = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: the stored size
        o = 1
    return (h, w) if o in (5, 6, 7, 8) else (w, h)


def _exif_transpose(img: Image.Image) -> Image.Image:
    try:
        out = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost the picture
        return img
    return img if out is None else out


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode image bytes to an (H, W, 3) uint8 RGB array (first frame of animations), turned upright by its
    EXIF orientation tag (the displayed orientation; JEITA CP-3451 tag 0x0112)."""
    if not data:
        raise BadInput(name, "empty file (0 bytes)")
    register_heif()
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
                return to_rgb(_exif_transpose(img))
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
        if p.exists() and not p.is_dir() and not p.is_file():  # a FIFO or device would block or never end
            raise BadInput(p, "not a regular file")
        with open(p, "rb") as f:  # a Python file object: any file name works, valid UTF-8 or not
            size = os.fstat(f.fileno()).st_size
            if size > MAX_IMAGE_BYTES:
                raise BadInput(p, f"file too large ({size:,} bytes; limit {MAX_IMAGE_BYTES:,})")
            data = f.read()
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
