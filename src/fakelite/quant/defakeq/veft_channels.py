"""DeFakeQ VEFT channel choice: which output channels of each allocated layer keep their weights at 8 bits.

Keeping channel c at high precision changes the first-order logit error T = Σ_c t_c (t_c = Σ_hw g ⊙ Δy,
g = ∂logit/∂y) to T − t_c + t'_c (t'_c: the same at `bits`); the gain E[T²] − E[(T − t_c + t'_c)²] is measured on
calibration images (`channel_gains`) and the top-k channels per layer are kept (`select_channels`). The mechanism
that keeps them (extra int8 rows in the weight quantizer) is `quant/veft.py`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..numerics import dequantize_rows, symmetric_row_codes
from .sensitivity import capture_layers, channel_taylor, first_samples, local_qlayer


@torch.no_grad()
def channel_gains(layer_fp: nn.Module, qlayer: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor,
                  bits: int = 8) -> torch.Tensor:
    """Per-output-channel gain E[T²] − E[(T − t_c + t'_c)²] of keeping channel c at `bits` (see module doc).

    qlayer: the layer quantized at its allocated width (activation quantizer calibrated); x, y, g: the FP layer's
    input, output and ∂logit/∂output on calibration images.
    """
    t = channel_taylor(g, qlayer(x) - y)  # n × C
    xq = qlayer.input_quantizer(x)
    w8 = dequantize_rows(*symmetric_row_codes(layer_fp.weight.detach(), bits))
    if isinstance(layer_fp, nn.Conv2d):
        y8 = layer_fp._conv_forward(xq, w8, layer_fp.bias)
    else:
        y8 = nn.functional.linear(xq, w8, layer_fp.bias)
    t8 = channel_taylor(g, y8 - y)
    total = t.sum(1, keepdim=True)
    return (total**2).mean(0) - ((total - t + t8) ** 2).mean(0)


def select_channels(gains: torch.Tensor, k: int) -> list[int]:
    """The k channels with the largest gain (ties: lower index)."""
    if k <= 0:
        return []
    order = sorted(range(len(gains)), key=lambda c: (-float(gains[c]), c))
    return sorted(order[:k])


def choose_veft_channels(fp: nn.Module, alloc: dict[str, int], counts: dict[str, int], batches: list,
                         quantizer: str = "lsq", samples: int = 64, bits: int = 8) -> dict[str, list[int]]:
    """Per layer, the `counts[layer]` output channels whose high-precision copy most reduces the first-order
    logit error at the allocated width (`channel_gains`) on `samples` calibration images."""
    names = [n for n in alloc if counts.get(n, 0) > 0]
    if not names:
        return {}
    model = copy.deepcopy(fp).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    x, _ = first_samples(batches, samples)
    xs, ys, gs, _ = capture_layers(model, names, x)
    mods = dict(model.named_modules())
    out = {}
    for n in names:
        q = local_qlayer(mods[n], alloc[n], quantizer, xs[n])
        out[n] = select_channels(channel_gains(mods[n], q, xs[n], ys[n], gs[n], bits), counts[n])
    return out
