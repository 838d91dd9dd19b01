"""Low-bit quantization: quantizers (MinMax, percentile, LSQ, N2UQ, SLR, binary), quantized layers, CQB,
conversion, bit packing and the cost model. Maths in numerics.py; see docs/quantization.md."""

from .convert import (
    LayerQuantSpec,
    QuantConfig,
    calibrate,
    calibrating,
    fold_bn,
    quant_layers,
    quant_param_groups,
    quantize,
    quantize_from_meta,
)
from .layers import QuantConv2d, QuantLinear, integer_view

__all__ = [
    "LayerQuantSpec",
    "QuantConfig",
    "QuantConv2d",
    "QuantLinear",
    "calibrate",
    "calibrating",
    "fold_bn",
    "integer_view",
    "quant_layers",
    "quant_param_groups",
    "quantize",
    "quantize_from_meta",
]
