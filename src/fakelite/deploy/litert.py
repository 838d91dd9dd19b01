"""LiteRT (.tflite): the interpreter (ai-edge-litert, optional extra `fakelite[litert]`) and export.

Export status (details and the exact attempts in docs/deploy.md): no PyTorch/ONNX → .tflite converter installs
next to torch 2.13 CPU here without pulling a second framework stack — `litert-torch` needs jax, transformers
and torchao; `onnx2tf` needs TensorFlow 2.19 and downgrades numpy/onnx/onnxruntime. `export_tflite` therefore
uses `litert_torch` when the user has installed it themselves and otherwise raises LiteRTUnavailable with the
instructions. The Detector runs any .tflite that has its header sidecar (`<file>.json`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


class LiteRTUnavailable(RuntimeError):
    """The optional LiteRT interpreter/converter is not installed."""


def open_interpreter(path: str | Path, threads: int | None = None):
    """An allocated ai_edge_litert Interpreter for a .tflite file."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise LiteRTUnavailable("LiteRT is not installed: pip install 'fakelite[litert]' (ai-edge-litert)") from None
    try:
        interp = Interpreter(model_path=str(path), num_threads=threads or 1)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        from fakelite.artifact import ArtifactError

        raise ArtifactError(f"{path}: LiteRT cannot load it ({str(e).splitlines()[0][:120]})") from None
    return interp


def sidecar_path(path: str | Path) -> Path:
    return Path(str(path) + ".json")


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    p = sidecar_path(path)
    if not p.is_file():
        return None
    return json.loads(p.read_text())


def export_tflite(model, path: str | Path, int8: bool = False, calib: np.ndarray | None = None) -> Path:
    """Convert a fakelite model to .tflite with litert-torch (if installed) and write the header sidecar."""
    try:
        import litert_torch  # type: ignore[import-not-found]
    except ImportError:
        raise LiteRTUnavailable(
            "TFLite export needs litert-torch, which is not a fakelite dependency (it pulls jax, transformers and "
            "torchao). Install it in a separate environment (pip install litert-torch) or export ONNX instead; "
            "see docs/deploy.md 'LiteRT status'") from None
    import torch

    from fakelite.deploy.onnx import _folded_copy, export_header

    path = Path(path)
    m = _folded_copy(model)
    size = model.preprocess.crop
    edge = litert_torch.convert(m, (torch.zeros(1, 3, size, size),))
    edge.export(str(path))
    header = export_header(model, "tflite-int8" if int8 else "tflite-fp32")
    header["export"]["format"] = "tflite"
    sidecar_path(path).write_text(json.dumps(header))
    return path
