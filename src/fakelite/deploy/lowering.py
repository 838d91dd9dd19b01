"""Backend-neutral lowering of a quantized model to its integer deploy form; the backend's kernels are passed in.

`lower(model, kernels)` folds BatchNorm, puts NPR in the graph and replaces every quantized layer by its deploy
form (integer plans from `fakelite.quant.integer`):

* `ExportConv` — one BN-folded QuantConv2d: the input quantizer becomes uint8 codes (`kernels.quant_act`); a conv
  whose output goes, through its folded BN and ReLU, only into the next quantized conv's uniform input quantizer
  (inside the residual blocks) is *fused*: it requantizes straight to the consumer's codes
  (`kernels.qlinear_conv`, integer bias and multiplier by `fakelite.quant.integer.fused_requant`); where the
  result must stay float (residual sums, CQB shortcuts, threshold-kind consumers, the stem) it is an exact
  integer accumulator rescaled per channel (`kernels.conv_integer`). Layers with no exact integer form (binary
  inputs on padded convs, full-precision weights) run their fake-quant float computation (`layer_modes`).
* `ExportLinear` — the classifier in float ops (a few hundred MACs).

What a kernel *is* in the exported file is the backend's business, as Brevitas' export handlers and ONNX
Runtime's quantization registry do it: a `Kernels` is the set of three callables (x, plan key) → tensor (plus an
optional CQB shortcut form). `fakelite.deploy.onnx` passes ORT integer ops (QLinearConv, ConvInteger,
MatMulIntegerToFloat), `fakelite.deploy.qdq` standard QDQ ops, `fakelite.deploy.litert` the float emulation
below (`FLOAT32_KERNELS`, which torch.export traces; `FLOAT64_KERNELS` is the exact reference).
`traced_kernel` builds an ONNX-exportable kernel from an emulation (what runs in PyTorch) and a symbolic (what
the TorchScript exporter writes).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fakelite.models.npr_resnet import NPR, NPR_SCALE, BasicBlock, Bottleneck, npr_even
from fakelite.quant import QuantConv2d, QuantLinear, fold_bn, integer_view
from fakelite.quant.integer import (
    act_codes,
    act_fake_quant,
    act_plan,
    conv_integer_dequant,
    fused_requant,
    qlinear_requant,
)
from fakelite.quant.quantizers import NoQuant
from fakelite.utils.modules import set_module

# ----------------------------------------------------------------------------- kernels

_PLANS: dict[int, dict[str, Any]] = {}
_KEYS = itertools.count(1)

Kernel = Callable[[torch.Tensor, int], torch.Tensor]


def register_plan(plan: dict[str, Any]) -> int:
    """Store a kernel plan; the returned key is what the kernels receive (a plain int traces as a constant)."""
    key = next(_KEYS)
    _PLANS[key] = plan
    return key


def plan_of(key: int) -> dict[str, Any]:
    """The plan registered under `key`."""
    return _PLANS[key]


@dataclass(frozen=True)
class Kernels:
    """The kernels of one backend: each takes (input, plan key) and returns the kernel's output.

    quant_act: float → uint8 codes of an input quantizer (`fakelite.quant.integer.act_codes`);
    qlinear_conv: uint8 codes → the consumer's uint8 codes (`qlinear_requant`);
    conv_integer: uint8 codes → float (`conv_integer_dequant`);
    cqb_shortcut: (x float, cqb, coef, out_hw) → coef·shortcut(x), a form of the CQB shortcut the backend runs
    fast; None = the CQB's own ops.
    """

    name: str
    quant_act: Kernel
    qlinear_conv: Kernel
    conv_integer: Kernel
    cqb_shortcut: Callable[[torch.Tensor, nn.Module, torch.Tensor, tuple[int, int]], torch.Tensor] | None = None


class _no_trace:
    """Run an autograd.Function's emulation untraced (its symbolic, not its body, describes the graph)."""

    def __enter__(self) -> None:
        self.state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)

    def __exit__(self, *exc: Any) -> None:
        torch._C._set_tracing_state(self.state)


def traced_kernel(name: str, emulate: Callable[[torch.Tensor, dict[str, Any]], torch.Tensor],
                  symbolic: Callable[[Any, Any, dict[str, Any]], Any]) -> Kernel:
    """A kernel for the TorchScript ONNX exporter: an autograd.Function named `name` whose forward is
    `emulate(x, plan)` (run untraced) and whose symbolic is `symbolic(g, x, plan)` (the ops it writes)."""

    def forward(ctx, x: torch.Tensor, key: int) -> torch.Tensor:
        with _no_trace():
            return emulate(x.detach(), _PLANS[key])

    def sym(g, x, key: int):
        return symbolic(g, x, _PLANS[key])

    fn = type(name, (torch.autograd.Function,), {"forward": staticmethod(forward), "symbolic": staticmethod(sym),
                                                 "__doc__": f"Integer kernel {name} (`traced_kernel`)."})
    return fn.apply


def emulated_act(x: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
    """The quant_act emulation of the traced kernels (on a copy of x)."""
    return act_codes(x.clone(), plan)


def emulated_qlinear(xq: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
    """The qlinear_conv emulation of the traced kernels (exact float64 accumulator)."""
    return qlinear_requant(xq, plan, torch.float64)


def emulated_conv_integer(xq: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
    """The conv_integer emulation of the traced kernels (exact float64 accumulator)."""
    return conv_integer_dequant(xq, plan, torch.float64)


def emulation_kernels(acc_dtype: torch.dtype) -> Kernels:
    """The integer kernels as plain torch ops with `acc_dtype` accumulators (no symbolic: what runs is the graph)."""
    return Kernels(
        f"{str(acc_dtype).removeprefix('torch.')}-emulation",
        quant_act=lambda x, key: act_codes(x, _PLANS[key]),
        qlinear_conv=lambda xq, key: qlinear_requant(xq, _PLANS[key], acc_dtype),
        conv_integer=lambda xq, key: conv_integer_dequant(xq, _PLANS[key], acc_dtype),
    )


# exact for any int8 layer: the reference the exported graphs are compared with (and ExportConv's default)
FLOAT64_KERNELS = emulation_kernels(torch.float64)
# what torch.export can lower (LiteRT): codes and accumulators stay exact in float32 while the sums are < 2²⁴
FLOAT32_KERNELS = emulation_kernels(torch.float32)


# ----------------------------------------------------------------------------- FP pieces


class NPRExport(nn.Module):
    """NPR × 2/3 without the odd-size trim (a full copy in ONNX): exported graphs take even H, W — the
    Detector's preprocessing (`to_tensor`) already trims odd sizes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return npr_even(x) * NPR_SCALE


def folded_copy(model: nn.Module) -> nn.Module:
    """An eval copy of `model` with BatchNorm folded and NPR as `NPRExport` (the FP deploy form)."""
    m = copy.deepcopy(model).eval()
    for name, mod in list(m.named_modules()):
        if isinstance(mod, NPR):
            set_module(m, name, NPRExport())
    return fold_bn(m)


# ----------------------------------------------------------------------------- quantized layers


class ThresholdAct(nn.Module):
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
        iq = layer.input_quantizer
        self.iq = None if isinstance(iq, NoQuant) else iq
        self.register_buffer("w", layer.quantized_weight().detach().clone())
        self.register_buffer("b", layer.bias.detach().clone() if layer.bias is not None else torch.zeros(layer.out_features))
        ps = layer.post_scale if layer.post_scale is not None else None
        self.register_buffer("ps", None if ps is None else ps.detach().clone())
        self.register_buffer("pb", None if ps is None else layer.post_bias.detach().clone())
        self.plan = act_plan(iq) if self.iq is not None else None
        self.thr = ThresholdAct(iq) if self.iq is not None and self.plan is None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plan is not None:
            x = act_fake_quant(x, self.plan)
        elif self.thr is not None:
            x = self.thr(x)
        y = F.linear(x, self.w, self.b)
        if self.ps is not None:
            y = y * self.ps + self.pb
        return y


class ExportConv(nn.Module):
    """Deploy form of one BN-folded QuantConv2d: integer kernels where exact, its float computation otherwise.

    forward(x): x is float, or uint8 codes of this layer's input quantizer (produced by a fused predecessor).
    Fused (`fuse_into`), the result is the consumer's uint8 codes; otherwise float. The kernels that compute
    it are `kernels` (see `Kernels`).
    """

    def __init__(self, layer: nn.Module, name: str = "", kernels: Kernels | None = None):
        super().__init__()
        self.name = name
        self.kernels = kernels or FLOAT64_KERNELS
        v = integer_view(layer)
        self.in_plan = act_plan(layer.input_quantizer)
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
            self.in_key = register_plan(self.in_plan)
            self.int_key = register_plan({**self.geom, "codes": codes, "x_zp": self.in_zp_int,
                                          "x_max": self.in_plan["qmax"], "bias": bias,
                                          "x_scale": float(self.in_plan["scale"]), "w_scale": sw.float(),
                                          "deq_scale": (sw * self.in_plan["scale"]).float()})
        iq = layer.input_quantizer
        self.thr = ThresholdAct(iq) if self.in_plan is None and not isinstance(iq, NoQuant) else None
        self.fused_out: ExportConv | None = None
        self.fused_relu = False

    # -- fusion: this conv's output feeds only `consumer`'s uniform input quantizer (through ReLU if relu)
    def can_fuse_into(self, consumer: nn.Module) -> bool:
        return (isinstance(consumer, ExportConv) and self.mode == "integer" and consumer.mode == "integer"
                and self.shortcut_coef is None and consumer.shortcut_coef is None
                and consumer.in_plan["kind"] == "uniform")

    def fuse_into(self, consumer: ExportConv, relu: bool) -> None:
        """Become a requantizing conv whose output quantizer is `consumer`'s input quantizer (ReLU: clip at its
        zp), with the integer bias and multiplier of `fakelite.quant.integer.fused_requant` (exact codes)."""
        cp = consumer.in_plan
        zy, qmax = int(cp["zp"]), int(cp["qmax"])
        r = fused_requant(self.codes, self.w_scale_total, self.bias_total, self.in_plan, self.in_zp_int, cp, relu)
        self.mode = "qlinear"
        self.inexact_channels = int((~r["exact"]).sum())
        self.fused_out, self.fused_relu = consumer, relu
        self.ql_key = register_plan({
            **self.geom, "codes": r["codes"], "x_zp": self.in_zp_int, "x_scale": float(self.in_plan["scale"]),
            "w_scale": r["w_scale"], "y_scale": float(cp["scale"]), "y_zp": zy, "bias_q": r["bias_q"],
            "clip_lo": zy if relu else 0, "clip_hi": qmax, "w_u8": r["w_u8"],
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
        xq = x if x.dtype == torch.uint8 else self.kernels.quant_act(x, self.in_key)
        if self.mode == "qlinear":
            return self.kernels.qlinear_conv(xq, self.ql_key)
        y = self.kernels.conv_integer(xq, self.int_key)
        if self.border is not None:  # the position-dependent bias of a non-integer zero point (see __init__)
            g = self.geom
            ones = torch.ones_like(x[:, :1], dtype=torch.float32)
            y = y + F.conv2d(ones, self.border[0], self.border[1], g["stride"], g["padding"], g["dilation"])
        if self.shortcut_coef is not None:
            xf = self._float_input(x)
            if self.kernels.cqb_shortcut is not None:  # the same function in ops the backend runs fast
                return y + self.kernels.cqb_shortcut(xf, self.cqb, self.shortcut_coef, tuple(y.shape[-2:]))
            y = y + self.shortcut_coef.reshape(1, -1, 1, 1) * self.cqb.shortcut(xf, tuple(y.shape[-2:]))
        return y

    def _fake_quant_float(self, x: torch.Tensor) -> torch.Tensor:
        p = self.in_plan
        if p is None:
            return self.thr(x) if self.thr is not None else x
        return act_fake_quant(x, p)


# ----------------------------------------------------------------------------- blocks and the whole model


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
    """Fuse a → b (requantizing conv); with `strict`, keep the float-output kernel where any channel's bias would
    round."""
    if isinstance(a, ExportConv) and a.can_fuse_into(b):
        a.fuse_into(b, relu=True)
        if strict and a.inexact_channels:
            a.mode, a.fused_out, a.inexact_channels = "integer", None, 0


def _apply(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """conv → (folded BN) → ReLU; a fused ExportConv returns the consumer's codes (ReLU applied in integers)."""
    y = conv(x)
    return y if y.dtype == torch.uint8 else F.relu(y)


def lower(model: nn.Module, kernels: Kernels, strict: bool = False) -> nn.Module:
    """The deploy form of a quantized model: BN folded, quant layers → ExportConv/ExportLinear (running
    `kernels`), blocks fused.

    strict: only fuse where every channel's integer bias is exact (bit-exact codes everywhere).
    """
    m = folded_copy(model)
    for name, mod in list(m.named_modules()):
        if isinstance(mod, QuantConv2d):
            set_module(m, name, ExportConv(mod, name, kernels))
        elif isinstance(mod, QuantLinear):
            set_module(m, name, ExportLinear(mod))
    for name, mod in list(m.named_modules()):
        if isinstance(mod, Bottleneck):
            set_module(m, name, _ExportBottleneck(mod, strict))
        elif isinstance(mod, BasicBlock):
            set_module(m, name, _ExportBasic(mod, strict))
    return m.eval()


def layer_modes(module: nn.Module) -> dict[str, str]:
    """{layer name: "qlinear" | "integer" | "float (reason)"} of a lowered module."""
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
