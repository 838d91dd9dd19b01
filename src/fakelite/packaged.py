"""Packaged models: `default`, `default-w4a4`, `default-w2a2` name .fakelite files shipped in fakelite/weights/.

`resolve_model("default")` → the packaged file's path; any other argument (a path) is returned unchanged, so a
file that happens to be called `default` in the working folder still wins. The folder can be moved with the
environment variable FAKELITE_WEIGHTS_DIR (tests, or weights kept outside the installed package). A packaged name
whose file is not installed raises ArtifactError with one line that says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fakelite.artifact import ArtifactError, read

PACKAGED = ("default", "default-w4a4", "default-w2a2")
WEIGHTS_ENV = "FAKELITE_WEIGHTS_DIR"
# what each name is meant to hold (docs/models.md has the model cards)
ROLE = {"default": "npr_resnet23 FP32", "default-w4a4": "npr_resnet23 W4A4 (LSQ)",
        "default-w2a2": "npr_resnet23 W2A2 (QMDD: NPR + CQB + SLR)"}


def weights_dir() -> Path:
    """Folder of the packaged .fakelite files: $FAKELITE_WEIGHTS_DIR, else the package's `weights/`."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env else Path(__file__).resolve().parent / "weights"


def packaged_path(name: str) -> Path:
    """Where the packaged model `name` lives (whether or not it is installed). KeyError for an unknown name."""
    if name not in PACKAGED:
        raise KeyError(f"unknown packaged model {name!r}; choose one of {', '.join(PACKAGED)}")
    return weights_dir() / f"{name}.fakelite"


def is_packaged_name(model: str | os.PathLike) -> bool:
    """True for a packaged model's name given as such (not an existing file of that name)."""
    return str(model) in PACKAGED and not Path(model).exists()


def resolve_model(model: str | os.PathLike) -> Path:
    """A model argument (path or packaged name) → the file to open.

    Raises ArtifactError ("packaged model 'default' is not installed (expected …)") for a packaged name whose file
    is missing."""
    if not is_packaged_name(model):
        return Path(model)
    p = packaged_path(str(model))
    if not p.is_file():
        raise ArtifactError(f"packaged model {str(model)!r} is not installed (expected {p}); pass --model PATH to a "
                            f".fakelite/.onnx/.tflite file, or install the weights there")
    return p


def _bits(header: dict[str, Any]) -> str:
    cfg = (header.get("quant") or {}).get("config") or {}
    return f"W{cfg.get('w_bits')}A{cfg.get('a_bits')}" if cfg else "FP32"


def describe(header: dict[str, Any]) -> str:
    """A short description from the header: provenance/card "description" or "card", else the recipe."""
    prov = header.get("provenance") or {}
    card = prov.get("card") if isinstance(prov.get("card"), dict) else {}
    for text in (prov.get("description"), card.get("description"), prov.get("card") if isinstance(
            prov.get("card"), str) else None, (header.get("extra") or {}).get("description")):
        if text:
            return str(text).splitlines()[0][:100]
    bits = [f"{k} {prov[k]}" for k in ("data", "recipe", "epochs") if prov.get(k)]
    return "; ".join(map(str, bits))[:100]


def packaged_models() -> list[dict[str, Any]]:
    """One row per packaged name: name, path, installed, and when installed: arch, bits, bytes, threshold,
    threshold_source, policy, description (an unreadable file: installed False and `error`)."""
    rows = []
    for name in PACKAGED:
        p = packaged_path(name)
        row: dict[str, Any] = {"name": name, "path": str(p), "installed": p.is_file(), "role": ROLE[name]}
        if row["installed"]:
            try:
                header, _ = read(p)
            except ArtifactError as e:
                row.update(installed=False, error=str(e))
            else:
                row.update(arch=header["arch"]["name"], bits=_bits(header), bytes=p.stat().st_size,
                           threshold=header.get("threshold"), threshold_source=header.get("threshold_source"),
                           policy=(header.get("preprocess") or {}).get("policy", "center"),
                           description=describe(header))
        rows.append(row)
    return rows
