"""ONNX export for ONNX Runtime: FP32 graphs, integer graphs of quantized models, and ORT static int8 of FP models.

Every exported file embeds the fakelite header (arch, preprocessing, threshold, quantization plan) as the
ONNX metadata_props entry "fakelite", so an .onnx alone is a complete deployable (`Detector.load(x.onnx)`;
`fakelite.deploy.onnx_graph`). The quantized model is lowered by `fakelite.deploy.lowering` (backend-neutral);
this module passes it the ORT kernels (`ORT_KERNELS`, the symbolics below). Integer maths (codes, exact
accumulators, integer biases, requantization): `fakelite.quant.integer`. Parity checks: `fakelite.deploy.parity`.

Three kinds of export (see docs/deploy.md for the design and the measurements):

* **fp32** — BatchNorm folded into the convs, NPR inside the graph, dynamic batch/height/width, opset 17,
  exported with the TorchScript exporter (`dynamo=False`, ~1 s).
* **integer** (quantized models) — each quantized conv becomes an integer kernel with its weights baked as
  integer initializers (never a float Conv behind Q/DQ):
    - the input quantizer becomes a `QuantizeLinear` to uint8 codes (uniform kinds: MinMax/percentile/LSQ/LSQ+,
      then an integer `Clip` on the codes so a ≤7-bit grid is represented exactly in the uint8 container) or a
      threshold count #{tᵢ ≤ x} (N2UQ, SLR: non-uniform input thresholds, uniform output levels Δ·(k − z), so
      the code k is an exact integer input; a non-integer z becomes a bias, a border *map* on padded convs);
    - `QLinearConv` (uint8 × int8, requantized straight to the next layer's codes) where a conv's output goes,
      through its folded BN and ReLU, only into the next quantized conv's uniform input quantizer (inside the
      residual blocks): the requantization *is* the next quantizer (ReLU = clip at its zero point); its int32
      bias and multiplier are chosen so every code is decided as by the float bias (`exact_int_bias`,
      `exact_requant`);
    - where the result must stay float (the residual sum, CQB shortcuts, threshold-kind consumers, the stem): an
      exact int32 accumulator, rescaled per channel — `MatMulIntegerToFloat` for 1×1 convs, `ConvInteger`
      (uint8 × uint8 codes+128) → `DequantizeLinear` for k×k.
  Only binary (RSign) inputs on padded convs have no exact integer form; they run as their fake-quant float
  computation and `layer_modes` reports them.
* **int8-static** (FP models) — onnxruntime.quantization.quantize_static, QDQ, S8S8, per-channel, calibrated
  on real images; ORT fuses the QDQ groups into integer kernels at load.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fakelite.deploy.lowering import (
    Kernels,
    emulated_act,
    emulated_conv_integer,
    emulated_qlinear,
    folded_copy,
    layer_modes,
    lower,
    traced_kernel,
)
from fakelite.deploy.onnx_graph import (
    const,
    conv_attrs,
    export_header,
    op_counts,
    quant_act_symbolic,
    torch_export,
    write_metadata,
)
from fakelite.deploy.qdq import export_qdq

# the integer kernels a quantized conv becomes (MatMulIntegerToFloat: ONNX Runtime's com.microsoft domain)
INTEGER_KERNELS = ("QLinearConv", "ConvInteger", "MatMulIntegerToFloat")

# ----------------------------------------------------------------------------- FP32


def export_fp32(model: nn.Module, path: str | Path, size: int | None = None) -> Path:
    """FP32 ONNX of a full-precision model (BN folded, NPR in the graph, dynamic batch/H/W)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = size or model.preprocess.crop
    torch_export(folded_copy(model), path, size)
    write_metadata(path, export_header(model, "fp32"))
    return path


# ----------------------------------------------------------------------------- the ORT integer kernels


def qlinear_conv_symbolic(g, xq, p: dict[str, Any]):
    """uint8 codes → QLinearConv → uint8 codes of the consumer's quantizer (+ integer Clip for ReLU/low bits)."""
    if p["w_u8"]:
        w = const(g, (p["codes"].to(torch.int16) + 128).to(torch.uint8), torch.uint8)
        wz = const(g, torch.full((p["codes"].shape[0],), 128, dtype=torch.uint8), torch.uint8)
    else:
        w = const(g, p["codes"].to(torch.int8), torch.int8)
        wz = const(g, torch.zeros(p["codes"].shape[0], dtype=torch.int8), torch.int8)
    y = g.op("QLinearConv", xq, const(g, p["x_scale"], torch.float32), const(g, p["x_zp"], torch.uint8),
             w, const(g, p["w_scale"], torch.float32), wz,
             const(g, p["y_scale"], torch.float32), const(g, p["y_zp"], torch.uint8),
             const(g, p["bias_q"], torch.int32), **conv_attrs(p))
    if p["clip_lo"] > 0 or p["clip_hi"] < 255:
        y = g.op("Clip", y, const(g, p["clip_lo"], torch.uint8), const(g, p["clip_hi"], torch.uint8))
    return y


def conv_integer_symbolic(g, xq, p: dict[str, Any]):
    """uint8 codes → exact int32 accumulator → ·scale per channel + bias (float).

    k×k convs: ConvInteger (uint8 × uint8 codes+128) → DequantizeLinear → Add. 1×1 convs (the residual-sum
    producers) are a GEMM over channels: com.microsoft.MatMulIntegerToFloat on channels-last codes, uint8 × int8
    (MLAS's fast kernel; 2·max|x|·max|w| ≤ 32767 so AVX2's pair sums cannot saturate, else uint8 weights),
    with the per-channel scale and the bias in its epilogue — ~2× faster than ConvInteger and two float passes
    fewer. The layout transposes it needs are the ones ORT's transpose optimizer cancels or pushes away.
    """
    if _pointwise(p):
        return _pointwise_integer(g, xq, p)
    w = (p["codes"].to(torch.int16) + 128).to(torch.uint8)  # uint8 × uint8: exact on every ISA
    acc = g.op("ConvInteger", xq, const(g, w, torch.uint8), const(g, p["x_zp"], torch.uint8),
               const(g, 128, torch.uint8), **conv_attrs(p))
    # int32 → float with the per-channel scale in one pass (instead of Cast + Mul)
    y = g.op("DequantizeLinear", acc, const(g, p["deq_scale"], torch.float32),
             const(g, torch.zeros(p["deq_scale"].numel(), dtype=torch.int32), torch.int32), axis_i=1)
    return y if p["bias"] is None else g.op("Add", y, const(g, p["bias"].reshape(1, -1, 1, 1), torch.float32))


def _pointwise(p: dict[str, Any]) -> bool:
    return p["kernel"] == [1, 1] and p["padding"] == [0, 0] and p["dilation"] == [1, 1] and p["groups"] == 1


def _pointwise_integer(g, xq, p: dict[str, Any]):
    """1×1 conv as MatMulIntegerToFloat over channels-last (N, H·W, C) codes, scale and bias in its epilogue;
    NCHW in and out through transposes that ORT's transpose optimizer cancels along a residual stream of plain
    ops. (With CQB's float shortcut ops in the way some transposes stay; an NCHW MatMulInteger → Dequantize → Add
    form measured no faster there: 24.4 vs 23.8 ms for the W2A2 demo model at 224².)"""
    codes = p["codes"].reshape(p["codes"].shape[0], -1)  # (O, C)
    if p["stride"] != [1, 1]:  # padding 0: a strided 1×1 conv reads every s-th position — slice the codes
        xq = g.op("Slice", xq, const(g, [0, 0], torch.int64), const(g, [2**62, 2**62], torch.int64),
                  const(g, [2, 3], torch.int64), const(g, p["stride"], torch.int64))
    xt = g.op("Transpose", xq, perm_i=[0, 2, 3, 1])  # N, H, W, C
    shape = g.op("Shape", xt)
    x3 = g.op("Reshape", xt, const(g, [0, -1, codes.shape[1]], torch.int64))
    if 2 * p["x_max"] * int(codes.abs().max()) <= 32767:
        w, wz = codes.t().to(torch.int8), const(g, 0, torch.int8)
        w = const(g, w.contiguous(), torch.int8)
    else:
        w = const(g, (codes.t().to(torch.int16) + 128).to(torch.uint8).contiguous(), torch.uint8)
        wz = const(g, 128, torch.uint8)
    y = g.op("com.microsoft::MatMulIntegerToFloat", x3, w, const(g, 1.0, torch.float32),
             const(g, p["deq_scale"], torch.float32), const(g, p["x_zp"], torch.uint8), wz,
             const(g, p["bias"].float(), torch.float32))
    out_shape = g.op("Concat", g.op("Slice", shape, const(g, [0], torch.int64), const(g, [3], torch.int64)),
                     const(g, [codes.shape[0]], torch.int64), axis_i=0)
    return g.op("Transpose", g.op("Reshape", y, out_shape), perm_i=[0, 3, 1, 2])


ORT_KERNELS = Kernels(
    "onnxruntime",
    quant_act=traced_kernel("_QuantAct", emulated_act, quant_act_symbolic),
    qlinear_conv=traced_kernel("_QLinearConv", emulated_qlinear, qlinear_conv_symbolic),
    conv_integer=traced_kernel("_ConvInteger", emulated_conv_integer, conv_integer_symbolic),
)


# ----------------------------------------------------------------------------- integer graph


def integer_module(model: nn.Module, strict: bool = False) -> nn.Module:
    """The deploy form of a quantized model with the ORT kernels (`lowering.lower`): BN folded, quant layers →
    ExportConv/ExportLinear, blocks fused. In PyTorch it computes what the exported graph computes.

    strict: only fuse into QLinearConv where every channel's integer bias is exact (bit-exact codes everywhere).
    """
    return lower(model, ORT_KERNELS, strict)


def export_integer(model: nn.Module, path: str | Path, size: int | None = None, strict: bool = False) -> dict[str, Any]:
    """Integer ONNX of a quantized model. Returns {"path", "layers": {name: mode}, "ops": Counter of op types}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not getattr(model, "fakelite_quant", None):
        raise ValueError("export_integer needs a quantized model (fakelite quantize); use int8 static for FP models")
    mod = integer_module(model, strict)
    torch_export(mod, path, size or model.preprocess.crop)
    modes = layer_modes(mod)
    write_metadata(path, export_header(model, "integer", layers=modes, strict=strict))
    return {"path": str(path), "layers": modes, "ops": op_counts(path)}


# ----------------------------------------------------------------------------- FP → int8 static (ORT)


def export_int8_static(model: nn.Module, path: str | Path, calib: np.ndarray, size: int | None = None) -> Path:
    """FP model → FP32 ONNX → onnxruntime quantize_static (QDQ, S8S8, per-channel) calibrated on `calib`.

    calib: (N, 3, H, W) float32, already preprocessed (eval_transform) images.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": calib[i : i + 1].astype(np.float32)} for i in range(len(calib))])

        def get_next(self):  # noqa: D102
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as td:
        fp = Path(td) / "fp32.onnx"
        pre = Path(td) / "pre.onnx"
        torch_export(folded_copy(model), fp, size or model.preprocess.crop)
        try:
            quant_pre_process(str(fp), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantize the raw graph otherwise
            pre = fp
        quantize_static(str(pre), str(path), _Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    write_metadata(path, export_header(model, "int8-static", calib_images=int(len(calib))))
    return path


def export_onnx(model: nn.Module, path: str | Path, *, int8: bool = False, calib: np.ndarray | None = None,
                size: int | None = None, strict: bool = False, qdq: bool = False,
                exact: bool = False) -> dict[str, Any]:
    """Export any fakelite model: quantized → integer graph (`qdq=True`: the standard QDQ graph that ONNX Runtime
    and OpenVINO both fuse, `fakelite.deploy.qdq`; with `exact=True` its float-output convs in the exact form that
    ONNX Runtime computes as the integer model); FP → FP32, or int8-static (a QDQ graph) with `int8=True`."""
    if getattr(model, "fakelite_quant", None) and qdq:
        return export_qdq(model, path, size, strict, exact)
    if getattr(model, "fakelite_quant", None):
        rep = export_integer(model, path, size, strict)
        rep["kind"] = "integer"
        return rep
    if int8:
        if calib is None or len(calib) == 0:
            raise ValueError("int8 export of a full-precision model needs calibration images (--data, --calib N)")
        export_int8_static(model, path, calib, size)
        return {"path": str(path), "kind": "int8-static", "ops": op_counts(path)}
    export_fp32(model, path, size)
    return {"path": str(path), "kind": "fp32", "ops": op_counts(path)}
