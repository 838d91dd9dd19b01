"""QuantConv2d / QuantLinear: still nn.Conv2d / nn.Linear (same `weight`/`bias` keys, so FP state dicts load),
with `weight_quantizer` and `input_quantizer` sub-modules (Brevitas-style composition, plain modules here),
an optional CQB shortcut (`cqb`) and, after `fold_bn`, an optional per-channel output affine.

forward: x̂ = input_quantizer(x); Ŵ = weight_quantizer(W); y = conv(x̂, Ŵ) + b;
         y = α·y + (1−α)·shortcut(x) with CQB; y = y·post_scale + post_bias after BN folding.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import NoQuant, Quantizer


class _QuantMixin:
    weight_quantizer: Quantizer
    input_quantizer: Quantizer

    def _init_quant(self, weight_quantizer: Quantizer | None, input_quantizer: Quantizer | None) -> None:
        self.weight_quantizer = weight_quantizer if weight_quantizer is not None else NoQuant()
        self.input_quantizer = input_quantizer if input_quantizer is not None else NoQuant()
        self.cqb: nn.Module | None = None
        self.register_buffer("post_scale", None)
        self.register_buffer("post_bias", None)

    @property
    def w_bits(self) -> int:
        return self.weight_quantizer.bits

    @property
    def a_bits(self) -> int:
        return self.input_quantizer.bits

    def quantized_weight(self) -> torch.Tensor:
        """Ŵ as the forward uses it (fake-quantized float)."""
        return self.weight_quantizer(self.weight)

    def _post(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.cqb is not None:
            y = self.cqb(y, x)
        if self.post_scale is not None:
            shape = [1, -1] + [1] * (y.dim() - 2)
            y = y * self.post_scale.reshape(shape) + self.post_bias.reshape(shape)
        return y


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """An nn.Conv2d whose input and weight pass through quantizers."""

    def __init__(self, *args: Any, weight_quantizer: Quantizer | None = None,
                 input_quantizer: Quantizer | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._init_quant(weight_quantizer, input_quantizer)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_quantizer: Quantizer | None = None,
                   input_quantizer: Quantizer | None = None) -> QuantConv2d:
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, conv.padding_mode, device=conv.weight.device,
                dtype=conv.weight.dtype, weight_quantizer=weight_quantizer, input_quantizer=input_quantizer)
        with torch.no_grad():
            q.weight.copy_(conv.weight)
            if conv.bias is not None:
                q.bias.copy_(conv.bias)
        q.train(conv.training)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._conv_forward(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)
        return self._post(y, x)


class QuantLinear(_QuantMixin, nn.Linear):
    """An nn.Linear whose input and weight pass through quantizers."""

    def __init__(self, *args: Any, weight_quantizer: Quantizer | None = None,
                 input_quantizer: Quantizer | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._init_quant(weight_quantizer, input_quantizer)

    @classmethod
    def from_float(cls, lin: nn.Linear, weight_quantizer: Quantizer | None = None,
                   input_quantizer: Quantizer | None = None) -> QuantLinear:
        q = cls(lin.in_features, lin.out_features, lin.bias is not None, device=lin.weight.device,
                dtype=lin.weight.dtype, weight_quantizer=weight_quantizer, input_quantizer=input_quantizer)
        with torch.no_grad():
            q.weight.copy_(lin.weight)
            if lin.bias is not None:
                q.bias.copy_(lin.bias)
        q.train(lin.training)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)
        return self._post(y, x)


QUANT_LAYERS = (QuantConv2d, QuantLinear)


def is_quant_layer(m: nn.Module) -> bool:
    return isinstance(m, QUANT_LAYERS)


def integer_view(layer: nn.Module) -> dict:
    """The integer representation of one quantized layer, for exporters.

    weight: {"type": "per_channel_symmetric", "codes": int32 tensor (signed, weight-shaped), "scale": per-channel,
             "zero_point": zeros, "bits"} — Ŵ = scale·codes exactly; or {"type": "float", "weight": W} for FP weights.
    input:  uniform kinds (minmax/percentile/lsq) {"type": "uniform", "scale", "zero_point", "qmin", "qmax",
            "thresholds", "levels"}; N2UQ/SLR {"type": "thresholds", "thresholds", "levels", "scale",
            "zero_point", "uniform_input": False} (code = #{t ≤ x}; output levels uniform: scale·(code − zero_point));
            binary {"type": "sign", "thresholds": α per channel, "levels": [−1, 1]}; FP {"type": "float"}.
    Also bias, the CQB shortcut description (mode, α) and a folded-BN output affine when present.
    """
    if not is_quant_layer(layer):
        raise TypeError(f"integer_view needs a QuantConv2d/QuantLinear, got {type(layer).__name__}")
    wq, iq = layer.weight_quantizer, layer.input_quantizer
    with torch.no_grad():
        w = wq.integer_view(layer.weight) if not isinstance(wq, NoQuant) else {"type": "float",
                                                                                "weight": layer.weight.detach().clone()}
        view = {
            "layer": "conv" if isinstance(layer, nn.Conv2d) else "linear",
            "weight": w,
            "input": iq.integer_view(),
            "w_bits": wq.bits,
            "a_bits": iq.bits,
            "w_quantizer": wq.kind,
            "a_quantizer": iq.kind,
            "bias": None if layer.bias is None else layer.bias.detach().clone(),
            "cqb": None if layer.cqb is None else layer.cqb.describe(),
            "post_scale": None if layer.post_scale is None else layer.post_scale.detach().clone(),
            "post_bias": None if layer.post_bias is None else layer.post_bias.detach().clone(),
        }
    return view
