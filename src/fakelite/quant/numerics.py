"""All quantizer maths in one place: pure functions and autograd Functions, no state.

Conventions
- Integer grids: `qrange(bits, signed)` → (qmin, qmax); signed = [−2^(b−1), 2^(b−1)−1], unsigned = [0, 2^b−1].
- Fake quantization returns float tensors on the grid (x̂ = scale·(q − zero_point)); STE = straight-through.
- Weight codes for packing are always *unsigned* integers in [0, 2^b − 1]; `decode_weight` maps them back.

Quantizers (formulas; the modules in quantizers.py only hold their parameters):
- Uniform affine (MinMax, percentile, LSQ, LSQ+): x̂ = s·(clamp(round(x/s) + z, qmin, qmax) − z).
  LSQ learns s with the gradient scale g = 1/√(N·Qp) and s₀ = 2·mean|x|/√Qp (Esser et al., 2020); the
  step-size gradient equals `torch._fake_quantize_learnable_per_tensor_affine` (tested).
- N2UQ activations (Liu et al., 2022): interval bounds b₀ = start, bᵢ = start + a₁ + … + aᵢ; thresholds at interval
  midpoints; code k = #{thresholds ≤ x}; output Δ·k (+ offset for signed inputs). Backward: generalised STE —
  the continuous G(x) = (i−1) + (x − b_{i−1})/aᵢ in interval i, so ∂x̂/∂x = Δ/aᵢ and every aⱼ, start get gradients.
- N2UQ weights: S = γ·mean|W_c| (γ = (2^b−1)/2^(b−1)), w̃ = clip(W/S, ±c/2), uniform grid of 2^b points on
  [−c/2, c/2]: q = round((w̃ + c/2)·n)/n − c/2, n = (2^b−1)/c; Ŵ = S·q (STE; c gets gradient through the clip).
- SLR (QMDD eqs. 10–11): off = min(max|X|, ε) + τ; quantize u = ln(X + off) with a base quantizer.
  Thresholds fold: t' = exp(t) − off, so inference compares X with t' directly (`slr_fold_thresholds`).
- Binary (ReActNet): RSign sign(x − α_c) with ApproxSign gradient (2+2x on [−1,0), 2−2x on [0,1), 0 else);
  weights sign(W)·mean|W_c| with the clipped STE (gradient 1 on |W| ≤ 1).
- VEFT rows (DeFakeQ): symmetric per-row codes q = clamp(round(row/s_r), −Qp−1, Qp), s_r = max|row_r|/Qp (floor
  1e−12), stored as int8 + one float scale per row; STE form while the rows are fine-tuned.
"""

from __future__ import annotations

import math

import torch

# ----------------------------------------------------------------------------- grids and helpers


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range of a b-bit grid."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, not {bits}")
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """Value x, gradient multiplied by g (LSQ's step-size gradient scaling)."""
    y = x * g
    return (x - y).detach() + y


def lsq_grad_factor(numel: int, qmax: int) -> float:
    """LSQ gradient scale g = 1/√(N·Qp)."""
    return 1.0 / math.sqrt(max(1, numel) * max(1, qmax))


def lsq_init_step(x: torch.Tensor, qmax: int, dim: tuple[int, ...] | None = None) -> torch.Tensor:
    """LSQ's initial step s₀ = 2·mean|x|/√Qp (over all of x, or over `dim`)."""
    m = x.detach().abs().mean() if dim is None else x.detach().abs().mean(dim=dim)
    return (2.0 * m / math.sqrt(max(1, qmax))).clamp_min(1e-8)


def _bcast(t: torch.Tensor, like: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Reshape a per-channel vector to broadcast along `axis` of `like` (per-tensor scalars pass through)."""
    if t.numel() == 1:
        return t.reshape([1] * like.dim()) if like.dim() else t.reshape(())
    shape = [1] * like.dim()
    shape[axis] = -1
    return t.reshape(shape)


# ----------------------------------------------------------------------------- uniform affine (MinMax, LSQ)


def fake_quant_affine(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | float, qmin: int, qmax: int,
                      grad_factor: float | None = None, axis: int = 0) -> torch.Tensor:
    """x̂ = s·(clamp(round(x/s) + z, qmin, qmax) − z) with STE for round.

    `scale` is a scalar or a per-channel vector along `axis` (broadcast). If `grad_factor` is given the step
    gets LSQ's scaled gradient (in range: round(x/s) − x/s; clipped: qmin−z or qmax−z, times g).
    `zero_point` may be a tensor with gradient; it is rounded with STE so the grid stays integer.
    """
    s = _bcast(scale, x, axis)
    if grad_factor is not None:
        s = grad_scale(s, grad_factor)
    if isinstance(zero_point, torch.Tensor):
        z = _bcast(round_ste(zero_point), x, axis)
    else:
        z = float(zero_point)
    q = torch.clamp(round_ste(x / s) + z, qmin, qmax)
    return (q - z) * s


def affine_codes(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | float, qmin: int, qmax: int,
                 axis: int = 0) -> torch.Tensor:
    """Integer codes (int64, in [qmin, qmax]) of the affine grid (no gradient)."""
    s = _bcast(scale.detach(), x, axis)
    z = _bcast(torch.round(zero_point.detach()), x, axis) if isinstance(zero_point, torch.Tensor) else float(zero_point)
    return torch.clamp(torch.round(x.detach() / s) + z, qmin, qmax).to(torch.int64)


def affine_thresholds(scale: torch.Tensor, zero_point: torch.Tensor | float, qmin: int, qmax: int) -> torch.Tensor:
    """Input thresholds of a per-tensor affine grid: code ≥ k ⇔ x ≥ s·(k − ½ − z), k = qmin+1..qmax.

    (torch.round rounds halves to even, so exact ties may differ from ≥; a measure-zero set.)
    """
    z = float(torch.round(zero_point).item()) if isinstance(zero_point, torch.Tensor) else float(zero_point)
    k = torch.arange(qmin + 1, qmax + 1, dtype=torch.float32)
    return scale.detach().reshape(()) * (k - 0.5 - z)


def affine_levels(scale: torch.Tensor, zero_point: torch.Tensor | float, qmin: int, qmax: int) -> torch.Tensor:
    """Output values s·(k − z) for k = qmin..qmax (per-tensor)."""
    z = float(torch.round(zero_point).item()) if isinstance(zero_point, torch.Tensor) else float(zero_point)
    k = torch.arange(qmin, qmax + 1, dtype=torch.float32)
    return scale.detach().reshape(()) * (k - z)


def minmax_affine_params(lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero point covering [lo, hi] (range widened to include 0, as usual)."""
    lo = torch.minimum(lo, torch.zeros_like(lo))
    hi = torch.maximum(hi, torch.zeros_like(hi))
    scale = ((hi - lo) / float(qmax - qmin)).clamp_min(1e-8)
    zp = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax)
    return scale, zp


def symmetric_scale(absmax: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-channel symmetric scale max|W|/Qp (signed grid [−Qn, Qp]; −Qn is then unused)."""
    _, qmax = qrange(bits, True)
    return (absmax / max(1, qmax)).clamp_min(1e-8)


def symmetric_row_codes(rows: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row codes (int8, shape of `rows`) and scales (float32, one per row) for `bits` ≤ 8.

    s_r = max(max|row_r| / Qp, 1e−12), code = clamp(round(row/s_r), −Qp−1, Qp), Qp = 2^(b−1) − 1 (DeFakeQ VEFT rows;
    `dequantize_rows` maps them back). No gradient.
    """
    qmin, qp = qrange(bits, True)
    flat = rows.detach().reshape(rows.shape[0], -1).float()
    scale = (flat.abs().amax(1) / qp).clamp_min(1e-12)
    codes = torch.clamp(torch.round(flat / scale[:, None]), qmin, qp).to(torch.int8)
    return codes.reshape(rows.shape), scale


def dequantize_rows(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """codes·s_r with one scale per row (the inverse of `symmetric_row_codes`), float32."""
    return codes.float() * scale.reshape([-1] + [1] * (codes.dim() - 1))


def fake_quant_rows(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-row symmetric fake quantization with STE: the float form of `symmetric_row_codes` (same grid and
    scales, the scale taken from the detached rows), gradient identity to x (VEFT fine-tuning)."""
    qmin, qp = qrange(bits, True)
    flat = x.reshape(x.shape[0], -1)
    s = (flat.detach().abs().amax(1) / qp).clamp_min(1e-12).reshape([-1] + [1] * (x.dim() - 1))
    q = torch.clamp(torch.round(x / s), qmin, qp) * s
    return x + (q - x).detach()


def percentile(x: torch.Tensor, q: float, max_elems: int = 1 << 20) -> torch.Tensor:
    """q-th percentile (0..100) of x, on a deterministic strided subsample when x is huge."""
    flat = x.detach().reshape(-1).float()
    if flat.numel() > max_elems:
        step = -(-flat.numel() // max_elems)
        flat = flat[::step]
    return torch.quantile(flat, q / 100.0)


# ----------------------------------------------------------------------------- N2UQ


def n2uq_bounds(start: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Interval bounds b₀ = start, bᵢ = start + Σ_{j≤i} aⱼ (length n + 1, differentiable)."""
    return torch.cat([start.reshape(1), start.reshape(1) + torch.cumsum(a, 0)])


def n2uq_thresholds(start: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Forward thresholds: the interval midpoints b_{i−1} + aᵢ/2 (length n)."""
    b = n2uq_bounds(start, a)
    return b[:-1] + a / 2


def n2uq_floor(a: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """Intervals are kept ≥ floor (N2UQ's 1e-3)."""
    return torch.clamp(a, min=floor)


def n2uq_act_codes(x: torch.Tensor, start: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Code k = #{thresholds ≤ x} ∈ 0..n (int64)."""
    t = n2uq_thresholds(start.detach(), n2uq_floor(a.detach())).contiguous()
    return torch.bucketize(x.detach().contiguous(), t, right=True)


def n2uq_act(x: torch.Tensor, start: torch.Tensor, a: torch.Tensor, delta: torch.Tensor,
             offset: torch.Tensor | None = None) -> torch.Tensor:
    """N2UQ activation quantizer with the generalised STE.

    Forward: Δ·k (+ offset), k = number of interval midpoints ≤ x. Backward: through G(x), the piecewise-linear
    map with slope 1/aᵢ in interval i (0 outside [b₀, b_n]), so ∂/∂x = Δ/aᵢ and a, start get gradients.
    """
    a = n2uq_floor(a)
    n = a.numel()
    bounds = n2uq_bounds(start, a)
    k = torch.bucketize(x.detach().contiguous(), (bounds[:-1] + a / 2).detach().contiguous(), right=True)
    i = torch.bucketize(x.detach().contiguous(), bounds[1:-1].detach().contiguous(), right=True)  # interval 0..n-1
    inner = i.to(x.dtype) + (x - bounds[i]) / a[i]
    g = torch.where(x < bounds[0], torch.zeros_like(inner), torch.where(x >= bounds[-1], torch.full_like(inner, n), inner))
    y = delta.reshape(()) * (g + (k.to(x.dtype) - g).detach())
    if offset is not None:
        y = y + offset.reshape(())
    return y


def n2uq_weight_gamma(bits: int) -> float:
    """γ = (2^b − 1)/2^(b−1)."""
    return (2**bits - 1) / 2 ** (bits - 1)


def n2uq_weight_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel S = γ·mean|W_c| (no gradient)."""
    return (n2uq_weight_gamma(bits) * w.detach().abs().reshape(w.shape[0], -1).mean(1)).clamp_min(1e-8)


def n2uq_weight(w: torch.Tensor, scale: torch.Tensor, clip: torch.Tensor, bits: int) -> torch.Tensor:
    """Ŵ = S·(round((w̃ + c/2)·n)/n − c/2), w̃ = clip(W/S, ±c/2), n = (2^b−1)/c; STE to W, c via the clip."""
    s = _bcast(scale.detach(), w)
    c = clip.reshape(())
    wt = w / s
    wc = torch.where(wt < c / 2, wt, c / 2)
    wc = torch.where(wc > -c / 2, wc, -c / 2)
    n = (2**bits - 1) / c
    q = torch.round((wc + c / 2) * n) / n - c / 2
    return s * (wc + (q - wc).detach())


def n2uq_weight_codes(w: torch.Tensor, scale: torch.Tensor, clip: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned codes k ∈ 0..2^b−1 with Ŵ = S·(k/n − c/2)."""
    s = _bcast(scale.detach(), w)
    c = clip.detach().reshape(())
    wt = (w.detach() / s).clamp(-c / 2, c / 2)
    n = (2**bits - 1) / c
    return torch.clamp(torch.round((wt + c / 2) * n), 0, 2**bits - 1).to(torch.int64)


# ----------------------------------------------------------------------------- SLR


def slr_offset(max_abs: torch.Tensor, eps: float, tau: torch.Tensor) -> torch.Tensor:
    """off = min(max|X|, ε) + τ (QMDD eq. 10, literal reading)."""
    return torch.clamp(max_abs.detach().reshape(()), max=eps) + tau.reshape(())


def slr_log(x: torch.Tensor, off: torch.Tensor, tiny: float = 1e-6) -> torch.Tensor:
    """u = ln(X + off); X + off is floored at `tiny` so values below −off map to the lowest code."""
    return torch.log(torch.clamp(x + off, min=tiny))


def slr_fold_thresholds(t: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    """Thresholds in the input domain: t' = exp(t) − off (QMDD §3.5)."""
    return torch.exp(t) - off.detach().reshape(())


def threshold_quant(x: torch.Tensor, thresholds: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Look-up quantizer: code = #{t ≤ x}, output levels[code] (no gradient; the inference form)."""
    k = torch.bucketize(x.detach().contiguous(), thresholds.detach().contiguous(), right=True)
    return levels.detach().to(x.dtype)[k]


# ----------------------------------------------------------------------------- binary (ReActNet)


class ApproxSign(torch.autograd.Function):
    """sign(x) (with sign(0) = +1) forward; ReActNet/Bi-Real ApproxSign gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        g = torch.zeros_like(x)
        g = torch.where((x >= -1) & (x < 0), 2 + 2 * x, g)
        g = torch.where((x >= 0) & (x < 1), 2 - 2 * x, g)
        return grad * g


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    return ApproxSign.apply(x)


def rsign(x: torch.Tensor, alpha: torch.Tensor, channel_axis: int = 1) -> torch.Tensor:
    """ReActNet RSign: sign(x − α_c) with a learnable per-channel threshold α."""
    return approx_sign(x - _bcast(alpha, x, channel_axis))


def binary_weight_scale(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel mean|W_c|."""
    return w.detach().abs().reshape(w.shape[0], -1).mean(1)


def binary_weight(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Ŵ = S·sign(W) forward; gradient 1 on |W| ≤ 1 (clipped STE, as ReActNet)."""
    s = _bcast(scale.detach(), w)
    sign = torch.where(w.detach() >= 0, torch.ones_like(w), -torch.ones_like(w))
    wc = torch.clamp(w, -1.0, 1.0)
    return (s * sign).detach() + (wc - wc.detach())


def binary_weight_codes(w: torch.Tensor) -> torch.Tensor:
    """Code 1 for W ≥ 0, 0 otherwise."""
    return (w.detach() >= 0).to(torch.int64)


# ----------------------------------------------------------------------------- weight decoding (packing)


DECODE_STATE = {"affine": ("scale",), "n2uq": ("scale", "clip"), "binary": ("scale",)}


def decode_weight(kind: str, codes: torch.Tensor, bits: int, state: dict[str, torch.Tensor],
                  shape: tuple[int, ...]) -> torch.Tensor:
    """Latent float weight from unsigned codes and the quantizer's stored state.

    The result re-quantizes to the same codes (tested per kind), so the float latent need not be stored:
    - "affine" (minmax/percentile/lsq weights): W = s_c·(code + qmin), state {"scale"}.
    - "n2uq": W = S_c·(code/n − c/2), n = (2^b−1)/c, state {"scale", "clip"}.
    - "binary": W = S_c·(2·code − 1), state {"scale"}.
    """
    codes = codes.reshape(shape).to(torch.float32)
    s = state["scale"].to(torch.float32).reshape([-1] + [1] * (len(shape) - 1))
    if kind == "affine":
        qmin, _ = qrange(bits, True)
        return s.clamp_min(1e-8) * (codes + qmin)
    if kind == "n2uq":
        c = state["clip"].to(torch.float32).reshape(())
        n = (2**bits - 1) / c
        return s * (codes / n - c / 2)
    if kind == "binary":
        return s * (2 * codes - 1)
    raise ValueError(f"unknown weight code kind {kind!r}")
