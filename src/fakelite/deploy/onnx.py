"""ONNX export: FP32 graphs, integer graphs of quantized models, and ORT static int8 of FP models.

Every exported file embeds the fakelite header (arch, preprocessing, threshold, quantization plan) as the
ONNX metadata_props entry "fakelite", so an .onnx alone is a complete deployable (`Detector.load(x.onnx)`).

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

import copy
import itertools
import json
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OPSET = 17
# the integer kernels a quantized conv becomes (MatMulIntegerToFloat: ONNX Runtime's com.microsoft domain)
INTEGER_KERNELS = ("QLinearConv", "ConvInteger", "MatMulIntegerToFloat")
META_KEY = "fakelite"

# ----------------------------------------------------------------------------- header in metadata_props


def export_header(model: nn.Module, kind: str, **extra: Any) -> dict[str, Any]:
    """The .fakelite header of `model` (from its artifact when loaded from one), plus an "export" section."""
    header = copy.deepcopy(getattr(model, "header", None) or {})
    if not header:
        header = {
            "format_version": 1,
            "arch": {"name": getattr(model, "arch_name", type(model).__name__),
                     "kwargs": dict(getattr(model, "arch_kwargs", {}))},
            "quant": getattr(model, "fakelite_quant", None),
        }
        try:
            from fakelite.artifact import content_hash, jsonable

            header["content_hash"] = content_hash({k: v.detach().cpu() for k, v in model.state_dict().items()})
            header = jsonable(header)
        except Exception:  # noqa: BLE001 - a hash is a convenience here, never a reason to fail
            pass
    header["preprocess"] = model.preprocess.to_dict()
    header["threshold"] = float(getattr(model, "threshold", header.get("threshold", 0.5)))
    header["threshold_source"] = getattr(model, "threshold_source", header.get("threshold_source"))
    header["temperature"] = float(getattr(model, "temperature", header.get("temperature")) or 1.0)
    header.pop("tensors", None)  # tensor shapes of the artifact do not describe the graph
    header["export"] = {"format": "onnx", "kind": kind, "opset": OPSET, **extra}
    return header


def write_metadata(path: Path, header: dict[str, Any]) -> None:
    import onnx

    m = onnx.load(str(path))
    del m.metadata_props[:]
    m.metadata_props.add(key=META_KEY, value=json.dumps(header))
    m.producer_name = "fakelite"
    onnx.save(m, str(path))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The fakelite header embedded in an ONNX file (ValueError if absent)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    for p in m.metadata_props:
        if p.key == META_KEY:
            return json.loads(p.value)
    raise ValueError(f"{path}: ONNX file without fakelite metadata (export it with `fakelite export`)")


# ----------------------------------------------------------------------------- FP32


def _torch_export(module: nn.Module, path: Path, size: int, opset: int = OPSET) -> None:
    dummy = torch.zeros(1, 3, size, size)
    module.eval()
    # The tracer warns about shape checks and constant tensors that are constant by design (CQB shortcut shapes,
    # quantizer thresholds), and torch warns that this (fast, single-file) exporter is the legacy one: both by choice.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            module, (dummy,), str(path), dynamo=False, opset_version=opset,
            input_names=["input"], output_names=["logit"],
            dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logit": {0: "batch"}},
            do_constant_folding=True,
        )


class NPRExport(nn.Module):
    """NPR × 2/3 without the odd-size trim (a full copy in ONNX): exported graphs take even H, W — the
    Detector's preprocessing (`to_tensor`) already trims odd sizes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from fakelite.models.npr_resnet import NPR_SCALE, npr_even

        return npr_even(x) * NPR_SCALE


def _folded_copy(model: nn.Module) -> nn.Module:
    from fakelite.models.npr_resnet import NPR
    from fakelite.quant import fold_bn

    m = copy.deepcopy(model).eval()
    for name, mod in list(m.named_modules()):
        if isinstance(mod, NPR):
            _set(m, name, NPRExport())
    return fold_bn(m)


def export_fp32(model: nn.Module, path: str | Path, size: int | None = None) -> Path:
    """FP32 ONNX of a full-precision model (BN folded, NPR in the graph, dynamic batch/H/W)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = size or model.preprocess.crop
    _torch_export(_folded_copy(model), path, size)
    write_metadata(path, export_header(model, "fp32"))
    return path


# ----------------------------------------------------------------------------- integer building blocks

_PLANS: dict[int, dict[str, Any]] = {}
_KEYS = itertools.count(1)
# which graph the integer kernels' symbolics write: False = the ORT integer ops (QLinearConv, ConvInteger,
# com.microsoft MatMulIntegerToFloat); True = standard QDQ (DequantizeLinear → Conv [→ QuantizeLinear]),
# written by fakelite.deploy.qdq (export_qdq sets it for the duration of one export)
EMIT_QDQ = {"on": False}


class _no_trace:
    """Run an autograd.Function's emulation untraced (its symbolic, not its body, describes the graph)."""

    def __enter__(self) -> None:
        self.state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)

    def __exit__(self, *exc: Any) -> None:
        torch._C._set_tracing_state(self.state)


def _register(plan: dict[str, Any]) -> int:
    key = next(_KEYS)
    _PLANS[key] = plan
    return key


def _const(g, value: Any, dtype: torch.dtype):
    return g.op("Constant", value_t=torch.as_tensor(value, dtype=dtype))


def _act_plan(iq: nn.Module) -> dict[str, Any] | None:
    """Integer plan of an input quantizer: uniform (round) or thresholds; None = no integer form (float)."""
    from fakelite.quant.quantizers import NoQuant

    if isinstance(iq, NoQuant):
        return None
    v = iq.integer_view()
    if v["type"] == "uniform":
        return {"kind": "uniform", "scale": float(v["scale"]), "zp": int(v["zero_point"]), "qmin": int(v["qmin"]),
                "qmax": int(v["qmax"])}
    if v["type"] == "thresholds":
        levels = v["levels"].double()
        t = v["thresholds"].float()
        if len(levels) > 256 or len(t) != len(levels) - 1 or not bool((t[1:] >= t[:-1]).all()):
            return None
        k = torch.arange(len(levels), dtype=torch.float64)
        delta = float(levels[1] - levels[0]) if len(levels) > 1 else 1.0
        off = float(levels[0])
        if delta <= 0 or (levels - (off + delta * k)).abs().max() > 1e-6 * max(1.0, abs(delta) * len(levels)):
            return None  # levels not uniform: no integer form
        zp = -off / delta
        return {"kind": "thresholds", "thresholds": t.tolist(), "scale": delta, "zp": zp,
                "qmax": len(levels) - 1, "integer_zp": abs(zp - round(zp)) < 1e-6}
    return None


def _emulate_act(x: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
    if plan["kind"] == "uniform":
        q = torch.clamp(torch.round(x / plan["scale"]) + plan["zp"], 0, plan["qmax"])
    else:
        t = torch.tensor(plan["thresholds"], dtype=x.dtype).reshape(-1, *([1] * x.dim()))
        q = (x.unsqueeze(0) >= t).sum(0)
    return q.to(torch.uint8)


class _QuantAct(torch.autograd.Function):
    """float → uint8 codes of an input quantizer (uniform: Clip + QuantizeLinear; thresholds: Σ[x ≥ tᵢ])."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, key: int) -> torch.Tensor:  # noqa: D102
        with _no_trace():
            return _emulate_act(x.detach().clone(), _PLANS[key])

    @staticmethod
    def symbolic(g, x, key: int):  # noqa: D102
        from torch.onnx import TensorProtoDataType as TP  # noqa: N817

        p = _PLANS[key]
        if p["kind"] == "uniform":
            s, z, qmax = p["scale"], p["zp"], p["qmax"]
            # QuantizeLinear saturates to [0, 255]; a ≤7-bit grid is then clipped on the uint8 codes — the same
            # codes as clamp(round(x/s)+z, 0, qmax), at a quarter of the memory traffic of a float Clip.
            q = g.op("QuantizeLinear", x, _const(g, s, torch.float32), _const(g, z, torch.uint8))
            if qmax < 255:
                q = g.op("Clip", q, _const(g, 0, torch.uint8), _const(g, qmax, torch.uint8))
            return q
        if len(p["thresholds"]) <= 15:
            # k = #{tᵢ ≤ x} for sorted tᵢ as a chain of uint8 Where ops, lowest threshold first: one float
            # comparison per threshold and byte-sized selects (ORT has no uint8 Add; a ReduceSum over a stacked
            # comparison tensor was 5× slower)
            k = _const(g, 0, torch.uint8)
            for i, ti in enumerate(p["thresholds"]):
                ge = g.op("GreaterOrEqual", x, _const(g, ti, torch.float32))
                k = g.op("Where", ge, _const(g, i + 1, torch.uint8), k)
            return k
        t = torch.tensor(p["thresholds"], dtype=torch.float32).reshape(-1, 1, 1, 1, 1)
        xu = g.op("Unsqueeze", x, _const(g, [0], torch.int64))
        ge = g.op("Cast", g.op("GreaterOrEqual", xu, _const(g, t, torch.float32)), to_i=TP.FLOAT)
        k = g.op("ReduceSum", ge, _const(g, [0], torch.int64), keepdims_i=0)
        return g.op("Cast", k, to_i=TP.UINT8)


def _conv_attrs(p: dict[str, Any]) -> dict[str, Any]:
    ph, pw = p["padding"]
    return {"kernel_shape_i": p["kernel"], "strides_i": p["stride"], "pads_i": [ph, pw, ph, pw],
            "dilations_i": p["dilation"], "group_i": p["groups"]}


def _integer_accumulator(xq: torch.Tensor, p: dict[str, Any], dtype: torch.dtype) -> torch.Tensor:
    """Σ (x_code − x_zp)·w_code of an integer conv plan, exact: float64 for any int8 layer; float32 (what
    torch.export can lower) while the sums stay below 2²⁴."""
    return F.conv2d(xq.to(dtype) - p["x_zp"], p["codes"].to(dtype), None, tuple(p["stride"]), tuple(p["padding"]),
                    tuple(p["dilation"]), p["groups"])


class _QLinearConv(torch.autograd.Function):
    """uint8 codes → QLinearConv → uint8 codes of the consumer's quantizer (+ integer Clip for ReLU/low bits)."""

    @staticmethod
    def forward(ctx, xq: torch.Tensor, key: int) -> torch.Tensor:  # noqa: D102
        with _no_trace():
            return _QLinearConv.emulate(xq.detach(), _PLANS[key], torch.float64)

    @staticmethod
    def emulate(xq: torch.Tensor, p: dict[str, Any], acc_dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """ONNX Runtime's arithmetic: exact int32 accumulator + int32 bias, times the float32 requantization scale
        x_scale·w_scale/y_scale (computed in float32, in that order), rounded half to even, + zero point, clipped."""
        acc = _integer_accumulator(xq, p, acc_dtype) + p["bias_q"].to(acc_dtype).reshape(1, -1, 1, 1)
        scale = (torch.tensor(p["x_scale"], dtype=torch.float32) * p["w_scale"].float()) / torch.tensor(
            p["y_scale"], dtype=torch.float32)
        q = torch.round(acc.float() * scale.reshape(1, -1, 1, 1)) + p["y_zp"]
        return torch.clamp(q, p["clip_lo"], p["clip_hi"]).to(torch.uint8)

    @staticmethod
    def symbolic(g, xq, key: int):  # noqa: D102
        p = _PLANS[key]
        if EMIT_QDQ["on"]:
            from fakelite.deploy.qdq import qlinear_conv_qdq

            return qlinear_conv_qdq(g, xq, p)
        if p["w_u8"]:
            w = _const(g, (p["codes"].to(torch.int16) + 128).to(torch.uint8), torch.uint8)
            wz = _const(g, torch.full((p["codes"].shape[0],), 128, dtype=torch.uint8), torch.uint8)
        else:
            w = _const(g, p["codes"].to(torch.int8), torch.int8)
            wz = _const(g, torch.zeros(p["codes"].shape[0], dtype=torch.int8), torch.int8)
        y = g.op("QLinearConv", xq, _const(g, p["x_scale"], torch.float32), _const(g, p["x_zp"], torch.uint8),
                 w, _const(g, p["w_scale"], torch.float32), wz,
                 _const(g, p["y_scale"], torch.float32), _const(g, p["y_zp"], torch.uint8),
                 _const(g, p["bias_q"], torch.int32), **_conv_attrs(p))
        if p["clip_lo"] > 0 or p["clip_hi"] < 255:
            y = g.op("Clip", y, _const(g, p["clip_lo"], torch.uint8), _const(g, p["clip_hi"], torch.uint8))
        return y


class _ConvInteger(torch.autograd.Function):
    """uint8 codes → exact int32 accumulator → ·scale per channel + bias (float).

    k×k convs: ConvInteger (uint8 × uint8 codes+128) → DequantizeLinear → Add. 1×1 convs (the residual-sum
    producers) are a GEMM over channels: com.microsoft.MatMulIntegerToFloat on channels-last codes, uint8 × int8
    (MLAS's fast kernel; 2·max|x|·max|w| ≤ 32767 so AVX2's pair sums cannot saturate, else uint8 weights),
    with the per-channel scale and the bias in its epilogue — ~2× faster than ConvInteger and two float passes
    fewer. The layout transposes it needs are the ones ORT's transpose optimizer cancels or pushes away.
    """

    @staticmethod
    def forward(ctx, xq: torch.Tensor, key: int) -> torch.Tensor:  # noqa: D102
        with _no_trace():
            return _ConvInteger.emulate(xq.detach(), _PLANS[key], torch.float64)

    @staticmethod
    def emulate(xq: torch.Tensor, p: dict[str, Any], acc_dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The kernel in torch ops: exact accumulator, then scale and bias in float32 as DequantizeLinear + Add."""
        y = _integer_accumulator(xq, p, acc_dtype).float() * p["deq_scale"].reshape(1, -1, 1, 1)
        return y if p["bias"] is None else y + p["bias"].reshape(1, -1, 1, 1)

    @staticmethod
    def symbolic(g, xq, key: int):  # noqa: D102
        p = _PLANS[key]
        if EMIT_QDQ["on"]:
            from fakelite.deploy.qdq import conv_to_float_qdq

            return conv_to_float_qdq(g, xq, p)
        if _pointwise(p):
            return _pointwise_integer(g, xq, p)
        w = (p["codes"].to(torch.int16) + 128).to(torch.uint8)  # uint8 × uint8: exact on every ISA
        acc = g.op("ConvInteger", xq, _const(g, w, torch.uint8), _const(g, p["x_zp"], torch.uint8),
                   _const(g, 128, torch.uint8), **_conv_attrs(p))
        # int32 → float with the per-channel scale in one pass (instead of Cast + Mul)
        y = g.op("DequantizeLinear", acc, _const(g, p["deq_scale"], torch.float32),
                 _const(g, torch.zeros(p["deq_scale"].numel(), dtype=torch.int32), torch.int32), axis_i=1)
        return y if p["bias"] is None else g.op("Add", y, _const(g, p["bias"].reshape(1, -1, 1, 1), torch.float32))


def _pointwise(p: dict[str, Any]) -> bool:
    return p["kernel"] == [1, 1] and p["padding"] == [0, 0] and p["dilation"] == [1, 1] and p["groups"] == 1


def _pointwise_integer(g, xq, p: dict[str, Any]):
    """1×1 conv as MatMulIntegerToFloat over channels-last (N, H·W, C) codes, scale and bias in its epilogue;
    NCHW in and out through transposes that ORT's transpose optimizer cancels along a residual stream of plain
    ops. (With CQB's float shortcut ops in the way some transposes stay; an NCHW MatMulInteger → Dequantize → Add
    form measured no faster there: 24.4 vs 23.8 ms for the W2A2 demo model at 224².)"""
    codes = p["codes"].reshape(p["codes"].shape[0], -1)  # (O, C)
    if p["stride"] != [1, 1]:  # padding 0: a strided 1×1 conv reads every s-th position — slice the codes
        xq = g.op("Slice", xq, _const(g, [0, 0], torch.int64), _const(g, [2**62, 2**62], torch.int64),
                  _const(g, [2, 3], torch.int64), _const(g, p["stride"], torch.int64))
    xt = g.op("Transpose", xq, perm_i=[0, 2, 3, 1])  # N, H, W, C
    shape = g.op("Shape", xt)
    x3 = g.op("Reshape", xt, _const(g, [0, -1, codes.shape[1]], torch.int64))
    if 2 * p["x_max"] * int(codes.abs().max()) <= 32767:
        w, wz = codes.t().to(torch.int8), _const(g, 0, torch.int8)
        w = _const(g, w.contiguous(), torch.int8)
    else:
        w = _const(g, (codes.t().to(torch.int16) + 128).to(torch.uint8).contiguous(), torch.uint8)
        wz = _const(g, 128, torch.uint8)
    y = g.op("com.microsoft::MatMulIntegerToFloat", x3, w, _const(g, 1.0, torch.float32),
             _const(g, p["deq_scale"], torch.float32), _const(g, p["x_zp"], torch.uint8), wz,
             _const(g, p["bias"].float(), torch.float32))
    out_shape = g.op("Concat", g.op("Slice", shape, _const(g, [0], torch.int64), _const(g, [3], torch.int64)),
                     _const(g, [codes.shape[0]], torch.int64), axis_i=0)
    return g.op("Transpose", g.op("Reshape", y, out_shape), perm_i=[0, 3, 1, 2])


class ExportConv(nn.Module):
    """Deploy form of one BN-folded QuantConv2d: integer kernels where exact, its float computation otherwise.

    forward(x, out=None, relu=False): x is float, or uint8 codes of this layer's input quantizer (produced by a
    fused predecessor). With `out` (the consumer ExportConv) the result is the consumer's uint8 codes
    (QLinearConv); otherwise float (with ReLU if asked).
    """

    def __init__(self, layer: nn.Module, name: str = ""):
        super().__init__()
        from fakelite.quant import integer_view

        self.name = name
        v = integer_view(layer)
        self.in_plan = _act_plan(layer.input_quantizer)
        self.cqb = layer.cqb
        out_c = layer.out_channels
        ps = v["post_scale"] if v["post_scale"] is not None else torch.ones(out_c)
        pb = v["post_bias"] if v["post_bias"] is not None else torch.zeros(out_c)
        b = v["bias"] if v["bias"] is not None else torch.zeros(out_c)
        alpha = float(v["cqb"]["alpha"]) if v["cqb"] else 1.0
        self.shortcut_coef = None if not v["cqb"] else ((1 - alpha) * ps).float()
        # y = conv(x̂, Ŵ)·α·ps + (α·b·ps + pb) [+ (1−α)·ps·shortcut(x)]
        self.geom = {"kernel": list(layer.kernel_size), "stride": list(layer.stride), "padding": list(layer.padding),
                     "dilation": list(layer.dilation), "groups": layer.groups}
        self.register_buffer("w_float", layer.quantized_weight().detach().clone())
        self.register_buffer("out_mul", (alpha * ps).float().clone())
        self.register_buffer("out_add", (alpha * b * ps + pb).float().clone())
        self.mode = "float"
        self.reason = ""
        wv = v["weight"]
        if wv["type"] != "per_channel_symmetric":
            self.reason = "full-precision weights"
        elif self.in_plan is None:
            self.reason = f"input quantizer {v['a_quantizer']} has no integer form"
        elif int(wv["codes"].abs().max()) > 127 or layer.padding_mode != "zeros":
            self.reason = "weight codes beyond int8"
        else:
            self.mode = "integer"
        if self.mode != "float":
            codes = wv["codes"].to(torch.int32)
            sw = wv["scale"].double().reshape(-1) * (alpha * ps.double())  # per-channel, α and BN folded
            flip = sw < 0
            codes = torch.where(flip.reshape(-1, 1, 1, 1), -codes, codes)
            sw = sw.abs()
            dead = sw < 1e-30
            codes[dead] = 0
            sw[dead] = 1.0
            self.codes = codes
            self.w_scale_total = sw  # per channel: Ŵ·α·ps = w_scale_total · codes
            self.bias_total = (alpha * b * ps + pb).double()
            self.in_zp_int = int(round(self.in_plan["zp"])) if self.in_plan["kind"] == "uniform" or \
                self.in_plan["integer_zp"] else 0
            # Non-integer zero point (N2UQ/SLR levels Δ·k + off): the integer conv runs on the codes k with zero
            # padding, and the offset adds off·Σ W over the taps that fall inside the image. Unpadded: that is
            # off·ΣW everywhere (folded into the bias). Padded: fewer taps near a border, so the bias becomes a
            # map — a one-channel conv of ones with kernel off·Σ_c W (the bias as its bias) gives it exactly.
            self.border: tuple[torch.Tensor, torch.Tensor] | None = None
            bias = self.bias_total.float()
            if self.in_plan["kind"] == "thresholds" and not self.in_plan["integer_zp"]:
                off = -self.in_plan["zp"] * self.in_plan["scale"]
                w_eff = codes.double() * sw.reshape(-1, 1, 1, 1)
                if max(layer.padding) > 0:
                    self.border = ((off * w_eff.sum(1, keepdim=True)).float(), self.bias_total.float())
                    bias = None
                else:
                    self.bias_total = self.bias_total + off * w_eff.sum((1, 2, 3))
                    bias = self.bias_total.float()
            self.in_key = _register(self.in_plan)
            self.int_key = _register({**self.geom, "codes": codes, "x_zp": self.in_zp_int, "x_max": self.in_plan["qmax"],
                                      "bias": bias, "x_scale": float(self.in_plan["scale"]), "w_scale": sw.float(),
                                      "deq_scale": (sw * self.in_plan["scale"]).float()})
        from fakelite.quant.quantizers import NoQuant

        iq = layer.input_quantizer
        self.thr = _ThresholdAct(iq) if self.in_plan is None and not isinstance(iq, NoQuant) else None
        self.fused_out: ExportConv | None = None
        self.fused_relu = False

    # -- fusion: this conv's output feeds only `consumer`'s uniform input quantizer (through ReLU if relu)
    def can_fuse_into(self, consumer: nn.Module) -> bool:
        return (isinstance(consumer, ExportConv) and self.mode == "integer" and consumer.mode == "integer"
                and self.shortcut_coef is None and consumer.shortcut_coef is None
                and consumer.in_plan["kind"] == "uniform")

    def fuse_into(self, consumer: ExportConv, relu: bool) -> None:
        """Become a QLinearConv whose requantization is `consumer`'s input quantizer (ReLU: clip at its zp).

        QLinearConv's bias is int32 in units of x_scale·w_scale, so a float bias would round; `exact_int_bias`
        picks per channel a code multiplier K (codes·K still int8, w_scale/K) and an integer bias that decide
        every output code exactly as the float bias does (see its docstring).
        """
        cp = consumer.in_plan
        sx = self.in_plan["scale"]
        zy, qmax = int(cp["zp"]), int(cp["qmax"])
        cmax = self.codes.abs().reshape(self.codes.shape[0], -1).amax(1).clamp_min(1)
        kmax = (127 // cmax).clamp_min(1)
        sy = float(cp["scale"])
        b_units = self.bias_total / (sx * self.w_scale_total)
        k, bias_q, exact = exact_int_bias(b_units, sx * self.w_scale_total, sy, kmax, zy, qmax)
        w_scale = self.w_scale_total / k.double()
        if relu:  # channels whose bias would round: also move the requantization multiplier (exact_requant)
            x_span = max(self.in_zp_int, int(self.in_plan["qmax"]) - self.in_zp_int)
            sums = self.codes.abs().reshape(self.codes.shape[0], -1).sum(1)
            for c in torch.nonzero(~exact).reshape(-1).tolist():
                found = exact_requant(float(b_units[c]), float(sx * self.w_scale_total[c] / sy), int(kmax[c]), zy,
                                      qmax, x_span * int(sums[c]), float(sx), sy)
                if found is not None:
                    k[c], bias_q[c], w_scale[c] = found
                    exact[c] = True
        codes = self.codes * k.reshape(-1, 1, 1, 1).to(torch.int32)
        w_u8 = 2 * self.in_plan["qmax"] * int(codes.abs().max()) > 32767  # u8×s8 pair sums could saturate (AVX2)
        self.mode = "qlinear"
        self.inexact_channels = int((~exact).sum())
        self.fused_out, self.fused_relu = consumer, relu
        self.ql_key = _register({
            **self.geom, "codes": codes, "x_zp": self.in_zp_int, "x_scale": float(sx),
            "w_scale": w_scale.float(), "y_scale": float(cp["scale"]), "y_zp": zy, "bias_q": bias_q,
            "clip_lo": zy if relu else 0, "clip_hi": qmax, "w_u8": w_u8,
        })

    def _float_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:  # codes from a fused predecessor
            p = self.in_plan
            return (x.float() - p["zp"]) * p["scale"]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "float":
            xf = self._float_input(x)
            xh = self._fake_quant_float(xf)
            y = F.conv2d(xh, self.w_float, None, self.geom["stride"], self.geom["padding"], self.geom["dilation"],
                         self.geom["groups"])
            y = y * self.out_mul.reshape(1, -1, 1, 1) + self.out_add.reshape(1, -1, 1, 1)
            if self.shortcut_coef is not None:
                y = y + self.shortcut_coef.reshape(1, -1, 1, 1) * self.cqb.shortcut(xf, tuple(y.shape[-2:]))
            return y
        xq = x if x.dtype == torch.uint8 else _QuantAct.apply(x, self.in_key)
        if self.mode == "qlinear":
            return _QLinearConv.apply(xq, self.ql_key)
        y = _ConvInteger.apply(xq, self.int_key)
        if self.border is not None:  # the position-dependent bias of a non-integer zero point (see __init__)
            g = self.geom
            ones = torch.ones_like(x[:, :1], dtype=torch.float32)
            y = y + F.conv2d(ones, self.border[0], self.border[1], g["stride"], g["padding"], g["dilation"])
        if self.shortcut_coef is not None:
            xf = self._float_input(x)
            if EMIT_QDQ["on"]:  # the same function in ops every runtime fuses (fakelite.deploy.qdq.cqb_shortcut)
                from fakelite.deploy.qdq import cqb_shortcut

                return y + cqb_shortcut(xf, self.cqb, self.shortcut_coef, tuple(y.shape[-2:]))
            y = y + self.shortcut_coef.reshape(1, -1, 1, 1) * self.cqb.shortcut(xf, tuple(y.shape[-2:]))
        return y

    def _fake_quant_float(self, x: torch.Tensor) -> torch.Tensor:
        p = self.in_plan
        if p is None:
            return self.thr(x) if self.thr is not None else x
        if p["kind"] == "uniform":
            q = torch.clamp(torch.round(x / p["scale"]) + p["zp"], 0, p["qmax"])
        else:
            t = torch.tensor(p["thresholds"], dtype=x.dtype).reshape(-1, *([1] * x.dim()))
            q = (x.unsqueeze(0) >= t).to(x.dtype).sum(0)
        return (q - p["zp"]) * p["scale"]


def _bias_window(b: torch.Tensor, m: torch.Tensor, k: torch.Tensor, zy: int, qmax: int):
    """Per channel, the interval [lo, hi) of biases (accumulator units) that decide every code as `b` does."""
    j = torch.arange(zy, qmax, dtype=torch.float64).reshape(1, -1)
    c = (j - zy + 0.5) / m.reshape(-1, 1)
    kk = k.reshape(-1, 1)
    n = torch.ceil((c - b.reshape(-1, 1)) / kk)
    return (c - kk * n).amax(1), (c - kk * (n - 1)).amin(1)


def exact_int_bias(b_float: torch.Tensor, sx_sw: torch.Tensor, y_scale: float, kmax: torch.Tensor, zy: int,
                   qmax: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel code multiplier K_c ≤ kmax_c and int32 bias deciding every output code exactly as the float bias.

    QLinearConv adds its bias in units of x_scale·w_scale; scaling a channel's codes by K (w_scale / K) makes the
    accumulator a multiple of K, so any integer bias B in ∩ⱼ [Cⱼ − K·⌈(Cⱼ−b)/K⌉, Cⱼ − K·(⌈(Cⱼ−b)/K⌉ − 1)),
    Cⱼ = (j − zy + ½)/M (the code boundaries zy..qmax−1 in accumulator units, M = x_scale·w_scale/y_scale),
    gives the same codes as b for every input. K is searched from kmax down; a channel with no exact (K, B)
    falls back to K = kmax, B = round(b). Returns (K, B, exact mask).
    """
    b0 = b_float.double().reshape(-1)  # bias in units of x_scale·w_scale_total (K = 1)
    sxsw = sx_sw.double().reshape(-1)
    n_ch = b0.numel()
    k_out = kmax.clone().to(torch.int64)
    b_out = torch.round(b0 * k_out).to(torch.float64)
    done = torch.zeros(n_ch, dtype=torch.bool)
    if qmax <= zy:
        return k_out, b_out.to(torch.int32), torch.ones(n_ch, dtype=torch.bool)
    for k in range(int(kmax.max()), 0, -1):
        todo = (~done) & (kmax >= k)
        if not todo.any():
            continue
        kt = torch.full((n_ch,), float(k), dtype=torch.float64)
        bk = b0 * k  # bias in units of x_scale·w_scale_total/K
        m = sxsw / k / y_scale
        lo, hi = _bias_window(bk, m, kt, zy, qmax)
        cand = torch.clamp(torch.round(bk), torch.ceil(lo), torch.ceil(hi) - 1)
        ok = todo & (cand >= lo) & (cand < hi)
        k_out[ok] = k
        b_out[ok] = cand[ok]
        done |= ok
        if done.all():
            break
    return k_out, b_out.clamp(-(2**31), 2**31 - 1).to(torch.int32), done


def exact_requant(b: float, m: float, kmax: int, zy: int, qmax: int, span: int, sx: float, sy: float
                  ) -> tuple[int, int, float] | None:
    """One channel's (K, integer bias B, QLinearConv weight scale) deciding every output code as the float model,
    when no integer bias does so at the true multiplier (`exact_int_bias` failed).

    Reference: code(a) = clip(round((a + b)·m) + zy, zy, qmax) over the reachable accumulators a ∈ [−span, span]
    (m = x_scale·w_scale/y_scale; ReLU clips at zy). Code j+1 starts at the integer N_j = ⌈(j − zy + ½)/m − b⌉.
    QLinearConv computes round((K·a + B)·m′) + zy; it starts code j+1 at ⌈((j − zy + ½)·u − B)/K⌉ with u = 1/m′,
    so for each boundary u must lie in ((K(N_j − 1) + B)/(j − zy + ½), (K·N_j + B)/(j − zy + ½)] — boundaries
    beyond the reachable range only need to stay beyond it. The multiplier is free (QLinearConv only ever uses
    x_scale·w_scale/y_scale), so for K ≤ kmax and B near b·K the middle of the intersection, if any, is taken and
    then checked on every reachable accumulator in ONNX Runtime's float32 arithmetic. None if nothing passes.
    """
    a = np.arange(-span, span + 1, dtype=np.float64)
    ref = np.clip(np.rint((a + b) * m) + zy, zy, qmax)
    js = np.arange(zy, qmax, dtype=np.float64)
    half = js - zy + 0.5
    n = np.ceil(half / m - b)
    for k in range(int(kmax), 0, -1):
        lo_b = np.where(n > span, (k * span + 0.0), k * (n - 1))  # beyond the top: stay beyond it
        hi_b = np.where(n <= -span, -k * span + 0.0, k * n)  # below the bottom: stay below it
        b0 = int(round(b * k))
        for db in (0, -1, 1, -2, 2, -3, 3):
            bb = b0 + db
            lo = float(np.max((lo_b + bb) / half))
            hi = float(np.min((hi_b + bb) / half))
            if not lo < hi:
                continue
            ws = np.float32((1.0 / ((lo + hi) / 2)) * sy / sx)
            m32 = (np.float32(sx) * ws) / np.float32(sy)  # ORT: x_scale * w_scale / y_scale, in float32
            acc = (k * a + bb).astype(np.float32)
            got = np.clip(np.rint(acc * m32) + zy, zy, qmax)
            if np.array_equal(got, ref):
                return k, bb, float(ws)
    return None


class _ThresholdAct(nn.Module):
    """Exportable eval form of any threshold quantizer (incl. per-channel RSign): levels[Σ[x ≥ t]]."""

    def __init__(self, iq: nn.Module):
        super().__init__()
        v = iq.integer_view()
        self.per_channel = v["type"] == "sign"
        self.register_buffer("t", v["thresholds"].float().clone())
        self.register_buffer("levels", v["levels"].float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            k = (x >= self.t.reshape(1, -1, *([1] * (x.dim() - 2)))).to(x.dtype)
            return self.levels[0] + k * (self.levels[1] - self.levels[0])
        t = self.t.reshape(-1, *([1] * x.dim()))
        k = (x.unsqueeze(0) >= t).to(x.dtype).sum(0)
        lv = self.levels
        return lv[0] + k * (lv[1] - lv[0]) if lv.numel() > 1 else lv[0] + 0 * x


class ExportLinear(nn.Module):
    """Eval form of a QuantLinear in float ops (the classifier is a few hundred MACs: no integer kernel needed)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        from fakelite.quant.quantizers import NoQuant

        iq = layer.input_quantizer
        self.iq = None if isinstance(iq, NoQuant) else iq
        self.register_buffer("w", layer.quantized_weight().detach().clone())
        self.register_buffer("b", layer.bias.detach().clone() if layer.bias is not None else torch.zeros(layer.out_features))
        ps = layer.post_scale if layer.post_scale is not None else None
        self.register_buffer("ps", None if ps is None else ps.detach().clone())
        self.register_buffer("pb", None if ps is None else layer.post_bias.detach().clone())
        self.plan = _act_plan(iq) if self.iq is not None else None
        self.thr = _ThresholdAct(iq) if self.iq is not None and self.plan is None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.plan
        if p is not None:
            if p["kind"] == "uniform":
                q = torch.clamp(torch.round(x / p["scale"]) + p["zp"], 0, p["qmax"])
            else:
                t = torch.tensor(p["thresholds"], dtype=x.dtype).reshape(-1, *([1] * x.dim()))
                q = (x.unsqueeze(0) >= t).to(x.dtype).sum(0)
            x = (q - p["zp"]) * p["scale"]
        elif self.thr is not None:
            x = self.thr(x)
        y = F.linear(x, self.w, self.b)
        if self.ps is not None:
            y = y * self.ps + self.pb
        return y


class _ExportBottleneck(nn.Module):
    def __init__(self, blk: nn.Module, strict: bool):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = blk.conv1, blk.conv2, blk.conv3
        self.downsample = blk.downsample
        _maybe_fuse(self.conv1, self.conv2, strict)
        _maybe_fuse(self.conv2, self.conv3, strict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = _apply(self.conv1, x)
        y = _apply(self.conv2, y)
        y = self.conv3(y)
        return F.relu(y + identity)


class _ExportBasic(nn.Module):
    def __init__(self, blk: nn.Module, strict: bool):
        super().__init__()
        self.conv1, self.conv2, self.downsample = blk.conv1, blk.conv2, blk.downsample
        _maybe_fuse(self.conv1, self.conv2, strict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.conv2(_apply(self.conv1, x))
        return F.relu(y + identity)


def _maybe_fuse(a: nn.Module, b: nn.Module, strict: bool = False) -> None:
    """Fuse a → b as QLinearConv; with `strict`, keep ConvInteger where any channel's bias would round."""
    if isinstance(a, ExportConv) and a.can_fuse_into(b):
        a.fuse_into(b, relu=True)
        if strict and a.inexact_channels:
            a.mode, a.fused_out, a.inexact_channels = "integer", None, 0


def _apply(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """conv → (folded BN) → ReLU; a fused ExportConv returns the consumer's codes (ReLU applied in integers)."""
    y = conv(x)
    return y if y.dtype == torch.uint8 else F.relu(y)


def integer_module(model: nn.Module, strict: bool = False) -> nn.Module:
    """The deploy form of a quantized model: BN folded, quant layers → ExportConv/ExportLinear, blocks fused.

    strict: only fuse into QLinearConv where every channel's integer bias is exact (bit-exact codes everywhere).
    """
    from fakelite.models.npr_resnet import BasicBlock, Bottleneck
    from fakelite.quant.layers import QuantConv2d, QuantLinear

    m = _folded_copy(model)
    for name, mod in list(m.named_modules()):
        if isinstance(mod, QuantConv2d):
            _set(m, name, ExportConv(mod, name))
        elif isinstance(mod, QuantLinear):
            _set(m, name, ExportLinear(mod))
    for name, mod in list(m.named_modules()):
        if isinstance(mod, Bottleneck):
            _set(m, name, _ExportBottleneck(mod, strict))
        elif isinstance(mod, BasicBlock):
            _set(m, name, _ExportBasic(mod, strict))
    return m.eval()


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def layer_modes(module: nn.Module) -> dict[str, str]:
    """{layer name: "qlinear" | "integer" | "float (reason)"} of an integer_module."""
    out = {}
    for m in module.modules():
        if isinstance(m, ExportConv):
            if m.mode == "float":
                out[m.name] = f"float ({m.reason})"
            elif m.mode == "qlinear" and m.inexact_channels:
                out[m.name] = f"qlinear ({m.inexact_channels} channels with a rounded bias)"
            else:
                out[m.name] = m.mode
    return out


def export_integer(model: nn.Module, path: str | Path, size: int | None = None, strict: bool = False) -> dict[str, Any]:
    """Integer ONNX of a quantized model. Returns {"path", "layers": {name: mode}, "ops": Counter of op types}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not getattr(model, "fakelite_quant", None):
        raise ValueError("export_integer needs a quantized model (fakelite quantize); use int8 static for FP models")
    mod = integer_module(model, strict)
    _torch_export(mod, path, size or model.preprocess.crop)
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
        _torch_export(_folded_copy(model), fp, size or model.preprocess.crop)
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
                size: int | None = None, strict: bool = False, qdq: bool = False) -> dict[str, Any]:
    """Export any fakelite model: quantized → integer graph (`qdq=True`: the standard QDQ graph that ONNX Runtime
    and OpenVINO both fuse, `fakelite.deploy.qdq`); FP → FP32, or int8-static (a QDQ graph) with `int8=True`."""
    if getattr(model, "fakelite_quant", None) and qdq:
        from fakelite.deploy.qdq import export_qdq

        return export_qdq(model, path, size, strict)
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


# ----------------------------------------------------------------------------- inspection and parity


def op_counts(path: str | Path) -> dict[str, int]:
    import onnx

    m = onnx.load(str(path))
    return dict(Counter(n.op_type for n in m.graph.node))


def optimized_op_counts(path: str | Path) -> dict[str, int]:
    """Op types of the graph ORT actually runs (after its fusions, e.g. QDQ groups → QLinearConv)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "opt.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(out)
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        m = onnx.load(str(out))
    return dict(Counter(n.op_type for n in m.graph.node))


def parity(model: nn.Module, path: str | Path, inputs: torch.Tensor) -> dict[str, Any]:
    """Compare the PyTorch model and the ONNX file on `inputs` (N, 3, H, W): max |logit diff|, decisions."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model.eval()(inputs).reshape(-1).double().numpy()
    got = np.concatenate([sess.run(None, {"input": inputs[i : i + 1].numpy()})[0].reshape(-1)
                          for i in range(len(inputs))]).astype(np.float64)
    return parity_report(ref, got, float(getattr(model, "threshold", 0.5)))


def parity_report(ref: np.ndarray, got: np.ndarray, threshold: float) -> dict[str, Any]:
    """Reference vs deployed logits: max/mean |difference| and how many decisions agree at `threshold` (a score
    threshold, compared in logit space). Shared by the ONNX and LiteRT parity checks."""
    lt = float(np.log(threshold / (1 - threshold))) if 0 < threshold < 1 else 0.0
    d = np.abs(ref - got)
    return {"n": int(len(ref)), "max_abs_logit_diff": float(d.max()) if len(d) else 0.0,
            "mean_abs_logit_diff": float(d.mean()) if len(d) else 0.0,
            "same_decisions": int(((ref >= lt) == (got >= lt)).sum()), "threshold": threshold}
