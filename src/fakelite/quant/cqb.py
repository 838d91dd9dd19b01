"""Connected Quantized Block (QMDD §3.4, eqs. 6–9): a parameter-free full-precision shortcut beside each
quantized conv of a residual block, y = α·Q(conv(x)) + (1 − α)·shortcut(x).

shortcut(x), by the conv's channel change (pooling first, then the channel map):
- down (C_in > C_out, "dn"): average of each group of s = C_in/C_out consecutive input channels (eq. 7).
  Non-divisible ratios: adaptive averaging over channels (window [⌊c·C_in/C_out⌋, ⌈(c+1)·C_in/C_out⌉)).
- up (C_in < C_out, "up"): the input repeated s = C_out/C_in times along channels (concatenation, eq. 8).
  Non-divisible ratios: channel c takes input channel c mod C_in (tile, then truncate).
- equal ("eq"): average pooling (eq. 9). Depthwise convs are equal-channel.
Spatially, the shortcut is average-pooled with kernel = stride = the conv's stride (identity for stride 1, so
no blurring of NPR's pixel-level traces); a size mismatch (odd inputs, dilation) falls back to adaptive pooling.

α = sigmoid(θ) stays in (0, 1) — a convex mix, as the equations imply — one scalar per conv (per-tensor, the
paper's "learnable scalars"), initialised to α₀ = 0.9 (θ₀ = logit 0.9): the quantized path dominates at the start,
so a QAT run begins close to its full-precision initialisation and learns how much shortcut it needs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fakelite.models.mobilenetv3 import InvertedResidual, SqueezeExcite
from fakelite.models.npr_resnet import BasicBlock, Bottleneck


def channel_reduce(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Average consecutive groups of input channels down to `out_channels` (N, C, H, W)."""
    c = x.shape[1]
    if c % out_channels == 0:
        n, _, h, w = x.shape
        return x.reshape(n, out_channels, c // out_channels, h, w).mean(2)
    m = torch.zeros(out_channels, c, dtype=x.dtype, device=x.device)
    for o in range(out_channels):
        lo, hi = (o * c) // out_channels, -(-((o + 1) * c) // out_channels)
        m[o, lo:hi] = 1.0 / (hi - lo)
    return torch.einsum("oc,nchw->nohw", m, x)


def channel_repeat(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Repeat (tile) the channels up to `out_channels`: channel c ← input channel c mod C_in."""
    c = x.shape[1]
    if out_channels % c == 0:
        return x.repeat(1, out_channels // c, 1, 1)
    idx = torch.arange(out_channels, device=x.device) % c
    return x[:, idx]


def spatial_pool(x: torch.Tensor, stride: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """Average pooling matching the conv's stride; adaptive pooling if the size still differs."""
    if stride != (1, 1):
        x = F.avg_pool2d(x, kernel_size=stride, stride=stride, ceil_mode=True)
    if tuple(x.shape[-2:]) != tuple(out_hw):
        x = F.adaptive_avg_pool2d(x, out_hw)
    return x


class CQBShortcut(nn.Module):
    """The FP auxiliary path of one quantized conv and its learnable mixing weight α = sigmoid(θ)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int | tuple[int, int] = 1, alpha_init: float = 0.9):
        super().__init__()
        if not 0.0 < alpha_init < 1.0:
            raise ValueError(f"CQB alpha_init must be in (0, 1), got {alpha_init}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.stride = tuple(stride) if isinstance(stride, tuple | list) else (int(stride), int(stride))
        self.mode = "dn" if in_channels > out_channels else "up" if in_channels < out_channels else "eq"
        self.theta = nn.Parameter(torch.tensor(math.log(alpha_init / (1.0 - alpha_init))))

    @property
    def alpha(self) -> torch.Tensor:
        return torch.sigmoid(self.theta)

    def shortcut(self, x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        x = spatial_pool(x, self.stride, out_hw)
        if self.mode == "dn":
            return channel_reduce(x, self.out_channels)
        if self.mode == "up":
            return channel_repeat(x, self.out_channels)
        return x

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha
        return a * y + (1 - a) * self.shortcut(x, tuple(y.shape[-2:]))

    def describe(self) -> dict:
        return {"mode": self.mode, "alpha": float(self.alpha.detach()), "stride": list(self.stride),
                "in_channels": self.in_channels, "out_channels": self.out_channels}

    def extra_repr(self) -> str:
        return f"mode={self.mode}, {self.in_channels}->{self.out_channels}, stride={self.stride}"


def residual_block_types() -> tuple[type, ...]:
    return (Bottleneck, BasicBlock, InvertedResidual)


def cqb_candidates(model: nn.Module) -> list[str]:
    """Names of the Conv2d layers inside residual blocks (SE gates excluded): where CQB applies by default."""
    blocks = residual_block_types()
    names: list[str] = []
    for bname, block in model.named_modules():
        if not isinstance(block, blocks):
            continue
        se = {f"{bname}.{n}." if n else f"{bname}." for n, m in block.named_modules() if isinstance(m, SqueezeExcite)}
        for n, m in block.named_modules():
            full = f"{bname}.{n}"
            if isinstance(m, nn.Conv2d) and not any(full.startswith(p) for p in se):
                names.append(full)
    return names


def attach_cqb(layer: nn.Conv2d, alpha_init: float = 0.9) -> CQBShortcut:
    """Give a QuantConv2d its CQB shortcut (layer.cqb)."""
    layer.cqb = CQBShortcut(layer.in_channels, layer.out_channels, layer.stride, alpha_init)
    return layer.cqb
