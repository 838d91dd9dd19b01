"""DeFakeQ HAQ — horizontal adaptive (mixed-precision) bit allocation across layers.

Per quantizable layer l and candidate width b ∈ {2, 3, 4, 8} (weights and input activations tied, W_bA_b):

1. **Redundancy from feature correlations (OMPQ-style).** Linear CKA between the outputs of every pair of
   layers on `cka_samples` calibration images (centred n×n Gram matrices, so memory is O(n²) per layer).
   ρ_l = mean_{m≠l} CKA(l, m) is how much of layer l's representation other layers already carry;
   importance w_l = (1 − ρ_l) / mean(1 − ρ). Redundant layers are cheaper to quantize hard.
2. **Sensitivity S_l(b)** — how much the detector's logit moves when only layer l is quantized at b bits:
   - "taylor" (default): first-order, E_i[(Σ g_i ⊙ Δy_i)²], g = ∂logit/∂y_l (one FP forward/backward),
     Δy = Q_b-layer(x_l) − y_l computed locally on the cached layer input (weights AND activations quantized);
   - "measured": the real E[(z_q − z)²] with only layer l swapped for its quantized version (one full forward
     per (l, b); slower, used to validate "taylor");
   - "hawq": HAWQ-v2, Tr(H_l)/n_l · ‖Q_b(W_l) − W_l‖² with a Hutchinson trace of the BCE-loss Hessian
     (weights only).
3. **Cost** c(l, b) = S_l(b) · w_l^γ (γ = `cka_weight`, 0 turns the CKA term off).
4. **Allocation**: min Σ c(l, b_l) s.t. storage ≤ budget (bytes, counted exactly as `pack.pack_state_dict`
   stores them, i.e. as `cost.model_cost(...)["storage_bytes"]`) and/or BOPs ≤ budget — a multiple-choice
   knapsack solved exactly as an ILP with `scipy.optimize.milp` (HiGHS branch and bound).

Storage is additive over layers: every stored tensor belongs to exactly one quantized layer (its packed codes,
quantizer state, VEFT rows) or to the rest of the model (BN, FP layers), which does not depend on the plan. The
per-layer bytes are measured by building the model at each uniform width and reading the packed tensors, so
the ILP's storage is the real packed size, byte for byte (tested against `model_cost`).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fakelite.utils.modules import set_module

from .convert import LayerQuantSpec, QuantConfig, quantize, resolve_plan
from .layers import QuantConv2d, QuantLinear
from .pack import pack_state_dict, packed_nbytes, state_nbytes
from .quantizers import make_act_quantizer, make_weight_quantizer

DEFAULT_BITS = (2, 3, 4, 8)
MB = 1_000_000  # --budget-mb counts decimal megabytes


class InfeasibleBudget(ValueError):
    """The budget is below the cheapest possible allocation (the message names the minimum)."""


# ============================================================================ CKA


def centered_gram(x: torch.Tensor) -> torch.Tensor:
    """H·(X Xᵀ)·H for features X (n × ...), flattened per sample, in float64."""
    x = x.reshape(x.shape[0], -1).double()
    k = x @ x.T
    n = k.shape[0]
    h = torch.eye(n, dtype=k.dtype) - 1.0 / n
    return h @ k @ h


def gram_cka(kx: torch.Tensor, ky: torch.Tensor) -> float:
    """Linear CKA from two centred Gram matrices: ⟨Kx, Ky⟩ / (‖Kx‖ ‖Ky‖)."""
    num = (kx * ky).sum()
    den = torch.linalg.norm(kx) * torch.linalg.norm(ky)
    return float(num / den) if float(den) > 0 else 0.0


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) of two feature matrices with the same samples (n × d₁, n × d₂).

    Equal to 1 for identical features; invariant to orthogonal transforms and isotropic scaling of either.
    """
    return gram_cka(centered_gram(x), centered_gram(y))


# ============================================================================ data structures


@dataclass
class HAQScores:
    """Everything the allocator needs, JSON-able (stored in the artifact under fakelite_quant["haq"])."""

    layers: list[str]
    bits: list[int]
    storage: list[list[int]]  # bytes per (layer, bits): packed codes + quantizer state (+ VEFT rows)
    bops: list[list[float]]  # MACs·b_w·b_a per (layer, bits) (+ VEFT rows at their width)
    sensitivity: list[list[float]]  # S_l(b)
    importance: list[float]  # w_l from CKA redundancy
    cost: list[list[float]]  # c(l, b) = S_l(b)·w_l^γ
    base_storage: int  # bytes of everything else (FP layers, BN, first/last layers)
    base_bops: float  # BOPs of the layers not allocated (first/last at their fixed width)
    redundancy: list[float] = field(default_factory=list)  # ρ_l
    cka: list[list[float]] = field(default_factory=list)  # pairwise CKA of the allocated layers' outputs
    method: dict[str, Any] = field(default_factory=dict)
    veft_channels: dict[str, int] = field(default_factory=dict)  # per layer, counted in storage/bops

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HAQScores:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def min_storage(self) -> int:
        return self.base_storage + sum(min(r) for r in self.storage)

    def min_bops(self) -> float:
        return self.base_bops + sum(min(r) for r in self.bops)

    def plan_storage(self, alloc: dict[str, int]) -> int:
        return self.base_storage + sum(self.storage[i][self.bits.index(alloc[n])] for i, n in enumerate(self.layers))

    def plan_bops(self, alloc: dict[str, int]) -> float:
        return self.base_bops + sum(self.bops[i][self.bits.index(alloc[n])] for i, n in enumerate(self.layers))

    def plan_cost(self, alloc: dict[str, int]) -> float:
        return sum(self.cost[i][self.bits.index(alloc[n])] for i, n in enumerate(self.layers))


# ============================================================================ exact multiple-choice knapsack


def solve_mckp(cost: np.ndarray, weights: list[np.ndarray], capacities: list[float]) -> list[int]:
    """Pick one option per group (row) minimising Σ cost subject to Σ weight_k ≤ capacity_k for each k.

    cost: (L, B); weights: list of (L, B) arrays; returns the chosen column per row. Exact (HiGHS MILP).
    Raises InfeasibleBudget when no choice fits.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    cost = np.asarray(cost, dtype=np.float64)
    n_l, n_b = cost.shape
    c = cost.reshape(-1)
    a_eq = np.zeros((n_l, n_l * n_b))
    for i in range(n_l):
        a_eq[i, i * n_b:(i + 1) * n_b] = 1.0
    cons = [LinearConstraint(a_eq, 1.0, 1.0)]
    for w, cap in zip(weights, capacities, strict=True):
        cons.append(LinearConstraint(np.asarray(w, dtype=np.float64).reshape(1, -1), -np.inf, float(cap)))
    res = milp(c, constraints=cons, integrality=np.ones_like(c), bounds=Bounds(0, 1),
               options={"mip_rel_gap": 0.0, "presolve": True})
    if res.x is None or res.status not in (0,):
        raise InfeasibleBudget(f"no allocation fits the budget (solver: {res.message})")
    x = np.round(res.x).reshape(n_l, n_b)
    choice = [int(np.argmax(x[i])) for i in range(n_l)]
    for w, cap in zip(weights, capacities, strict=True):  # guard against solver tolerances
        if sum(float(np.asarray(w)[i, j]) for i, j in enumerate(choice)) > cap + 1e-9:
            raise InfeasibleBudget("solver returned a choice over the budget")
    return choice


def brute_force_mckp(cost: np.ndarray, weights: list[np.ndarray], capacities: list[float]) -> tuple[list[int], float]:
    """Exhaustive reference for `solve_mckp` (small cases only): (choice, optimal cost)."""
    cost = np.asarray(cost, dtype=np.float64)
    best: tuple[list[int], float] | None = None
    for choice in itertools.product(range(cost.shape[1]), repeat=cost.shape[0]):
        if all(sum(np.asarray(w)[i, j] for i, j in enumerate(choice)) <= cap for w, cap in zip(weights, capacities,
                                                                                               strict=True)):
            v = float(sum(cost[i, j] for i, j in enumerate(choice)))
            if best is None or v < best[1]:
                best = (list(choice), v)
    if best is None:
        raise InfeasibleBudget("no allocation fits")
    return best


def allocate(scores: HAQScores, budget_bytes: int | None = None, budget_bops: float | None = None) -> dict[str, int]:
    """Bits per allocated layer minimising Σ c(l, b) under the storage and/or BOPs budget (exact ILP).

    budget_bytes is compared with the packed storage exactly as `model_cost(...)["storage_bytes"]` counts it.
    Raises InfeasibleBudget naming the minimum feasible budget.
    """
    if budget_bytes is None and budget_bops is None:
        raise ValueError("give a storage budget (budget_mb) or a BOPs budget (budget_bops)")
    weights, caps = [], []
    if budget_bytes is not None:
        need = scores.min_storage()
        if budget_bytes < need:
            raise InfeasibleBudget(f"storage budget {budget_bytes / MB:.6f} MB ({int(budget_bytes)} bytes) is below "
                                   f"the minimum feasible {need / MB:.6f} MB ({need} bytes: every layer at "
                                   f"{min(scores.bits)} bits)")
        weights.append(np.asarray(scores.storage, dtype=np.float64))
        caps.append(float(budget_bytes - scores.base_storage))
    if budget_bops is not None:
        need_b = scores.min_bops()
        if budget_bops < need_b:
            raise InfeasibleBudget(f"BOPs budget {budget_bops:.6g} is below the minimum feasible {need_b:.6g} "
                                   f"(every layer at {min(scores.bits)} bits)")
        weights.append(np.asarray(scores.bops, dtype=np.float64))
        caps.append(float(budget_bops - scores.base_bops))
    choice = solve_mckp(np.asarray(scores.cost), weights, caps)
    return {n: scores.bits[j] for n, j in zip(scores.layers, choice, strict=True)}


# ============================================================================ measurement


def _conv_like(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d | nn.Linear)


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


def _with_layers(base: QuantConfig, alloc: dict[str, int]) -> QuantConfig:
    cfg = copy.deepcopy(base)
    cfg.layers = dict(cfg.layers)
    for n, b in alloc.items():
        cfg.layers[n] = LayerQuantSpec(w_bits=int(b), a_bits=int(b))
    return cfg


def mixed_config(base: QuantConfig, alloc: dict[str, int]) -> QuantConfig:
    """The QuantConfig of an allocation (exact layer names as patterns; a_bits = w_bits)."""
    return _with_layers(base, alloc)


def build_quantized(fp_model: nn.Module, cfg: QuantConfig, veft: dict[str, list[int]] | None = None,
                    veft_bits: int = 8) -> nn.Module:
    """Deep copy of `fp_model` quantized with `cfg`, with VEFT channels attached (plan records them)."""
    m = quantize(copy.deepcopy(fp_model), cfg)
    if veft:
        from .veft import attach_veft_model

        attach_veft_model(m, veft, bits=veft_bits)
    return m


def storage_breakdown(model: nn.Module, names: list[str]) -> tuple[dict[str, int], int]:
    """(bytes per named quantized layer, bytes of everything else) of the packed artifact tensors.

    A layer's bytes: its packed codes (⌈n·b/8⌉, each layer byte-aligned) plus every state tensor under its name
    (quantizer state, bias, VEFT rows); the rest is every other state tensor. The sum is checked against the
    real `pack_state_dict` size, so a change of the packing format cannot silently break the accounting.
    """
    from .layers import is_quant_layer
    from .quantizers import NoQuant

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
                           f"({real} bytes): pack.py's format changed; update mixed.storage_breakdown")
    return per, rest


def measure_costs(fp_model: nn.Module, base: QuantConfig, layers: list[str], bits: tuple[int, ...],
                  veft_ratio: float = 0.0, veft_bits: int = 8, size: int = 64) -> dict[str, Any]:
    """Exact per-(layer, bits) packed bytes and BOPs, plus the plan-independent base (see module doc)."""
    from .cost import layer_macs

    mods = dict(fp_model.named_modules())
    kcount = {n: veft_count(_out_channels(mods[n]), veft_ratio) for n in layers}
    storage = {n: [] for n in layers}
    base_storage = None
    for b in bits:
        m = build_quantized(fp_model, _with_layers(base, dict.fromkeys(layers, b)),
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


def _local_qlayer(m: nn.Module, bits: int, kind: str, x: torch.Tensor, percentile: float = 99.99) -> nn.Module:
    """A quantized copy of one FP layer at W_bA_b, its activation quantizer calibrated on x."""
    signed = bool(float(x.min()) < 0)
    wq = make_weight_quantizer(kind.removeprefix("slr-"), bits, m.weight.detach(), percentile=percentile)
    ch = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
    aq = make_act_quantizer(kind, bits, signed, ch, percentile=percentile)
    q = (QuantConv2d if isinstance(m, nn.Conv2d) else QuantLinear).from_float(m, wq, aq)
    q.eval()
    aq.calibrating = True
    with torch.no_grad():
        q(x)
    aq.calibrating = False
    return q


def capture_layers(model: nn.Module, names: list[str], x: torch.Tensor, with_grad: bool = True
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """Inputs, outputs and ∂logit/∂output of each named layer on batch x (FP model, eval mode)."""
    mods = dict(model.named_modules())
    xs: dict[str, torch.Tensor] = {}
    ys: dict[str, torch.Tensor] = {}
    hooks = []
    for n in names:
        def hook(_m, inp, out, n=n):
            xs[n] = inp[0].detach().clone()
            if with_grad and out.requires_grad:
                out.retain_grad()
            ys[n] = out
        hooks.append(mods[n].register_forward_hook(hook))
    model.eval()
    try:
        with torch.set_grad_enabled(with_grad):
            z = model(x).reshape(-1)
            if with_grad:
                z.sum().backward()
    finally:
        for h in hooks:
            h.remove()
    grads = {n: (ys[n].grad.detach() if with_grad and ys[n].grad is not None else torch.zeros_like(ys[n]))
             for n in names}
    outs = {n: ys[n].detach() for n in names}
    model.zero_grad(set_to_none=True)
    return xs, outs, grads, z.detach()


def _taylor(g: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Per-sample first-order logit change Σ g ⊙ Δy."""
    return (g * dy).reshape(g.shape[0], -1).sum(1)


def channel_taylor(g: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-output-channel first-order logit change (n × C)."""
    if g.dim() == 2:
        return g * dy
    return (g * dy).flatten(2).sum(2)


def taylor_sensitivity(model: nn.Module, names: list[str], x: torch.Tensor, bits: tuple[int, ...], kind: str
                       ) -> dict[str, list[float]]:
    """S_l(b) = E[(Σ g ⊙ Δy)²] (first-order logit change when only layer l is quantized)."""
    mods = dict(model.named_modules())
    xs, ys, gs, _ = capture_layers(model, names, x)
    out: dict[str, list[float]] = {}
    for n in names:
        row = []
        for b in bits:
            q = _local_qlayer(mods[n], b, kind, xs[n])
            with torch.no_grad():
                row.append(float((_taylor(gs[n], q(xs[n]) - ys[n]) ** 2).mean()))
        out[n] = row
    return out


def measured_sensitivity(model: nn.Module, names: list[str], x: torch.Tensor, bits: tuple[int, ...], kind: str
                         ) -> dict[str, list[float]]:
    """S_l(b) = E[(z_q − z)²] with only layer l replaced by its W_bA_b version (one forward per (l, b))."""

    mods = dict(model.named_modules())
    xs, _, _, z = capture_layers(model, names, x, with_grad=False)
    out: dict[str, list[float]] = {}
    model.eval()
    for n in names:
        row = []
        for b in bits:
            q = _local_qlayer(mods[n], b, kind, xs[n])
            set_module(model, n, q)
            try:
                with torch.no_grad():
                    row.append(float(((model(x).reshape(-1) - z) ** 2).mean()))
            finally:
                set_module(model, n, mods[n])
        out[n] = row
    return out


def hawq_sensitivity(model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor, bits: tuple[int, ...],
                     kind: str, iters: int = 8, seed: int = 0) -> dict[str, list[float]]:
    """HAWQ-v2: Tr(H_l)/n_l · ‖Q_b(W_l) − W_l‖², Hutchinson estimate of the BCE-loss Hessian trace per layer."""
    mods = dict(model.named_modules())
    ws = [mods[n].weight for n in names]
    model.eval()
    loss = nn.functional.binary_cross_entropy_with_logits(model(x).reshape(-1), y.float().reshape(-1))
    grads = torch.autograd.grad(loss, ws, create_graph=True)
    g = torch.Generator().manual_seed(seed)
    traces = np.zeros(len(names))
    for _ in range(iters):
        vs = [(torch.randint(0, 2, w.shape, generator=g) * 2 - 1).to(w.dtype) for w in ws]
        hv = torch.autograd.grad(grads, ws, grad_outputs=vs, retain_graph=True)
        traces += np.array([float((h * v).sum()) for h, v in zip(hv, vs, strict=True)])
    traces /= iters
    out = {}
    for i, n in enumerate(names):
        w = mods[n].weight.detach()
        row = []
        for b in bits:
            wq = make_weight_quantizer(kind.removeprefix("slr-"), b, w).eval()
            with torch.no_grad():
                row.append(max(traces[i], 0.0) / w.numel() * float(((wq(w) - w) ** 2).sum()))
        out[n] = row
    return out


def cka_redundancy(model: nn.Module, names: list[str], x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(pairwise linear-CKA matrix of the layers' outputs, ρ_l = mean CKA with the other layers)."""
    mods = dict(model.named_modules())
    grams: dict[str, torch.Tensor] = {}
    hooks = [mods[n].register_forward_hook(lambda _m, _i, o, n=n: grams.__setitem__(n, centered_gram(o.detach())))
             for n in names]
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    k = len(names)
    mat = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            mat[i, j] = mat[j, i] = gram_cka(grams[names[i]], grams[names[j]])
    rho = (mat.sum(1) - 1.0) / max(1, k - 1)
    return mat, rho


def _concat(batches: list, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, got = [], [], 0
    for b in batches:
        x, y = (b[0], b[1]) if isinstance(b, tuple | list) else (b, torch.zeros(len(b)))
        xs.append(x)
        ys.append(y)
        got += len(x)
        if got >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


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
    xs, ys = _concat(batches, max(cka_samples, sens_samples))
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
