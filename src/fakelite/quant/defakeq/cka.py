"""DeFakeQ HAQ, step 1: redundancy of each layer's representation from linear CKA (OMPQ-style).

Linear CKA (Kornblith et al. 2019) between the outputs of every pair of allocated layers on calibration images,
from centred n×n Gram matrices (memory O(n²) per layer). ρ_l = mean_{m≠l} CKA(l, m) is how much of layer l's
representation other layers already carry; `haq.measure_haq` turns it into the importance w_l.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


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
