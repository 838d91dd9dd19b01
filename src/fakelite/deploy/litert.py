"""LiteRT (.tflite) at run time: the interpreter (ai-edge-litert, extra `fakelite[litert]`) and the header sidecar.

Export is `fakelite.deploy.litert_export` (extra `fakelite[tflite]`). This module stays light (no torch): the
isolated decode workers (`fakelite.deploy.isolated`) open the face detector's .tflite through it.
The header travels in a sidecar `<file>.json` (`Detector.load(x.tflite)` reads it).
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
        # lazy: fakelite.artifact loads torch, which the decode workers (faces → here) never need
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


def run_tflite(path: str | Path, inputs: np.ndarray, threads: int = 1) -> np.ndarray:
    """Logits (float64, one per image) of a .tflite on (N, 3, H, W) float inputs, one image per invoke;
    quantized inputs/outputs are (de)quantized with the tensors' own parameters."""
    interp = open_interpreter(path, threads)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    res = []
    for i in range(len(inputs)):
        xi = np.asarray(inputs[i : i + 1], dtype=np.float32)
        if inp["dtype"] != np.float32:
            s, z = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            xi = np.clip(np.round(xi / s + z), info.min, info.max)
        interp.set_tensor(inp["index"], xi.astype(inp["dtype"]))
        interp.invoke()
        y = interp.get_tensor(out["index"]).astype(np.float64).reshape(-1)
        if out["dtype"] != np.float32:
            s, z = out["quantization"]
            y = (y - z) * s
        res.append(y)
    return np.concatenate(res) if res else np.zeros(0)
