"""Integer-kernel maths of a quantized model: input codes, exact accumulators, integer biases, requantization.

What every integer deploy form (`fakelite.deploy.lowering` and the exporters built on it) computes, as pure
functions of a *plan* (plain dicts of numbers and tensors, no modules):

- an input quantizer's integer plan (`act_plan`): uniform (code = clamp(round(x/s) + z, 0, qmax)) or a threshold
  count (code k = #{tᵢ ≤ x}, uniform output levels Δ·(k − z)); its codes (`act_codes`) and the float values of
  those codes (`act_fake_quant`);
- the exact integer accumulator Σ (x_code − x_zp)·w_code of a conv plan (`integer_accumulator`) and the two
  kernels built on it, in ONNX Runtime's arithmetic: QLinearConv (int32 bias, float32 requantization multiplier,
  round half to even, zero point, clip: `qlinear_requant`) and ConvInteger + per-channel dequantization
  (`conv_integer_dequant`);
- the integer bias and multiplier of a fused conv whose requantization is the next layer's input quantizer,
  chosen so every output code is decided exactly as by the float bias (`fused_requant`, `exact_int_bias`,
  `exact_requant`).

Quantizer formulas themselves live in `fakelite.quant.numerics`; this module holds the integer-kernel side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import NoQuant

# ----------------------------------------------------------------------------- input codes


def act_plan(iq: nn.Module) -> dict[str, Any] | None:
    """Integer plan of an input quantizer: uniform (round) or thresholds; None = no integer form (float)."""
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


def act_codes(x: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
    """uint8 codes of `x` (any shape) under an `act_plan`: clamp(round(x/s) + z, 0, qmax) or #{tᵢ ≤ x}."""
    if plan["kind"] == "uniform":
        q = torch.clamp(torch.round(x / plan["scale"]) + plan["zp"], 0, plan["qmax"])
    else:
        t = torch.tensor(plan["thresholds"], dtype=x.dtype).reshape(-1, *([1] * x.dim()))
        q = (x.unsqueeze(0) >= t).sum(0)
    return q.to(torch.uint8)


def act_fake_quant(x: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
    """The float values (code − z)·s of `x`'s codes under an `act_plan`, in float ops (traceable)."""
    if plan["kind"] == "uniform":
        q = torch.clamp(torch.round(x / plan["scale"]) + plan["zp"], 0, plan["qmax"])
    else:
        t = torch.tensor(plan["thresholds"], dtype=x.dtype).reshape(-1, *([1] * x.dim()))
        q = (x.unsqueeze(0) >= t).to(x.dtype).sum(0)
    return (q - plan["zp"]) * plan["scale"]


# ----------------------------------------------------------------------------- integer convs


def integer_accumulator(xq: torch.Tensor, p: dict[str, Any], dtype: torch.dtype) -> torch.Tensor:
    """Σ (x_code − x_zp)·w_code of an integer conv plan, exact: float64 for any int8 layer; float32 (what
    torch.export can lower) while the sums stay below 2²⁴. xq: (N, C, H, W) codes; returns (N, O, H', W')."""
    return F.conv2d(xq.to(dtype) - p["x_zp"], p["codes"].to(dtype), None, tuple(p["stride"]), tuple(p["padding"]),
                    tuple(p["dilation"]), p["groups"])


def qlinear_requant(xq: torch.Tensor, p: dict[str, Any], acc_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """QLinearConv in ONNX Runtime's arithmetic: exact int32 accumulator + int32 bias, times the float32
    requantization scale x_scale·w_scale/y_scale (computed in float32, in that order), rounded half to even,
    + zero point, clipped. Returns uint8 codes of the consumer's quantizer."""
    acc = integer_accumulator(xq, p, acc_dtype) + p["bias_q"].to(acc_dtype).reshape(1, -1, 1, 1)
    scale = (torch.tensor(p["x_scale"], dtype=torch.float32) * p["w_scale"].float()) / torch.tensor(
        p["y_scale"], dtype=torch.float32)
    q = torch.round(acc.float() * scale.reshape(1, -1, 1, 1)) + p["y_zp"]
    return torch.clamp(q, p["clip_lo"], p["clip_hi"]).to(torch.uint8)


def conv_integer_dequant(xq: torch.Tensor, p: dict[str, Any], acc_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """ConvInteger → per-channel scale + bias: exact accumulator, then scale and bias in float32 (float result)."""
    y = integer_accumulator(xq, p, acc_dtype).float() * p["deq_scale"].reshape(1, -1, 1, 1)
    return y if p["bias"] is None else y + p["bias"].reshape(1, -1, 1, 1)


# ----------------------------------------------------------------------------- exact integer bias / requantization


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


def fused_requant(codes: torch.Tensor, w_scale_total: torch.Tensor, bias_total: torch.Tensor,
                  in_plan: dict[str, Any], in_zp_int: int, out_plan: dict[str, Any], relu: bool
                  ) -> dict[str, Any]:
    """Integer weights, bias and multiplier of a conv requantized straight to the next layer's uniform codes.

    codes: (O, C/g, kh, kw) int32 weight codes with per-channel scale `w_scale_total` (float64, BN and α folded)
    and float bias `bias_total` (float64, (O,)); in_plan / out_plan: the `act_plan` of this conv's input and of
    the consumer's input quantizer; relu: clip at the consumer's zero point. QLinearConv's bias is int32 in units
    of x_scale·w_scale, so a float bias would round; `exact_int_bias` picks per channel a code multiplier K (codes·K
    still int8, w_scale/K) and an integer bias that decide every output code exactly as the float bias does, and
    with ReLU the channels still inexact also move the requantization multiplier (`exact_requant`).
    Returns {"codes" (int32, ·K), "w_scale" (float32), "bias_q" (int32), "exact" (bool mask), "w_u8"}.
    """
    sx = in_plan["scale"]
    zy, qmax = int(out_plan["zp"]), int(out_plan["qmax"])
    cmax = codes.abs().reshape(codes.shape[0], -1).amax(1).clamp_min(1)
    kmax = (127 // cmax).clamp_min(1)
    sy = float(out_plan["scale"])
    b_units = bias_total / (sx * w_scale_total)
    k, bias_q, exact = exact_int_bias(b_units, sx * w_scale_total, sy, kmax, zy, qmax)
    w_scale = w_scale_total / k.double()
    if relu:  # channels whose bias would round: also move the requantization multiplier (exact_requant)
        x_span = max(in_zp_int, int(in_plan["qmax"]) - in_zp_int)
        sums = codes.abs().reshape(codes.shape[0], -1).sum(1)
        for c in torch.nonzero(~exact).reshape(-1).tolist():
            found = exact_requant(float(b_units[c]), float(sx * w_scale_total[c] / sy), int(kmax[c]), zy,
                                  qmax, x_span * int(sums[c]), float(sx), sy)
            if found is not None:
                k[c], bias_q[c], w_scale[c] = found
                exact[c] = True
    codes = codes * k.reshape(-1, 1, 1, 1).to(torch.int32)
    w_u8 = 2 * in_plan["qmax"] * int(codes.abs().max()) > 32767  # u8×s8 pair sums could saturate (AVX2)
    return {"codes": codes, "w_scale": w_scale.float(), "bias_q": bias_q, "exact": exact, "w_u8": w_u8}
