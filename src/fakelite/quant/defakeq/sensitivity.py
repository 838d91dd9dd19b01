"""DeFakeQ HAQ, step 2: sensitivity S_l(b), how much the detector's logit moves when only layer l is quantized at
b bits (weights and input activations tied, W_bA_b).

- "taylor" (default, `taylor_sensitivity`): first-order, E_i[(Σ g_i ⊙ Δy_i)²], g = ∂logit/∂y_l (one FP
  forward/backward), Δy = Q_b-layer(x_l) − y_l computed locally on the cached layer input (weights AND activations
  quantized);
- "measured" (`measured_sensitivity`): the real E[(z_q − z)²] with only layer l swapped for its quantized version
  (one full forward per (l, b); slower, used to validate "taylor");
- "hawq" (`hawq_sensitivity`): HAWQ-v2, Tr(H_l)/n_l · ‖Q_b(W_l) − W_l‖² with a Hutchinson trace of the BCE-loss
  Hessian (weights only).

Also the shared measuring tools: `capture_layers` (inputs, outputs and ∂logit/∂output of named layers),
`local_qlayer` (one layer quantized on its own) and `channel_taylor` (the per-channel first-order logit change
that VEFT's channel choice uses).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fakelite.utils.modules import set_module

from ..layers import QuantConv2d, QuantLinear
from ..quantizers import make_act_quantizer, make_weight_quantizer


def first_samples(batches: list, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` samples of calibration batches ((x, y) tuples, or bare x with labels 0) as (x, y)."""
    xs, ys, got = [], [], 0
    for b in batches:
        x, y = (b[0], b[1]) if isinstance(b, tuple | list) else (b, torch.zeros(len(b)))
        xs.append(x)
        ys.append(y)
        got += len(x)
        if got >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def local_qlayer(m: nn.Module, bits: int, kind: str, x: torch.Tensor, percentile: float = 99.99) -> nn.Module:
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
            q = local_qlayer(mods[n], b, kind, xs[n])
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
            q = local_qlayer(mods[n], b, kind, xs[n])
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
