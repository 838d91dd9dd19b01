"""DeFakeQ VEFT — vertical efficient feature fine-tuning inside each quantized layer.

HAQ chooses one width per layer ("horizontal"); VEFT works *inside* a layer ("vertical", along its output
channels): the few output channels whose quantization error moves the detector's logit most keep their weights
at `bits` (default 8, integer-deployable) instead of the layer's 2–4 bits, and only a small set of parameters is
fine-tuned during calibration: those channels' weights, the quantizer parameters, BatchNorm affine parameters
and CQB α (if present). The low-bit weights of the other channels stay frozen.

Mechanics: `attach_veft(layer, channels)` gives the layer's weight quantizer a VEFT subclass (same state keys
as the base quantizer plus `veft_codes` (int8, k × fan-in) and `veft_scale` (float32, k)); its forward is the
base quantizer's output with the kept rows replaced by `veft_scale·veft_codes`. Packing is untouched: the
packed low-bit codes still cover every row (a few bytes wasted on k rows), and the VEFT rows are ordinary extra
tensors in the state dict, so `cost.model_cost` counts them and a save→load round trip is bit-exact. The
channel list lives in the quantization plan (`plan[layer]["veft"] = {"channels": [...], "bits": 8}`) and the
one-line hook in `convert._build_layer` re-attaches VEFT when an artifact is loaded.

During fine-tuning (`start_finetune`) the kept rows are a float Parameter `veft_latent`, fake-quantized per row
to `bits` (symmetric, scale max|row|/Qp, straight-through rounding); `freeze` writes codes/scale back and
removes the parameter, so what is saved is exactly what the model computes.

This file is the mechanism only (a layer feature, like cqb.py, that `convert` re-attaches on load); which channels
to keep is DeFakeQ's search, in `quant/defakeq/veft_channels.py`. The row maths (codes, scales, fake quantization)
is `numerics.symmetric_row_codes` / `dequantize_rows` / `fake_quant_rows`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .layers import is_quant_layer
from .numerics import dequantize_rows, fake_quant_rows, symmetric_row_codes
from .quantizers import NoQuant, WeightQuantizer

_CLASSES: dict[type, type] = {}


class VEFTMixin:
    """Mixed into a weight quantizer: rows `veft_index` come from their own `bits`-bit codes."""

    veft_bits: int

    def _veft_rows(self) -> torch.Tensor:
        latent = getattr(self, "veft_latent", None)
        if latent is not None:
            return fake_quant_rows(latent, self.veft_bits)
        return dequantize_rows(self.veft_codes, self.veft_scale)

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = super().forward(w)  # type: ignore[misc]
        rows = self._veft_rows().to(out.dtype)
        return out.index_copy(0, self.veft_index.to(out.device), rows)

    def integer_view(self, w: torch.Tensor) -> dict:  # type: ignore[override]
        d = super().integer_view(w)  # type: ignore[misc]
        d["veft"] = {"channels": self.veft_index.tolist(), "bits": self.veft_bits,
                     "codes": self.veft_codes.to(torch.int32).clone(), "scale": self.veft_scale.detach().clone()}
        return d

    def extra_repr(self) -> str:
        return super().extra_repr() + f", veft={len(self.veft_index)}ch@{self.veft_bits}b"  # type: ignore[misc]


def _veft_class(cls: type) -> type:
    if issubclass(cls, VEFTMixin):
        return cls
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"VEFT{cls.__name__}", (VEFTMixin, cls), {})
    return _CLASSES[cls]


def has_veft(layer: nn.Module) -> bool:
    return is_quant_layer(layer) and isinstance(layer.weight_quantizer, VEFTMixin)


def attach_veft(layer: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """Keep output channels spec["channels"] of a quantized layer at spec["bits"] (default 8). In place."""
    if not is_quant_layer(layer):
        raise TypeError(f"VEFT needs a QuantConv2d/QuantLinear, got {type(layer).__name__}")
    wq = layer.weight_quantizer
    if isinstance(wq, NoQuant) or not isinstance(wq, WeightQuantizer):
        raise ValueError("VEFT needs a quantized weight (this layer's weights are full precision)")
    channels = sorted({int(c) for c in spec.get("channels", [])})
    bits = int(spec.get("bits", 8))
    if not 2 <= bits <= 8:
        raise ValueError(f"VEFT bits must be 2..8 (int8 storage), got {bits}")
    if any(c < 0 or c >= layer.weight.shape[0] for c in channels):
        raise ValueError(f"VEFT channel out of range for {layer.weight.shape[0]} output channels")
    if not channels:
        return layer
    if isinstance(wq, VEFTMixin):
        raise ValueError("VEFT is already attached to this layer")
    wq.__class__ = _veft_class(type(wq))
    wq.veft_bits = bits
    idx = torch.tensor(channels, dtype=torch.long)
    wq.register_buffer("veft_index", idx, persistent=False)  # stored in the plan, not as a tensor
    codes, scale = symmetric_row_codes(layer.weight.detach()[idx], bits)
    wq.register_buffer("veft_codes", codes)
    wq.register_buffer("veft_scale", scale)
    return layer


def attach_veft_model(model: nn.Module, channels: dict[str, list[int]], bits: int = 8) -> nn.Module:
    """Attach VEFT to each named layer and record it in model.fakelite_quant["plan"] (so loading rebuilds it)."""
    mods = dict(model.named_modules())
    plan = model.fakelite_quant["plan"]
    for name, ch in channels.items():
        if not ch:
            continue
        spec = {"channels": sorted(int(c) for c in ch), "bits": int(bits)}
        attach_veft(mods[name], spec)
        plan[name]["veft"] = spec
    return model


def veft_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if has_veft(m)]


def start_finetune(model: nn.Module) -> list[nn.Parameter]:
    """Turn every layer's kept rows into a trainable float Parameter (fake-quantized in forward)."""
    params = []
    for _, layer in veft_layers(model):
        wq = layer.weight_quantizer
        if getattr(wq, "veft_latent", None) is None:
            wq.veft_latent = nn.Parameter(wq._veft_rows().detach().clone())
        params.append(wq.veft_latent)
    return params


def freeze(model: nn.Module) -> nn.Module:
    """Write the fine-tuned rows back to int codes/scales and drop the float parameters (before saving)."""
    for _, layer in veft_layers(model):
        wq = layer.weight_quantizer
        latent = getattr(wq, "veft_latent", None)
        if latent is None:
            continue
        codes, scale = symmetric_row_codes(latent.detach(), wq.veft_bits)
        wq.veft_codes.copy_(codes)
        wq.veft_scale.copy_(scale)
        del wq.veft_latent
    return model


def veft_summary(model: nn.Module) -> dict[str, Any]:
    """Kept channels per layer and the bytes they add to the artifact (codes + scales)."""
    per = {}
    total = 0
    for n, layer in veft_layers(model):
        wq = layer.weight_quantizer
        nbytes = wq.veft_codes.numel() * wq.veft_codes.element_size() + wq.veft_scale.numel() * 4
        per[n] = {"channels": len(wq.veft_index), "out_channels": int(layer.weight.shape[0]), "bytes": int(nbytes)}
        total += nbytes
    return {"layers": per, "storage_overhead_bytes": int(total),
            "channels": int(sum(v["channels"] for v in per.values()))}


def trainable_summary(params: list[nn.Parameter], model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": int(sum(p.numel() for p in params)), "total_params": int(total)}
