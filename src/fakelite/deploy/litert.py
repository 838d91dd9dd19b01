"""LiteRT (.tflite): the interpreter (ai-edge-litert, extra `fakelite[litert]`) and export (extra `fakelite[tflite]`).

Export uses `litert-torch` (torch.export → StableHLO → TFLite flatbuffer). It is an optional extra because it
pulls a second ML stack (jax/jaxlib, transformers, torchao, ai-edge-quantizer, ~35 packages, no torch/CUDA); it
installs next to torch 2.13 CPU without replacing it (docs/deploy.md, "LiteRT status", has the measurements).

What is exported (NCHW float input as in the ONNX export; NPR in the graph; BN folded):
- FP model → FP32 graph ("tflite-fp32"), or with `int8=True` the litert-torch PT2E static quantizer (int8
  activations per tensor, int8 weights per channel, HistogramObserver) calibrated on `calib` ("tflite-int8").
- Quantized model → `fakelite.deploy.onnx.integer_module` with its integer kernels written as float emulation
  (the codes are exact in float; "tflite-integer-emulated"): correct, but LiteRT has no 2-bit kernels, so it runs
  as a float graph — use the ONNX integer export for speed.
The header travels in a sidecar `<file>.json` (`Detector.load(x.tflite)` reads it).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

TFLITE_HINT = "pip install 'fakelite[tflite]'"


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
    import torch
    from torch import nn

    from fakelite.deploy.onnx import ExportConv
    from fakelite.quant.cqb import channel_reduce, channel_repeat, spatial_pool

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


@contextlib.contextmanager
def _float_emulated_kernels():
    """Swap the ONNX-only autograd.Functions of onnx.py (whose symbolic() writes QLinearConv/ConvInteger) for
    their float emulation, which torch.export can trace: codes and integer accumulators are exact in float32."""
    import torch

    from fakelite.deploy import onnx as O

    saved = (O._QuantAct, O._QLinearConv, O._ConvInteger)
    ql_cls, ci_cls = saved[1], saved[2]

    class _Act:
        apply = staticmethod(lambda x, key: O._emulate_act(x, O._PLANS[key]))

    class _CI:
        apply = staticmethod(lambda xq, key: ci_cls.emulate(xq, O._PLANS[key], torch.float32))

    O._QuantAct, O._ConvInteger = _Act, _CI
    O._QLinearConv = type("_QLinearConvEmulated", (), {
        "apply": staticmethod(lambda xq, key: ql_cls.emulate(xq, O._PLANS[key], torch.float32)),
        "emulate": ql_cls.emulate})
    try:
        yield
    finally:
        O._QuantAct, O._QLinearConv, O._ConvInteger = saved


def _quiet():
    """litert-torch prints a progress tree to stdout, and it and its stack (jax, torch.export, TensorFlow's native
    libraries) print warnings and logs; keep the CLI output to our own lines and the errors
    (`fakelite.deploy.quiet.third_party_quiet`)."""
    from fakelite.deploy.quiet import third_party_quiet

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
    import torch

    from fakelite.deploy.onnx import _folded_copy, export_header, integer_module

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = model.preprocess.crop
    sample = (torch.zeros(1, 3, size, size),)
    extra: dict[str, Any] = {}
    with _quiet():
        if getattr(model, "fakelite_quant", None):
            kind = "tflite-integer-emulated"
            m = integer_module(model)
            _cat_shortcuts(m)
            with _float_emulated_kernels(), torch.no_grad():
                edge = litert_torch.convert(m.eval(), sample)
        elif int8:
            if calib is None or len(calib) == 0:
                raise ValueError("int8 TFLite export of a full-precision model needs calibration images (--data)")
            from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
            from litert_torch.quantize.quant_config import QuantConfig
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            kind = "tflite-int8"
            q = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
            g = prepare_pt2e(torch.export.export(_folded_copy(model), sample).module(), q)
            with torch.no_grad():
                for i in range(len(calib)):
                    g(torch.from_numpy(np.ascontiguousarray(calib[i : i + 1], dtype=np.float32)))
            g = convert_pt2e(g, fold_quantize=False)
            edge = litert_torch.convert(g, sample, quant_config=QuantConfig(pt2e_quantizer=q))
            extra["calib_images"] = int(len(calib))
        else:
            kind = "tflite-fp32"
            with torch.no_grad():
                edge = litert_torch.convert(_folded_copy(model), sample)
        edge.export(str(path))
    header = export_header(model, kind, converter=f"litert-torch {getattr(litert_torch, '__version__', '?')}",
                           input_layout="NCHW", input_size=[size, size], **extra)
    header["export"]["format"] = "tflite"
    header["export"].pop("opset", None)
    sidecar_path(path).write_text(json.dumps(header))
    return {"path": str(path), "kind": kind, "bytes": path.stat().st_size}


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


def parity_tflite(model, path: str | Path, inputs) -> dict[str, Any]:
    """Compare the PyTorch model and the .tflite on `inputs` (N, 3, H, W): max |logit diff|, same decisions —
    the same report as `fakelite.deploy.onnx.parity`."""
    import torch

    x = inputs if isinstance(inputs, torch.Tensor) else torch.from_numpy(np.asarray(inputs, dtype=np.float32))
    with torch.no_grad():
        ref = model.eval()(x).reshape(-1).double().numpy()
    got = run_tflite(path, x.numpy())
    from fakelite.deploy.onnx import parity_report

    return parity_report(ref, got, float(getattr(model, "threshold", 0.5)))
