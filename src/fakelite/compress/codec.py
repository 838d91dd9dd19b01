"""The artifact codec of unstructured sparsity (registered with fakelite.artifact by importing this module).

Saving: a model with `model.fakelite_sparse` set (fakelite.compress.prune.prune_unstructured) stores every
floating tensor with enough zeros as bit mask + non-zero values (fakelite.compress.sparse); header["packing"]
describes them (null when no tensor was sparse enough). Loading a file whose header["packing"] has "sparse":
the dense state dict is rebuilt bit-exactly and the model is marked `fakelite_sparse` again (with the stored
`min_sparsity`), so saving it again gives the same bytes. Quantized packing wins (fakelite.quant.codec).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fakelite.artifact import CodecError, register_codec

from .sparse import DEFAULT_MIN_SPARSITY, pack_sparse, unpack_sparse

PRIORITY = 50  # below fakelite.quant.codec


class SparseCodec:
    """Bit mask + non-zero values for sparse tensors (see the module docstring)."""

    name = "sparse"

    def encodes(self, model: nn.Module) -> bool:
        return bool(getattr(model, "fakelite_sparse", None))

    def encode(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, packing = pack_sparse(model)
        return tensors, {"packing": packing}

    def decodes(self, header: dict[str, Any]) -> bool:
        return bool((header.get("packing") or {}).get("sparse"))

    def rebuild(self, model: nn.Module, header: dict[str, Any]) -> nn.Module:
        sparse = header["packing"]["sparse"]
        min_s = sparse.get("min_sparsity", DEFAULT_MIN_SPARSITY) if isinstance(sparse, dict) else DEFAULT_MIN_SPARSITY
        model.fakelite_sparse = {"min_sparsity": min_s}
        return model

    def decode(self, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> dict[str, torch.Tensor]:
        try:
            return unpack_sparse(tensors, header["packing"])
        except (KeyError, TypeError, ValueError) as e:
            raise CodecError(f"cannot unpack sparse tensors: {e}") from None


register_codec(SparseCodec(), priority=PRIORITY)
