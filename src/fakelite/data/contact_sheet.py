"""A contact sheet of a FaceSynth-style benchmark: real samples next to each generator family's fakes.

It is for eyeballing a build: fakes should look like faces (not blur), and the NPR-residual view
shows the up-sampling trace each family leaves -- the very thing a detector is meant to find.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fakelite.data.io import IMAGE_EXTS, BadInput, load_rgb
from fakelite.data.transforms import npr_image

__all__ = ["contact_sheet", "npr_residual"]


def npr_residual(rgb: np.ndarray) -> np.ndarray:
    """NPR(x) = x - up2_nearest(down2_nearest(x)) of a uint8 RGB image, as float in [-255, 255]."""
    return npr_image(rgb).astype(np.float32)


def _images(folder: Path, n: int) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS) \
        if folder.is_dir() else []
    out = []
    for p in files:
        if len(out) >= n:
            break
        try:
            out.append(load_rgb(p))  # upright (EXIF orientation), any mode → RGB
        except BadInput:
            continue
    return out


def _mean_npr_spectrum(imgs: list[np.ndarray]) -> np.ndarray:
    """Mean log-amplitude spectrum of the grey NPR residuals (centred), scaled to [0, 1]."""
    specs = []
    for im in imgs:
        r = npr_residual(im).mean(axis=2)
        specs.append(np.abs(np.fft.fftshift(np.fft.fft2(r - r.mean()))))
    s = np.log1p(np.mean(specs, axis=0))
    lo, hi = np.percentile(s, 1), np.percentile(s, 99.5)
    return np.clip((s - lo) / max(hi - lo, 1e-6), 0, 1)


def _summary_order(root: Path) -> tuple[list[str], str | None]:
    """Family order and seen family from a FaceSynth ``summary.json``, if there is one."""
    try:
        summary = json.loads((root / "summary.json").read_text())
        return list(summary.get("families", [])), summary.get("seen")
    except (OSError, ValueError, AttributeError):
        return [], None


def _rows(root: Path) -> list[tuple[str, Path]]:
    """(label, folder) rows: test reals first, then every test family's fakes (or train/val fakes)."""
    root = Path(root)
    test = root / "test"
    if test.is_dir():
        fams = sorted(p for p in test.iterdir() if (p / "1_fake").is_dir())
        order, seen = _summary_order(root)
        fams.sort(key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))
        if fams:
            return [("real", fams[0] / "0_real")] + [
                (f"{p.name}\n(seen)" if p.name == seen else p.name, p / "1_fake") for p in fams
            ]
    for split in ("train", "val", ""):
        d = root / split if split else root
        if (d / "0_real").is_dir():
            return [("real", d / "0_real"), ("fake", d / "1_fake")]
    raise FileNotFoundError(f"{root}: no test/<family>/{{0_real,1_fake}} or {{0_real,1_fake}} folders found")


def contact_sheet(root: Path, out_png: Path, per_family: int = 6, npr: bool = True) -> Path:
    """Draw ``per_family`` samples per row -- one row of reals, one per family of fakes -- into ``out_png``.

    With ``npr`` (default) each row also shows |NPR| of its first sample (amplified ×4) and the mean
    NPR spectrum of (up to 64 of) the row's images, where up-sampling artefacts show up as bright peaks.
    The same file numbers are used on every row, so a fake sits under the real it was made from.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(Path(root))
    # the spectrum averages more images than are drawn: one image's spectrum is mostly content
    data = [(label, _images(folder, max(per_family, 64 if npr else 0))) for label, folder in rows]
    data = [(label, imgs) for label, imgs in data if imgs]
    if not data:
        raise FileNotFoundError(f"{root}: no images to draw")
    extra = 2 if npr else 0
    ncols = per_family + extra
    fig, axes = plt.subplots(len(data), ncols, figsize=(1.25 * ncols + 0.9, 1.3 * len(data) + 0.3),
                             squeeze=False)
    for r, (label, imgs) in enumerate(data):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < per_family:
                if c < len(imgs):
                    ax.imshow(imgs[c], interpolation="nearest")
            elif c == per_family:
                res = np.abs(npr_residual(imgs[0])).mean(axis=2)
                ax.imshow(np.clip(res * 4 / 255.0, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(_mean_npr_spectrum(imgs), cmap="magma", interpolation="nearest")
            if r == 0 and c >= per_family:
                ax.set_title("|NPR| ×4" if c == per_family else "NPR spectrum", fontsize=8)
        axes[r][0].set_ylabel(label, fontsize=9, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.3)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
