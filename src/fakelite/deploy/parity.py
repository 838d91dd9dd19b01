"""Parity of a deployed file with its PyTorch model: the same inputs through both, logits and decisions compared.

`parity` runs an .onnx in ONNX Runtime, `parity_tflite` a .tflite in LiteRT; both return `parity_report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fakelite.deploy.litert import run_tflite
from fakelite.deploy.onnx_graph import ort_disabled_optimizers, read_metadata


def parity(model: nn.Module, path: str | Path, inputs: torch.Tensor) -> dict[str, Any]:
    """Compare the PyTorch model and the ONNX file on `inputs` (N, 3, H, W): max |logit diff|, decisions."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    try:
        disabled = ort_disabled_optimizers(read_metadata(path))
    except ValueError:  # an ONNX file without fakelite metadata
        disabled = []
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    with torch.no_grad():
        ref = model.eval()(inputs).reshape(-1).double().numpy()
    got = np.concatenate([sess.run(None, {"input": inputs[i : i + 1].numpy()})[0].reshape(-1)
                          for i in range(len(inputs))]).astype(np.float64)
    return parity_report(ref, got, float(getattr(model, "threshold", 0.5)))


def parity_tflite(model: nn.Module, path: str | Path, inputs: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """Compare the PyTorch model and the .tflite on `inputs` (N, 3, H, W): max |logit diff|, same decisions —
    the same report as `parity`."""
    x = inputs if isinstance(inputs, torch.Tensor) else torch.from_numpy(np.asarray(inputs, dtype=np.float32))
    with torch.no_grad():
        ref = model.eval()(x).reshape(-1).double().numpy()
    got = run_tflite(path, x.numpy())
    return parity_report(ref, got, float(getattr(model, "threshold", 0.5)))


def parity_report(ref: np.ndarray, got: np.ndarray, threshold: float) -> dict[str, Any]:
    """Reference vs deployed logits: max/mean |difference| and how many decisions agree at `threshold` (a score
    threshold, compared in logit space). Shared by the ONNX and LiteRT parity checks."""
    lt = float(np.log(threshold / (1 - threshold))) if 0 < threshold < 1 else 0.0
    d = np.abs(ref - got)
    return {"n": int(len(ref)), "max_abs_logit_diff": float(d.max()) if len(d) else 0.0,
            "mean_abs_logit_diff": float(d.mean()) if len(d) else 0.0,
            "same_decisions": int(((ref >= lt) == (got >= lt)).sum()), "threshold": threshold}
