"""DeFakeQ HAQ — horizontal adaptive (mixed-precision) bit allocation across layers: the measurement that feeds
the allocator (`measure_haq`), and its outputs (`haq_record`, `plot_allocation`).

Per quantizable layer l and candidate width b ∈ {2, 3, 4, 8} (weights and input activations tied, W_bA_b):

1. **Redundancy from feature correlations (OMPQ-style)**, `cka.py`: linear CKA between the outputs of every pair
   of layers on `cka_samples` calibration images; ρ_l = mean_{m≠l} CKA(l, m); importance
   w_l = (1 − ρ_l) / mean(1 − ρ). Redundant layers are cheaper to quantize hard.
2. **Sensitivity S_l(b)**, `sensitivity.py`: "taylor" (default, first-order logit change), "measured" (the real
   logit change with only layer l quantized, to validate "taylor") or "hawq" (HAWQ-v2 Hessian trace, weights only).
3. **Cost** c(l, b) = S_l(b) · w_l^γ (γ = `cka_weight`, 0 turns the CKA term off).
4. **Allocation**, `allocate.py`: min Σ c(l, b_l) s.t. storage ≤ budget (bytes, counted exactly as
   `pack.pack_state_dict` stores them, i.e. as `cost.model_cost(...)["storage_bytes"]`) and/or BOPs ≤ budget — a
   multiple-choice knapsack solved exactly as an ILP (HiGHS).

Storage is additive over layers: every stored tensor belongs to exactly one quantized layer (its packed codes,
quantizer state, VEFT rows) or to the rest of the model (BN, FP layers), which does not depend on the plan. The
per-layer bytes are measured by building the model at each uniform width and reading the packed tensors, so
the ILP's storage is the real packed size, byte for byte (tested against `model_cost`).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..convert import QuantConfig, resolve_plan
from ..cost import layer_macs
from ..layers import is_quant_layer
from ..pack import pack_state_dict, packed_nbytes, state_nbytes
from ..quantizers import NoQuant
from .allocate import HAQScores
from .cka import cka_redundancy
from .sensitivity import first_samples, hawq_sensitivity, measured_sensitivity, taylor_sensitivity
from .student import base_config, build_quantized, mixed_config

DEFAULT_BITS = (2, 3, 4, 8)
DEFAULT_VEFT_RATIO = 0.02


def allocatable_layers(model: nn.Module, base: QuantConfig) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(layers whose width HAQ chooses, the base plan). First/last layers keep the base config's width."""
    plan = resolve_plan(model, base)
    names = list(plan)
    if base.first_last != "target" and len(names) >= 2:
        edge = {names[0], names[-1]}
    else:
        edge = set()
    return [n for n in names if n not in edge and plan[n]["w_bits"] < 32], plan


def veft_count(out_channels: int, ratio: float) -> int:
    """VEFT channels kept for a layer with `out_channels` outputs (0 when ratio is 0)."""
    if ratio <= 0:
        return 0
    return max(1, int(math.ceil(ratio * out_channels)))


def storage_breakdown(model: nn.Module, names: list[str]) -> tuple[dict[str, int], int]:
    """(bytes per named quantized layer, bytes of everything else) of the packed artifact tensors.

    A layer's bytes: its packed codes (⌈n·b/8⌉, each layer byte-aligned) plus every state tensor under its name
    (quantizer state, bias, VEFT rows); the rest is every other state tensor. The sum is checked against the
    real `pack_state_dict` size, so a change of the packing format cannot silently break the accounting.
    """
    sd = model.state_dict()
    per = dict.fromkeys(names, 0)
    packed_keys = set()
    rest = 0
    for n, layer in model.named_modules():
        if is_quant_layer(layer) and not isinstance(layer.weight_quantizer, NoQuant):
            nb = packed_nbytes(layer.weight.numel(), layer.weight_quantizer.bits)
            packed_keys.add(f"{n}.weight")
            if n in per:
                per[n] += nb
            else:
                rest += nb
    for k, v in sd.items():
        if k in packed_keys:
            continue
        nb = v.numel() * v.element_size()
        owner = next((n for n in names if k.startswith(n + ".")), None)
        if owner is None:
            rest += nb
        else:
            per[owner] += nb
    real = state_nbytes(pack_state_dict(model)[0])
    if real != rest + sum(per.values()):
        raise RuntimeError(f"storage accounting ({rest + sum(per.values())} bytes) differs from the packed size "
                           f"({real} bytes): pack.py's format changed; update quant/defakeq/haq.storage_breakdown")
    return per, rest


def measure_costs(fp_model: nn.Module, base: QuantConfig, layers: list[str], bits: tuple[int, ...],
                  veft_ratio: float = 0.0, veft_bits: int = 8, size: int = 64) -> dict[str, Any]:
    """Exact per-(layer, bits) packed bytes and BOPs, plus the plan-independent base (see module doc)."""
    mods = dict(fp_model.named_modules())
    kcount = {n: veft_count(_out_channels(mods[n]), veft_ratio) for n in layers}
    storage = {n: [] for n in layers}
    base_storage = None
    for b in bits:
        m = build_quantized(fp_model, mixed_config(base, dict.fromkeys(layers, b)),
                            {n: list(range(k)) for n, k in kcount.items() if k}, veft_bits)
        per, rest = storage_breakdown(m, layers)
        if base_storage is None:
            base_storage = rest
        elif rest != base_storage:
            raise RuntimeError(f"storage of the non-allocated tensors changed with the width ({rest} vs "
                               f"{base_storage} bytes): storage is not additive for this model")
        for n in layers:
            storage[n].append(per[n])
    rows = {r["name"]: r for r in layer_macs(m, size)}  # MACs do not depend on the width
    base_bops = float(sum(r["macs"] * r["w_bits"] * r["a_bits"] for n, r in rows.items()
                          if n not in storage and r["w_bits"] <= 8 and r["a_bits"] <= 8))
    bops = {}
    for n in layers:
        macs, cout = rows[n]["macs"], _out_channels(mods[n])
        f = kcount[n] / cout
        bops[n] = [float(macs * ((1 - f) * b * b + f * veft_bits * b)) for b in bits]
    return {"storage": storage, "bops": bops, "base_storage": int(base_storage), "base_bops": base_bops,
            "veft_channels": kcount}


def _out_channels(m: nn.Module) -> int:
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


def measure_haq(fp_model: nn.Module, batches: list, base: QuantConfig, bits: tuple[int, ...] = DEFAULT_BITS,
                sensitivity: str = "taylor", cka_weight: float = 1.0, cka_samples: int = 128,
                sens_samples: int = 64, veft_ratio: float = 0.0, veft_bits: int = 8, size: int | None = None,
                hawq_iters: int = 8) -> HAQScores:
    """Measure everything HAQ allocates from (see module doc). `fp_model` is not modified."""
    model = copy.deepcopy(fp_model).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    if size is None:
        size = int(batches[0][0].shape[-1]) if batches else 64
    layers, _ = allocatable_layers(model, base)
    if not layers:
        raise ValueError("no layer to allocate (every quantizable layer is first/last or excluded)")
    bits = tuple(sorted(int(b) for b in bits))
    costs = measure_costs(model, base, layers, bits, veft_ratio, veft_bits, size)
    xs, ys = first_samples(batches, max(cka_samples, sens_samples))
    cka, rho = cka_redundancy(model, layers, xs[:cka_samples])
    xsens, ysens = xs[:sens_samples], ys[:sens_samples]
    kind = base.quantizer
    if sensitivity == "taylor":
        sens = taylor_sensitivity(model, layers, xsens, bits, kind)
    elif sensitivity == "measured":
        sens = measured_sensitivity(model, layers, xsens, bits, kind)
    elif sensitivity == "hawq":
        sens = hawq_sensitivity(model, layers, xsens, ysens, bits, kind, iters=hawq_iters)
    else:
        raise ValueError(f"sensitivity must be taylor, measured or hawq, not {sensitivity!r}")
    uniq = np.clip(1.0 - rho, 1e-6, None)
    imp = uniq / uniq.mean()
    cost = [[float(sens[n][j] * imp[i] ** cka_weight) for j in range(len(bits))] for i, n in enumerate(layers)]
    return HAQScores(
        layers=layers, bits=list(bits), storage=[costs["storage"][n] for n in layers],
        bops=[costs["bops"][n] for n in layers], sensitivity=[sens[n] for n in layers],
        importance=[float(v) for v in imp], cost=cost, base_storage=costs["base_storage"],
        base_bops=costs["base_bops"], redundancy=[float(v) for v in rho], cka=cka.round(5).tolist(),
        method={"sensitivity": sensitivity, "cka_weight": cka_weight, "cka_samples": int(len(xs[:cka_samples])),
                "sens_samples": int(len(xsens)), "quantizer": kind, "size": size, "tied_activations": True,
                "veft_ratio": veft_ratio, "veft_bits": veft_bits},
        veft_channels={n: int(costs["veft_channels"][n]) for n in layers},
    )


def haq_scores(fp: nn.Module, batches: list, quantizer: str = "lsq", bits: tuple[int, ...] = DEFAULT_BITS,
               veft_ratio: float = DEFAULT_VEFT_RATIO, sensitivity: str = "taylor", cka_weight: float = 1.0,
               size: int | None = None) -> HAQScores:
    """`measure_haq` from DeFakeQ's base config (`student.base_config(quantizer)`)."""
    return measure_haq(fp, batches, base_config(quantizer), bits=bits, sensitivity=sensitivity,
                       cka_weight=cka_weight, veft_ratio=veft_ratio, size=size)


# ============================================================================ outputs


def plot_allocation(scores: HAQScores, alloc: dict[str, int], out_png: str | Path, title: str = "") -> Path:
    """Bar chart of bits per layer with the layer's sensitivity (at the lowest width, log scale) overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    names = scores.layers
    b = [alloc[n] for n in names]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.38 * len(names) + 2), 4.2))
    colors = {2: "#d62728", 3: "#ff7f0e", 4: "#2ca02c", 8: "#1f77b4"}
    ax.bar(range(len(names)), b, color=[colors.get(v, "#7f7f7f") for v in b], label="bits (W=A)")
    ax.set_ylabel("bits (weights = activations)")
    ax.set_yticks(scores.bits)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=75, ha="right", fontsize=7)
    ax2 = ax.twinx()
    lo = [max(r[0], 1e-12) for r in scores.cost]
    ax2.plot(range(len(names)), lo, "k.-", label=f"cost c(l, {scores.bits[0]}b) = S·w^γ")
    ax2.plot(range(len(names)), [max(r[0], 1e-12) for r in scores.sensitivity], "x:", color="#555555",
             label=f"sensitivity S(l, {scores.bits[0]}b)")
    ax2.set_yscale("log")
    ax2.set_ylabel("logit sensitivity (log)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    ax.set_title(title or "DeFakeQ HAQ allocation", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def haq_record(scores: HAQScores, alloc: dict[str, int], budget_bytes: int | None, budget_bops: float | None
               ) -> dict[str, Any]:
    """JSON stored as fakelite_quant["haq"]: the allocation, its predicted cost and every score."""
    return {"allocation": alloc, "budget_bytes": budget_bytes, "budget_bops": budget_bops,
            "predicted_storage_bytes": scores.plan_storage(alloc), "predicted_bops": scores.plan_bops(alloc),
            "objective": scores.plan_cost(alloc), "scores": json.loads(json.dumps(scores.to_dict()))}
