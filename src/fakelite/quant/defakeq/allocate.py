"""DeFakeQ HAQ, step 4: the allocation. min Σ c(l, b_l) s.t. storage ≤ budget (bytes, counted exactly as
`pack.pack_state_dict` stores them, i.e. as `cost.model_cost(...)["storage_bytes"]`) and/or BOPs ≤ budget — a
multiple-choice knapsack solved exactly as an ILP with `scipy.optimize.milp` (HiGHS branch and bound).

`HAQScores` holds everything the allocator needs (per-(layer, bits) storage, BOPs, sensitivity and cost);
`haq.measure_haq` measures it.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

MB = 1_000_000  # --budget-mb counts decimal megabytes


class InfeasibleBudget(ValueError):
    """The budget is below the cheapest possible allocation (the message names the minimum)."""


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
