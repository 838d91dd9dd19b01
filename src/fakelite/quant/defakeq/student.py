"""DeFakeQ's student: the quantized copy of the FP model that an allocation (bits per layer, VEFT channels)
describes, PTQ-initialised before the progressive contrastive calibration (`calibrate.py`).
"""

from __future__ import annotations

import copy

from torch import nn

from ..convert import LayerQuantSpec, QuantConfig, calibrate, quantize
from ..veft import attach_veft_model
from .allocate import HAQScores


def base_config(quantizer: str = "lsq", first_last: str = "8bit") -> QuantConfig:
    """The config HAQ starts from: every layer at 4 bits (overridden per layer), first/last layers at 8 bits."""
    return QuantConfig(w_bits=4, a_bits=4, quantizer=quantizer, first_last=first_last)


def mixed_config(base: QuantConfig, alloc: dict[str, int]) -> QuantConfig:
    """The QuantConfig of an allocation (exact layer names as patterns; a_bits = w_bits)."""
    cfg = copy.deepcopy(base)
    cfg.layers = dict(cfg.layers)
    for n, b in alloc.items():
        cfg.layers[n] = LayerQuantSpec(w_bits=int(b), a_bits=int(b))
    return cfg


def build_quantized(fp_model: nn.Module, cfg: QuantConfig, veft: dict[str, list[int]] | None = None,
                    veft_bits: int = 8) -> nn.Module:
    """Deep copy of `fp_model` quantized with `cfg`, with VEFT channels attached (plan records them)."""
    m = quantize(copy.deepcopy(fp_model), cfg)
    if veft:
        attach_veft_model(m, veft, bits=veft_bits)
    return m


def build_student(fp: nn.Module, alloc: dict[str, int], batches: list, quantizer: str = "lsq",
                  veft_channels: dict[str, list[int]] | None = None, first_last: str = "8bit") -> nn.Module:
    """Quantized copy of `fp` with the allocation (and VEFT channels), PTQ-initialised on `batches`."""
    cfg = mixed_config(base_config(quantizer, first_last), alloc)
    m = build_quantized(fp, cfg, veft_channels)
    calibrate(m, batches)
    m.eval()
    return m


def uniform_alloc(scores: HAQScores, bits: int) -> dict[str, int]:
    """Every allocated layer at `bits`."""
    return dict.fromkeys(scores.layers, int(bits))
