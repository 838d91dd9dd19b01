"""Standard-ONNX QDQ graphs of quantized models: read by ONNX Runtime *and* OpenVINO, convs fused to int8 in both.

``export --format onnx`` writes an integer graph tuned for ONNX Runtime (QLinearConv, ConvInteger and the
``com.microsoft`` contrib op MatMulIntegerToFloat); OpenVINO cannot read the contrib op. This module writes the
same integer model (``fakelite.deploy.lowering.lower``: BN folded, the same codes, biases, requantization
multipliers) with standard ops only — this module's kernels (``QDQ_KERNELS``) — the QDQ form every runtime's quantization fusion recognises:

* a conv whose output goes (BN, ReLU) only into the next conv's uniform input quantizer (inside residual blocks):
  ``DequantizeLinear(x codes) → Conv(DequantizeLinear(int8 weight codes, per-channel scale), DequantizeLinear(int32
  bias, x_scale·w_scale)) → QuantizeLinear(next quantizer's scale, zero point) [→ Clip on the uint8 codes]``.
  ONNX Runtime fuses the group into QLinearConv with exactly the integer bias and multiplier `exact_int_bias` /
  `exact_requant` chose (so its codes equal the ORT integer graph's); OpenVINO's low-precision transformations
  run it as a u8×i8 convolution with the requantization as its output FakeQuantize.
* a conv whose output stays float (residual-sum producers, the stem, CQB layers, threshold-kind consumers):
  ``DequantizeLinear(x codes) → Conv(DequantizeLinear(int8 weight codes, per-channel scale), float bias)``.
  OpenVINO runs it as an int8 conv with a float dequantization epilogue; ONNX Runtime has no fusion for a QDQ conv
  without an output QuantizeLinear and runs it as a float conv on the dequantized values (same numbers).
* input quantizers: uniform kinds are ``QuantizeLinear`` to uint8 codes with the quantizer's zero point, then an
  integer ``Clip`` on the codes for a ≤7-bit grid (QuantizeLinear saturates at 0/255; the Clip makes a 4- or 2-bit
  grid exact, and ReLU is that Clip's lower bound at the zero point); threshold kinds (N2UQ, SLR) are the count
  #{tᵢ ≤ x} as GreaterOrEqual/Where on uint8 — standard ops, but float comparisons (see docs/deploy.md).

Weights are int8 initializers (low-bit codes exact in int8), no contrib ops; opset 17.

A graph whose every input quantizer is a threshold kind and whose stem is full precision (QMDD W2A2 with
``first_last="fp"``) has no QuantizeLinear at all, and OpenVINO enables its low-precision transformations only for a
model with a FakeQuantize in it (``LowPrecision::isFunctionQuantized``): every conv then ran in f32 (18.3 vs 9.0 ms
at 224², docs/models.md). `anchor_low_precision` gives such a graph one exact identity QuantizeLinear.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fakelite.deploy.lowering import (
    Kernels,
    emulated_act,
    emulated_conv_integer,
    emulated_qlinear,
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
from fakelite.quant.cqb import spatial_pool


def _dq_weight(g, p: dict[str, Any]):
    codes = p["codes"]
    o = codes.shape[0]
    if p.get("w_u8"):  # 8-bit activations with large codes: uint8 weights (codes + 128) so pair sums cannot saturate
        w = const(g, (codes.to(torch.int16) + 128).to(torch.uint8), torch.uint8)
        wz = const(g, torch.full((o,), 128, dtype=torch.uint8), torch.uint8)
    else:
        w = const(g, codes.to(torch.int8), torch.int8)
        wz = const(g, torch.zeros(o, dtype=torch.int8), torch.int8)
    return g.op("DequantizeLinear", w, const(g, p["w_scale"].float(), torch.float32), wz, axis_i=0)


def _dq_input(g, xq, p: dict[str, Any]):
    return g.op("DequantizeLinear", xq, const(g, float(p["x_scale"]), torch.float32),
                const(g, int(p["x_zp"]), torch.uint8))


def _subsample_codes(g, xq, p: dict[str, Any]):
    """A strided 1×1 unpadded conv reads every s-th pixel: take those pixels of the uint8 codes first (a `Slice` with
    steps, exact) and run the conv at stride 1. OpenVINO otherwise rewrites the stride into a 1×1 MaxPool between
    the codes and the DequantizeLinear, and its low-precision transformations then leave that conv in f32 (the
    stride-2 downsample of ResNet's first layer2 block: 10–17 % of the W4A4/W2A2 time, docs/deploy.md)."""
    if tuple(p["kernel"]) != (1, 1) or tuple(p["stride"]) == (1, 1) or any(p["padding"]) or p["groups"] != 1:
        return xq, p
    big = const(g, torch.tensor([2**62, 2**62]), torch.int64)
    xq = g.op("Slice", xq, const(g, torch.tensor([0, 0]), torch.int64), big,
              const(g, torch.tensor([2, 3]), torch.int64), const(g, torch.tensor(list(p["stride"])), torch.int64))
    return xq, {**p, "stride": [1, 1]}


def qlinear_conv_qdq(g, xq, p: dict[str, Any]):
    """DQ → Conv → Q (+ uint8 Clip) of a fused conv plan (the QLinearConv plan of `ExportConv.fuse_into`)."""
    xq, p = _subsample_codes(g, xq, p)
    o = p["codes"].shape[0]
    b_scale = torch.tensor(p["x_scale"], dtype=torch.float32) * p["w_scale"].float()  # what QLinearConv assumes
    b = g.op("DequantizeLinear", const(g, p["bias_q"].to(torch.int32), torch.int32), const(g, b_scale, torch.float32),
             const(g, torch.zeros(o, dtype=torch.int32), torch.int32), axis_i=0)
    y = g.op("Conv", _dq_input(g, xq, p), _dq_weight(g, p), b, **conv_attrs(p))
    q = g.op("QuantizeLinear", y, const(g, float(p["y_scale"]), torch.float32), const(g, int(p["y_zp"]), torch.uint8))
    if p["clip_lo"] > 0 or p["clip_hi"] < 255:
        q = g.op("Clip", q, const(g, p["clip_lo"], torch.uint8), const(g, p["clip_hi"], torch.uint8))
    return q


def conv_to_float_qdq(g, xq, p: dict[str, Any]):
    """DQ → Conv(+ float bias) of an integer conv whose output stays float (the ConvInteger plan)."""
    xq, p = _subsample_codes(g, xq, p)
    args = [_dq_input(g, xq, p), _dq_weight(g, p)]
    if p["bias"] is not None:
        args.append(const(g, p["bias"].float(), torch.float32))
    return g.op("Conv", *args, **conv_attrs(p))


def conv_to_float_exact(g, xq, p: dict[str, Any]):
    """The ConvInteger plan exactly, in standard float ops (the `exact` QDQ form): Cast(codes) − zp → Conv with the
    integer weight codes as float → × per-channel dequantization scale (+ bias). Every operand and partial sum is an
    integer below 2²⁴, so any float32 Conv computes the integer accumulator exactly whatever its summation order
    (no Winograd: fractional transforms would round); the scale and bias then round as `conv_integer_dequant` does.
    Guaranteed for ≤ 4-bit inputs and weights (15·7·C·k² < 2²⁴ for any C·k² < 159 000); an 8-bit layer is exact while
    its actual sums stay below 2²⁴. No DequantizeLinear feeds the Conv, so runtimes run it in float32 (OpenVINO
    then loses that conv's int8 kernel; ONNX Runtime runs the default form's conv in float32 too)."""
    x = g.op("Sub", g.op("Cast", xq, to_i=1), const(g, float(p["x_zp"]), torch.float32))
    y = g.op("Conv", x, const(g, p["codes"].float(), torch.float32), **conv_attrs(p))
    y = g.op("Mul", y, const(g, p["deq_scale"].float().reshape(1, -1, 1, 1), torch.float32))
    if p["bias"] is not None:
        y = g.op("Add", y, const(g, p["bias"].float().reshape(1, -1, 1, 1), torch.float32))
    return y


def cqb_shortcut(x: torch.Tensor, cqb: nn.Module, coef: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """coef[c] · shortcut(x)[c] of a CQB (QMDD eqs. 7–9) in ops that runtimes run fast, the same function:

    * down (C_in = g·C_out): the average of each group of g channels, times coef, is a grouped 1×1 conv
      (groups = C_out, kernel coef[o]/g) — one op in OpenVINO's blocked layout, where Reshape → ReduceMean (a
      reduction over a middle axis) costs as much and adds two layout reorders (measured: docs/deploy.md);
    * up (C_out = r·C_in): channel o ← input o mod C_in is a Concat of r copies (OpenVINO's Tile is a reference
      kernel: 10 % of the W2A2 QMDD time at 224²), times coef;
    * equal channels: x · coef. Spatial average pooling (the conv's stride) stays AvgPool.
    Non-divisible channel ratios keep the CQB's own form. x: (N, C_in, H, W) float; returns (N, C_out, H', W').
    """
    x = spatial_pool(x, cqb.stride, out_hw)
    cin, cout = cqb.in_channels, cqb.out_channels
    c = coef.float()
    if cqb.mode == "dn" and cin % cout == 0:
        g = cin // cout
        w = (c / g).reshape(cout, 1, 1, 1).expand(cout, g, 1, 1).contiguous()
        return torch.nn.functional.conv2d(x, w, None, 1, 0, 1, cout)
    if cqb.mode == "up" and cout % cin == 0:
        return torch.cat([x] * (cout // cin), 1) * c.reshape(1, -1, 1, 1)
    if cqb.mode == "eq":
        return x * c.reshape(1, -1, 1, 1)
    return c.reshape(1, -1, 1, 1) * cqb.shortcut(x, out_hw)


QDQ_KERNELS = Kernels(
    "qdq",
    quant_act=traced_kernel("_QuantAct", emulated_act, quant_act_symbolic),
    qlinear_conv=traced_kernel("_QLinearConv", emulated_qlinear, qlinear_conv_qdq),
    conv_integer=traced_kernel("_ConvInteger", emulated_conv_integer, conv_to_float_qdq),
    cqb_shortcut=cqb_shortcut,
)
# float-output convs as exact integer arithmetic in float ops: the QDQ graph equals the integer model under ORT
QDQ_EXACT_KERNELS = Kernels(
    "qdq-exact",
    quant_act=QDQ_KERNELS.quant_act,
    qlinear_conv=QDQ_KERNELS.qlinear_conv,
    conv_integer=traced_kernel("_ConvInteger", emulated_conv_integer, conv_to_float_exact),
    cqb_shortcut=cqb_shortcut,
)


def anchor_low_precision(m) -> bool:
    """Insert ``DequantizeLinear(·, 1, 0) → QuantizeLinear(·, 1, 0)`` on the first uint8 code tensor that feeds a
    DequantizeLinear, in an ONNX ModelProto (in place) that has no QuantizeLinear. On uint8 codes the pair is the
    identity (integers 0–255 at scale 1), so every runtime computes the same numbers; OpenVINO's ONNX frontend turns
    the QuantizeLinear into a FakeQuantize, which is what makes it run the graph's QDQ convs in int8 (measured with
    `benchmarks/profile_openvino.py`: docs/deploy.md). Returns whether it inserted the pair."""
    from onnx import AttributeProto, TensorProto, helper

    g = m.graph
    if any(n.op_type == "QuantizeLinear" for n in g.node):
        return False
    fixed = {t.name: t.data_type for t in g.initializer}
    fixed.update({n.output[0]: n.attribute[0].t.data_type for n in g.node if n.op_type == "Constant" and n.attribute
                  and n.attribute[0].type == AttributeProto.TENSOR})
    for i, n in enumerate(g.node):
        # codes, not weights: a computed input; uint8, read off its zero point (DequantizeLinear's x and x_zero_point
        # share one type), since the anchor's own zero point is uint8
        if n.op_type != "DequantizeLinear" or n.input[0] in fixed or len(n.input) < 3:
            continue
        if fixed.get(n.input[2]) != TensorProto.UINT8:
            continue
        codes = n.input[0]
        names = [f"lpt_anchor_{k}" for k in ("scale", "zp", "float", "codes")]
        g.initializer.extend([helper.make_tensor(names[0], TensorProto.FLOAT, [], [1.0]),
                              helper.make_tensor(names[1], TensorProto.UINT8, [], [0])])
        pair = [helper.make_node("DequantizeLinear", [codes, names[0], names[1]], [names[2]], "lpt_anchor_dq"),
                helper.make_node("QuantizeLinear", [names[2], names[0], names[1]], [names[3]], "lpt_anchor_q")]
        for other in g.node:  # every reader of the codes reads the anchored copy (same values)
            for j, inp in enumerate(other.input):
                if inp == codes:
                    other.input[j] = names[3]
        for k, node in enumerate(pair):
            g.node.insert(i + k, node)
        return True
    return False


def export_qdq(model: nn.Module, path: str | Path, size: int | None = None, strict: bool = False,
               exact: bool = False) -> dict[str, Any]:
    """QDQ ONNX of a quantized model (standard ops only). Returns {"path", "kind": "qdq", "layers", "ops"}.

    exact: float-output convs as `conv_to_float_exact` (integer accumulators in float ops) instead of
    DequantizeLinear → Conv, so that ONNX Runtime computes the integer model (docs/deploy.md, "Parity of the QDQ
    graph"); OpenVINO then runs those convs in float32.

    Raises ValueError for a full-precision model (export it with `int8=True` for ORT static int8, also QDQ).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not getattr(model, "fakelite_quant", None):
        raise ValueError("the QDQ export of fakelite's integer model needs a quantized model; for a full-precision "
                         "model use --int8 (ONNX Runtime static int8, also a QDQ graph)")
    mod = lower(model, QDQ_EXACT_KERNELS if exact else QDQ_KERNELS, strict)
    torch_export(mod, path, size or model.preprocess.crop)
    modes = layer_modes(mod)
    write_metadata(path, export_header(model, "qdq", layers=modes, strict=strict, exact=exact),
                   edit=anchor_low_precision)
    ops = op_counts(path)
    contrib = [op for op in ops if op in ("MatMulIntegerToFloat", "QLinearConv", "ConvInteger", "MatMulInteger")]
    if contrib:  # pragma: no cover - a kernel that wrote an ORT integer op
        raise RuntimeError(f"QDQ export wrote non-QDQ integer ops {contrib}")
    return {"path": str(path), "kind": "qdq", "layers": modes, "ops": ops}
