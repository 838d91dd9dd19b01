"""Compact storage of unstructured sparsity inside a .fakelite file.

A tensor whose fraction of zeros is at least `min_sparsity` is stored as two tensors:
  `<name>::sparse_mask`   uint8, the non-zero pattern bit-packed (numpy.packbits, big-endian bit order),
  `<name>::sparse_values` the non-zero values in row-major order, original dtype.
"Zero" means *all bits zero* (+0.0): a -0.0 is kept as a value, so the round trip is bit-exact.
A float32 tensor at sparsity s costs (1 − s)·32 + 1 bits per element instead of 32, i.e. it shrinks as soon
as s > 1/32; the default threshold (0.25) keeps tensors that are barely sparse in plain form.

The packing description (artifact header "packing") is
  {"sparse": {"version": 1, "min_sparsity": float,
              "tensors": {name: {"shape": [...], "dtype": "float32", "nnz": int}}}}.
If a model is both quantized and sparse, quantized packing takes precedence (fakelite.quant.pack stores its
low-bit codes; zeros are then just one code among others) and the model is saved without sparse packing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

MASK_SUFFIX = "::sparse_mask"
VALUES_SUFFIX = "::sparse_values"
DEFAULT_MIN_SPARSITY = 0.25

_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
             torch.float64: torch.int64}


def nonzero_mask(t: torch.Tensor) -> torch.Tensor:
    """Boolean mask of elements whose bit pattern is not all zeros (so -0.0 counts as non-zero)."""
    t = t.detach().contiguous()
    if t.dtype in _INT_VIEW:
        return t.view(_INT_VIEW[t.dtype]) != 0
    return t != 0


def pack_tensor(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed bit mask as uint8, non-zero values)."""
    t = t.detach().cpu().contiguous()
    mask = nonzero_mask(t).reshape(-1)
    bits = torch.from_numpy(np.packbits(mask.numpy().astype(np.uint8)))
    return bits, t.reshape(-1)[mask].clone()


def unpack_tensor(bits: torch.Tensor, values: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """Inverse of `pack_tensor`."""
    n = int(np.prod(shape)) if shape else 1
    mask = torch.from_numpy(np.unpackbits(bits.numpy(), count=n).astype(bool))
    if int(mask.sum()) != values.numel():
        raise ValueError(f"sparse tensor: mask has {int(mask.sum())} non-zeros but {values.numel()} values stored")
    out = torch.zeros(n, dtype=values.dtype)
    out[mask] = values
    return out.reshape(shape)


def pack_state(state: dict[str, torch.Tensor], min_sparsity: float = DEFAULT_MIN_SPARSITY
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Pack every floating tensor with ≥ min_sparsity zeros; returns (tensors, packing or None)."""
    tensors: dict[str, torch.Tensor] = {}
    desc: dict[str, dict] = {}
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        if t.is_floating_point() and t.numel() >= 64:
            nnz = int(nonzero_mask(t).sum())
            if 1 - nnz / t.numel() >= min_sparsity:
                bits, values = pack_tensor(t)
                tensors[name + MASK_SUFFIX] = bits
                tensors[name + VALUES_SUFFIX] = values
                desc[name] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "nnz": nnz}
                continue
        tensors[name] = t
    if not desc:
        return tensors, None
    return tensors, {"sparse": {"version": 1, "min_sparsity": min_sparsity, "tensors": desc}}


def pack_sparse(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The model's state dict with sparse tensors packed (see module docstring; the artifact codec is
    fakelite.compress.codec).

    `model.fakelite_sparse` may be a dict with "min_sparsity" to override the threshold.
    """
    opts = getattr(model, "fakelite_sparse", None)
    min_s = float(opts.get("min_sparsity", DEFAULT_MIN_SPARSITY)) if isinstance(opts, dict) else DEFAULT_MIN_SPARSITY
    return pack_state(model.state_dict(), min_s)


def unpack_sparse(tensors: dict[str, torch.Tensor], packing: dict[str, Any] | None) -> dict[str, torch.Tensor]:
    """Rebuild the dense state dict from stored tensors and the packing description (fakelite.compress.codec).

    Raises ValueError for a missing or inconsistent mask/values pair, KeyError/TypeError for a malformed description."""
    if not packing or "sparse" not in packing:
        return tensors
    desc = packing["sparse"]["tensors"]
    out = {k: v for k, v in tensors.items() if not (k.endswith(MASK_SUFFIX) or k.endswith(VALUES_SUFFIX))}
    for name, d in desc.items():
        try:
            bits, values = tensors[name + MASK_SUFFIX], tensors[name + VALUES_SUFFIX]
        except KeyError:
            raise ValueError(f"sparse tensor {name}: mask or values missing") from None
        out[name] = unpack_tensor(bits, values, d["shape"])
    return out
