"""Bit packing of low-bit weights for the .fakelite artifact.

`pack_state_dict(model)` replaces each quantized layer's float latent weight by its integer codes, bit-packed
(b bits per weight, LSB-first little-endian bit stream: 2-bit → four per byte, 4-bit → two per byte, 3-bit
across byte boundaries, 8-bit → one per byte), concatenated layer after layer into one uint8 tensor `__packed__`.
Everything the codes need to be decoded (per-channel scale, N2UQ clip, ...) is already in the state dict
(weight-quantizer parameters/buffers), so nothing is stored twice.

`unpack_state_dict(tensors, packing)` returns exactly the keys of `model.state_dict()`: the latent weight becomes
`numerics.decode_weight(codes)` (e.g. code·scale), which re-quantizes to the same codes under the same quantizer
state, so the loaded fake-quant model is bit-exact with the saved one (tested for every quantizer kind).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .layers import is_quant_layer
from .numerics import DECODE_STATE, decode_weight
from .quantizers import NoQuant

PACKED_PREFIX = "__packed__."
AUX_PREFIX = "__aux__."
PACKING_VERSION = 1


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned codes (< 2^bits) → uint8 tensor of ⌈n·bits/8⌉ bytes (LSB-first bit stream)."""
    c = codes.detach().reshape(-1).to(torch.int64).cpu().numpy()
    if c.size and (c.min() < 0 or c.max() >= 2**bits):
        raise ValueError(f"codes out of range for {bits} bits")
    if bits == 8:
        return torch.from_numpy(c.astype(np.uint8))
    stream = ((c[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    return torch.from_numpy(np.packbits(stream, bitorder="little"))


def unpack_bits(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of pack_bits: the first n codes as int64."""
    p = packed.detach().reshape(-1).cpu().numpy().astype(np.uint8)
    if bits == 8:
        return torch.from_numpy(p[:n].astype(np.int64))
    stream = np.unpackbits(p, bitorder="little", count=n * bits).reshape(n, bits).astype(np.int64)
    return torch.from_numpy((stream << np.arange(bits)).sum(1))


def packed_nbytes(n: int, bits: int) -> int:
    return -(-n * bits // 8)


AUX_MAX_NUMEL = 1 << 16  # tensors up to this size are concatenated into one blob per dtype (fewer header entries)


def encode_keys(keys: list[str]) -> str:
    """Compact key list: consecutive keys of one module share their prefix ("a.bn1:weight|bias;a.conv1:...")."""
    groups: list[tuple[str, list[str]]] = []
    for k in keys:
        prefix, _, leaf = k.rpartition(".")
        if groups and groups[-1][0] == prefix:
            groups[-1][1].append(leaf)
        else:
            groups.append((prefix, [leaf]))
    return ";".join(f"{p}:{'|'.join(leaves)}" for p, leaves in groups)


def decode_keys(s: str) -> list[str]:
    out: list[str] = []
    for group in s.split(";") if s else []:
        prefix, _, leaves = group.rpartition(":")
        out += [f"{prefix}.{leaf}" if prefix else leaf for leaf in leaves.split("|")]
    return out


def pack_state_dict(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors to store, packing description).

    Stored tensors: `__packed__` (the bit-packed codes of every low-bit weight, layer after layer, each layer
    starting on a byte boundary), `__aux__.<dtype>` (all small tensors — BN statistics, scales, quantizer
    parameters — concatenated, so the file header stays small) and every other tensor under its own name.
    """
    sd = model.state_dict()
    weights: dict[str, Any] = {}
    blobs: list[torch.Tensor] = []
    for name, layer in model.named_modules():
        if not is_quant_layer(layer) or isinstance(layer.weight_quantizer, NoQuant):
            continue
        wq = layer.weight_quantizer
        key = f"{name}.weight" if name else "weight"
        blobs.append(pack_bits(wq.codes(layer.weight), wq.bits))
        weights[key] = {"kind": wq.code_kind, "bits": wq.bits, "shape": list(layer.weight.shape),
                        "dtype": str(layer.weight.dtype).removeprefix("torch.")}
    tensors: dict[str, torch.Tensor] = {}
    if blobs:
        tensors[PACKED_PREFIX.rstrip(".")] = torch.cat(blobs)
    aux: dict[str, list[list[Any]]] = {}
    aux_data: dict[str, list[torch.Tensor]] = {}
    for k, v in sd.items():
        if k in weights:
            continue
        v = v.detach().cpu().contiguous()
        if v.numel() <= AUX_MAX_NUMEL:
            dt = str(v.dtype).removeprefix("torch.")
            aux.setdefault(dt, []).append([k, list(v.shape)])
            aux_data.setdefault(dt, []).append(v.reshape(-1))
        else:
            tensors[k] = v
    for dt, parts in aux_data.items():
        tensors[AUX_PREFIX + dt] = torch.cat(parts) if parts else torch.zeros(0)
    # compact index (it lives in the file header): keys joined by ",", 1-D shapes as plain ints
    index = {dt: {"keys": encode_keys([k for k, _ in entries]),
                  "shapes": [sh[0] if len(sh) == 1 else sh for _, sh in entries]} for dt, entries in aux.items()}
    return tensors, {"version": PACKING_VERSION, "weights": weights, "aux": index}


def unpack_state_dict(tensors: dict[str, torch.Tensor], packing: dict[str, Any] | None) -> dict[str, torch.Tensor]:
    """The model's state dict (same keys as model.state_dict()) from stored tensors and their packing."""
    if not packing:
        return dict(tensors)
    out = {k: v for k, v in tensors.items() if not (k == PACKED_PREFIX.rstrip(".") or k.startswith(AUX_PREFIX))}
    for dt, index in packing.get("aux", {}).items():
        flat = tensors[AUX_PREFIX + dt]
        pos = 0
        keys = decode_keys(index["keys"])
        for key, shape in zip(keys, index["shapes"], strict=True):
            shape = [shape] if isinstance(shape, int) else list(shape)
            n = int(np.prod(shape)) if shape else 1
            out[key] = flat[pos : pos + n].reshape(shape).clone()
            pos += n
    blob = tensors.get(PACKED_PREFIX.rstrip("."))
    pos = 0
    for key, info in packing.get("weights", {}).items():
        shape = tuple(info["shape"])
        bits = int(info["bits"])
        n = int(np.prod(shape))
        nb = packed_nbytes(n, bits)
        codes = unpack_bits(blob[pos : pos + nb], bits, n)
        pos += nb
        qprefix = key[: -len("weight")] + "weight_quantizer."
        state = {s: out[qprefix + s] for s in DECODE_STATE[info["kind"]]}
        w = decode_weight(info["kind"], codes, bits, state, shape)
        out[key] = w.to(getattr(torch, info.get("dtype", "float32")))
    return out


def state_nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())
