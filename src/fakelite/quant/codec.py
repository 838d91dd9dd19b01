"""The artifact codec of quantized models (registered with fakelite.artifact by importing this module).

Saving: a model with `model.fakelite_quant` (set by fakelite.quant.convert) stores its low-bit weights bit-packed
(fakelite.quant.pack) and writes the quantization config and per-layer plan to header["quant"] and the packing
description to header["packing"]. Loading a file whose header["quant"] is set: `quantize_from_meta` swaps the
registry model's layers for the recorded quantized ones, then `unpack_state_dict` decodes the packed codes, so
the loaded model is bit-exact with the saved one. Quantized packing wins over sparse storage (higher priority).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fakelite.artifact import register_codec

from .convert import quantize_from_meta
from .pack import pack_state_dict, unpack_state_dict

PRIORITY = 100  # above fakelite.compress.codec: a quantized, sparse model is stored as low-bit codes


class QuantCodec:
    """Bit-packed low-bit weights + the quantization plan (see the module docstring)."""

    name = "quant"

    def encodes(self, model: nn.Module) -> bool:
        return getattr(model, "fakelite_quant", None) is not None

    def encode(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, packing = pack_state_dict(model)
        return tensors, {"quant": model.fakelite_quant, "packing": packing}

    def decodes(self, header: dict[str, Any]) -> bool:
        return bool(header.get("quant"))

    def rebuild(self, model: nn.Module, header: dict[str, Any]) -> nn.Module:
        return quantize_from_meta(model, header["quant"])

    def decode(self, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> dict[str, torch.Tensor]:
        return unpack_state_dict(tensors, header.get("packing"))


register_codec(QuantCodec(), priority=PRIORITY)
