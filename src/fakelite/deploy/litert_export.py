"""LiteRT (.tflite) export (extra `fakelite[tflite]`); the interpreter is `fakelite.deploy.litert`.

Export uses `litert-torch` (torch.export → StableHLO → TFLite flatbuffer). It is an optional extra because it
pulls a second ML stack (jax/jaxlib, transformers, torchao, ai-edge-quantizer, ~35 packages, no torch/CUDA); it
installs next to torch 2.13 CPU without replacing it (docs/deploy.md, "LiteRT status", has the measurements).

What is exported (NCHW float input as in the ONNX export; NPR in the graph; BN folded):
- FP model → FP32 graph ("tflite-fp32"), or with `int8=True` the litert-torch PT2E static quantizer (int8
  activations per tensor, int8 weights per channel, HistogramObserver) calibrated on `calib` ("tflite-int8").
- Quantized model → `fakelite.deploy.lowering.lower` with the float emulation of the integer kernels
  (`FLOAT32_KERNELS`: the codes are exact in float; "tflite-integer-emulated"): correct, but LiteRT has no 2-bit
  kernels, so it runs as a float graph — use the ONNX integer export for speed.
The header travels in a sidecar `<file>.json` (`Detector.load(x.tflite)` reads it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fakelite.deploy.litert import LiteRTUnavailable, sidecar_path
from fakelite.deploy.lowering import FLOAT32_KERNELS, ExportConv, folded_copy, lower
from fakelite.deploy.onnx_graph import export_header
from fakelite.deploy.quiet import third_party_quiet
from fakelite.quant.cqb import channel_reduce, channel_repeat, spatial_pool

TFLITE_HINT = "pip install 'fakelite[tflite]'"


def _litert_torch():
    try:
        import litert_torch  # type: ignore[import-not-found]
    except ImportError:
        raise LiteRTUnavailable(
            "TFLite export needs litert-torch, an optional extra (it pulls jax, transformers and torchao): "
            f"{TFLITE_HINT}, or export ONNX instead; see docs/deploy.md 'LiteRT status'") from None
    return litert_torch


def _cat_shortcuts(m) -> None:
    """Write each CQB channel repeat as torch.cat: litert-torch 0.10's NHWC layout pass does not permute the
    repeats of aten.repeat (it broadcasts [1,1,1,256] against [1,64,16,64] and fails)."""
    class _CatShortcut(nn.Module):
        def __init__(self, cqb: nn.Module):
            super().__init__()
            self.inner = cqb

        def shortcut(self, x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
            c = self.inner
            x = spatial_pool(x, c.stride, out_hw)
            if c.mode == "dn":
                return channel_reduce(x, c.out_channels)
            if c.mode == "up":
                k, r = divmod(c.out_channels, x.shape[1])
                return torch.cat([x] * k, dim=1) if r == 0 else channel_repeat(x, c.out_channels)
            return x

    for mod in list(m.modules()):
        if isinstance(mod, ExportConv) and mod.cqb is not None and not isinstance(mod.cqb, _CatShortcut):
            mod.cqb = _CatShortcut(mod.cqb)


def _quiet():
    """litert-torch prints a progress tree to stdout, and it and its stack (jax, torch.export, TensorFlow's native
    libraries) print warnings and logs; keep the CLI output to our own lines and the errors
    (`fakelite.deploy.quiet.third_party_quiet`)."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    return third_party_quiet()


def export_tflite(model, path: str | Path, int8: bool = False, calib: np.ndarray | None = None) -> dict[str, Any]:
    """Convert a fakelite model to .tflite with litert-torch and write the header sidecar `<path>.json`.

    FP models: FP32, or int8 (PT2E static, needs `calib`: (N, 3, crop, crop) preprocessed images). Quantized
    models: the integer deploy module as float emulation (`int8` is ignored: their codes are already fixed).
    Returns {"path", "kind", "bytes"}.
    """
    with _quiet():  # importing the stack (jax, TensorFlow's native libraries) is where much of the noise starts
        litert_torch = _litert_torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = model.preprocess.crop
    sample = (torch.zeros(1, 3, size, size),)
    extra: dict[str, Any] = {}
    with _quiet():
        if getattr(model, "fakelite_quant", None):
            kind = "tflite-integer-emulated"
            m = lower(model, FLOAT32_KERNELS)
            _cat_shortcuts(m)
            with torch.no_grad():
                edge = litert_torch.convert(m.eval(), sample)
        elif int8:
            if calib is None or len(calib) == 0:
                raise ValueError("int8 TFLite export of a full-precision model needs calibration images (--data)")
            from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
            from litert_torch.quantize.quant_config import QuantConfig
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            kind = "tflite-int8"
            q = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
            g = prepare_pt2e(torch.export.export(folded_copy(model), sample).module(), q)
            with torch.no_grad():
                for i in range(len(calib)):
                    g(torch.from_numpy(np.ascontiguousarray(calib[i : i + 1], dtype=np.float32)))
            g = convert_pt2e(g, fold_quantize=False)
            edge = litert_torch.convert(g, sample, quant_config=QuantConfig(pt2e_quantizer=q))
            extra["calib_images"] = int(len(calib))
        else:
            kind = "tflite-fp32"
            with torch.no_grad():
                edge = litert_torch.convert(folded_copy(model), sample)
        edge.export(str(path))
    header = export_header(model, kind, converter=f"litert-torch {getattr(litert_torch, '__version__', '?')}",
                           input_layout="NCHW", input_size=[size, size], **extra)
    header["export"]["format"] = "tflite"
    header["export"].pop("opset", None)
    sidecar_path(path).write_text(json.dumps(header))
    return {"path": str(path), "kind": kind, "bytes": path.stat().st_size}
