"""Model compression beyond quantization: pruning (structured and unstructured), knowledge distillation
and the MobileNetV3 compression recipe (distil → prune → fine-tune → quantize).

Heavy imports (torch-pruning) happen inside the functions that need them.
"""

from __future__ import annotations

from fakelite.compress.measure import count_macs, count_params, measure_latency
from fakelite.compress.prune import (
    PruneConfig,
    prune_structured,
    prune_unstructured,
    sparsity,
)
from fakelite.compress.sparse import pack_sparse, unpack_sparse

__all__ = [
    "PruneConfig",
    "count_macs",
    "count_params",
    "measure_latency",
    "pack_sparse",
    "prune_structured",
    "prune_unstructured",
    "sparsity",
    "unpack_sparse",
]
