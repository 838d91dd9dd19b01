"""Cost model: MACs, FLOPs, BOPs, OPs and storage, as QMDD's Table 4 counts them, plus the real packed size.

- MACs: every Conv2d/Linear, measured with forward hooks on one (1, 3, size, size) input
  (conv: output elements × C_in/groups × k_h × k_w; linear: in × out). Bias adds, BN, activations and pooling
  are not counted (QMDD's convention; they are < 1 % here).
- FLOPs: MACs of the full-precision conv/linear layers (FLOPs = MACs, as QMDD), plus the CQB shortcut's
  element-wise work when present (per output element: 2 multiplies + 1 add; per input element: 1 add for the
  channel/spatial averaging).
- BOPs: Σ MACs·b_w·b_a over the quantized layers (a layer counts as quantized when both operands are ≤ 8 bits).
- OPs = FLOPs + BOPs/64. ops_ratio = MACs of the whole network in FP / OPs.
- storage_bytes: the REAL size of the tensors `pack.pack_state_dict` stores (packed codes + scales + FP tensors,
  BN running statistics included), without the file's JSON header. fp32_storage_bytes: the same model's
  full-precision state dict (float32). paper_storage_bytes: QMDD's formula (32 bits per FP parameter + b bits per
  quantized weight; buffers and quantizer parameters not counted).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .layers import is_quant_layer
from .pack import pack_state_dict, state_nbytes
from .quantizers import NoQuant, Quantizer


def _aux_param_ids(model: nn.Module) -> set[int]:
    """Parameters that exist only because of quantization (quantizer parameters, CQB mixing weights)."""
    ids: set[int] = set()
    for m in model.modules():
        if isinstance(m, Quantizer) or type(m).__name__ == "CQBShortcut":
            ids.update(id(p) for p in m.parameters())
    return ids


def _fp_state_nbytes(model: nn.Module) -> int:
    """Bytes of the full-precision model's state dict (no quantizer/CQB/folding extras; floats as float32)."""
    total = 0
    for k, v in model.state_dict().items():
        parts = k.split(".")
        if any(p in ("weight_quantizer", "input_quantizer", "cqb") for p in parts) or parts[-1] in ("post_scale",
                                                                                                  "post_bias"):
            continue
        total += v.numel() * (4 if v.is_floating_point() else v.element_size())
    return total


def layer_macs(model: nn.Module, size: int) -> list[dict[str, Any]]:
    """Per-layer MACs and bit widths at a (1, 3, size, size) input."""
    rows: list[dict[str, Any]] = []
    hooks = []

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor, name: str) -> None:
        x = inp[0]
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            macs = out[0].numel() * (m.in_channels // m.groups) * kh * kw
            kind = "conv"
        else:
            macs = (out.numel() // out.shape[-1]) // max(1, out.shape[0]) * m.in_features * m.out_features
            kind = "linear"
        q = is_quant_layer(m)
        wb = m.weight_quantizer.bits if q and not isinstance(m.weight_quantizer, NoQuant) else 32
        ab = m.input_quantizer.bits if q and not isinstance(m.input_quantizer, NoQuant) else 32
        extra = 0
        if q and getattr(m, "cqb", None) is not None:
            extra = 3 * out[0].numel() + x[0].numel()
        rows.append({"name": name, "type": kind, "macs": int(macs), "w_bits": wb, "a_bits": ab,
                     "cqb_flops": int(extra), "weights": int(m.weight.numel())})

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            hooks.append(m.register_forward_hook(lambda mod, i, o, n=name: hook(mod, i, o, n)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, 3, size, size, dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


def model_cost(model: nn.Module, size: int | None = None, per_layer: bool = False) -> dict[str, Any]:
    """Compute cost as a JSON-able dict with keys params, macs, flops, bops, ops, storage_bytes,
    fp32_storage_bytes, storage_ratio, ops_ratio, size (+ paper_storage_bytes, paper_storage_ratio, bits).

    size defaults to the model's preprocess.crop (224 if it has none).
    """
    if size is None:
        pre = getattr(model, "preprocess", None)
        size = int(getattr(pre, "crop", 224) or 224)
    rows = layer_macs(model, int(size))
    macs = sum(r["macs"] for r in rows)
    flops = sum(r["macs"] for r in rows if not (r["w_bits"] <= 8 and r["a_bits"] <= 8))
    flops += sum(r["cqb_flops"] for r in rows)
    bops = sum(r["macs"] * r["w_bits"] * r["a_bits"] for r in rows if r["w_bits"] <= 8 and r["a_bits"] <= 8)
    ops = flops + bops / 64.0

    aux = _aux_param_ids(model)
    params = sum(p.numel() for p in model.parameters() if id(p) not in aux)
    quantized_weights = 0
    quantized_weight_bits = 0
    for m in model.modules():
        if is_quant_layer(m) and not isinstance(m.weight_quantizer, NoQuant):
            quantized_weights += m.weight.numel()
            quantized_weight_bits += m.weight.numel() * m.weight_quantizer.bits
    paper_storage = (params - quantized_weights) * 4 + quantized_weight_bits / 8.0

    if getattr(model, "fakelite_quant", None) is not None:
        storage = state_nbytes(pack_state_dict(model)[0])
    else:
        storage = state_nbytes({k: v for k, v in model.state_dict().items()})
    fp32 = _fp_state_nbytes(model)
    out: dict[str, Any] = {
        "params": int(params),
        "macs": int(macs),
        "flops": float(flops),
        "bops": float(bops),
        "ops": float(ops),
        "storage_bytes": int(storage),
        "fp32_storage_bytes": int(fp32),
        "storage_ratio": fp32 / storage if storage else 0.0,
        "ops_ratio": macs / ops if ops else 0.0,
        "size": int(size),
        "paper_storage_bytes": float(paper_storage),
        "paper_storage_ratio": params * 4 / paper_storage if paper_storage else 0.0,
        "bits": sorted({f"W{r['w_bits']}A{r['a_bits']}" for r in rows}),
    }
    if per_layer:
        out["layers"] = rows
    return out
