"""ZeroQ data-free calibration inputs (Cai et al., "ZeroQ: A Novel Zero Shot Quantization Framework", CVPR 2020).

"Distilled data": start from Gaussian noise and optimise the *inputs* (the network is frozen, in eval mode) so that
the batch statistics of every BatchNorm layer's input match the running statistics stored in the model — the
statistics of the training data the user no longer has. ZeroQ eq. (4):

    min_{x^r}  Σ_{i=0}^{L}  ‖μ̃_i^r − μ_i‖²₂ + ‖σ̃_i^r − σ_i‖²₂

where μ̃_i^r / σ̃_i^r are the per-channel mean / standard deviation of the distilled batch at BN layer i's input
(over batch and space, biased variance), μ_i / σ_i = running_mean / sqrt(running_var + ε), and i = 0 is the input
itself, whose per-image channel statistics are pulled towards those of normalised images (mean 0, std 1). As in the
authors' code, each squared norm is divided by the number of channels, the optimiser is Adam at lr 0.5 for 500
steps per batch with ReduceLROnPlateau (patience 100, min lr 1e-4).

Pure BN matching gives no control over the class: on a binary detector the distilled inputs mostly land on one
side of the decision (all "real" in docs/import.md's run). `label_weight` > 0 adds a class term as GDFQ does
(Xu et al., "Generative Low-bitwidth Data Free Quantization", ECCV 2020: BN statistics + cross-entropy to fixed
labels): label_weight · BCE(logit, t) with t alternating 0/1 over the batch, so both classes are represented
(DeFakeQ's calibration uses labels for its contrastive and BCE terms). Default 0: ZeroQ as published.

This module is pure model → tensors: `distill_inputs(model, n, size)` returns an (n, 3, size, size) float tensor in
the model's input space (normalised; NPR models compute NPR inside the network, so the loss flows through it).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ZeroQConfig:
    """Settings of the distillation (defaults: ZeroQ's code)."""

    steps: int = 500  # Adam steps per batch
    lr: float = 0.5
    batch_size: int = 32
    patience: int = 100  # ReduceLROnPlateau
    min_lr: float = 1e-4
    seed: int = 0
    max_seconds: float | None = None  # stop a batch's optimisation early when the wall time is spent
    label_weight: float = 0.0  # > 0: add label_weight · BCE(logit, target), targets alternating real/fake

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm2d layers that hold running statistics, in module order."""
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None]


def bn_statistic_loss(captured: list[torch.Tensor], layers: list[nn.BatchNorm2d], x: torch.Tensor) -> torch.Tensor:
    """ZeroQ eq. (4) for one batch: Σ over BN layers of ‖μ̃ − μ‖²/C + ‖σ̃ − σ‖²/C, plus the input term.

    captured[i]: the (N, C, H, W) input of layers[i] for this batch; x: the (N, 3, H, W) batch itself.
    Returns a scalar tensor (differentiable w.r.t. x).
    """
    loss = x.new_zeros(())
    for a, bn in zip(captured, layers, strict=True):
        c = a.shape[1]
        flat = a.transpose(0, 1).reshape(c, -1)
        mean = flat.mean(1)
        std = torch.sqrt(flat.var(1, unbiased=False) + bn.eps)
        loss = loss + (mean - bn.running_mean).pow(2).sum() / c
        loss = loss + (std - torch.sqrt(bn.running_var + bn.eps)).pow(2).sum() / c
    flat = x.reshape(x.shape[0], x.shape[1], -1)  # i = 0: every image's channels towards mean 0, std 1
    in_mean = flat.mean(2)
    in_std = torch.sqrt(flat.var(2) + 1e-5)
    loss = loss + in_mean.pow(2).sum() / in_mean.shape[0] + (in_std - 1).pow(2).sum() / in_std.shape[0]
    return loss


def distill_inputs(model: nn.Module, n: int, size: int, cfg: ZeroQConfig | None = None,
                   progress: Any = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """`n` synthetic inputs of shape (3, size, size) whose BN statistics match `model`'s running statistics.

    The model is not modified (a frozen eval-mode copy is optimised against). `progress(done)` is called after each
    step when given. Returns (x: float32 (n, 3, size, size), info {"bn_layers", "loss_start", "loss_end" (means
    over batches), "steps", "seconds", "config"}). Raises ValueError when the model has no BatchNorm statistics.
    """
    cfg = cfg or ZeroQConfig()
    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    layers = bn_layers(net)
    if not layers:
        raise ValueError("ZeroQ needs BatchNorm running statistics; this model has no BatchNorm2d layer")
    captured: dict[int, torch.Tensor] = {}  # keyed by layer index: hooks fire in execution order, not module order

    def hook(i: int):
        def fn(_m: nn.Module, inp: tuple, _out: torch.Tensor) -> None:
            captured[i] = inp[0]
        return fn

    handles = [bn.register_forward_hook(hook(i)) for i, bn in enumerate(layers)]
    g = torch.Generator().manual_seed(cfg.seed)
    out, starts, ends, steps_done = [], [], [], 0
    t0 = time.perf_counter()
    try:
        for start in range(0, n, cfg.batch_size):
            b = min(cfg.batch_size, n - start)
            x = torch.randn(b, 3, size, size, generator=g).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=cfg.lr)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, min_lr=cfg.min_lr, patience=cfg.patience)
            t_batch = time.perf_counter()
            for step in range(cfg.steps):
                captured.clear()
                opt.zero_grad(set_to_none=True)
                logits = net(x).view(-1)
                loss = bn_statistic_loss([captured[i] for i in range(len(layers))], layers, x)
                if cfg.label_weight > 0:
                    target = (torch.arange(b) % 2).float()
                    loss = loss + cfg.label_weight * F.binary_cross_entropy_with_logits(logits, target)
                loss.backward()
                opt.step()
                sched.step(float(loss.detach()))
                if step == 0:
                    starts.append(float(loss.detach()))
                steps_done += 1
                if progress is not None:
                    progress(1)
                if cfg.max_seconds is not None and time.perf_counter() - t_batch > cfg.max_seconds:
                    break
            with torch.no_grad():
                captured.clear()
                net(x)
                ends.append(float(bn_statistic_loss([captured[i] for i in range(len(layers))], layers, x)))
            if len(starts) < len(ends):  # steps=0: plain Gaussian noise (the baseline ZeroQ improves on)
                starts.append(ends[-1])
            out.append(x.detach())
    finally:
        for h in handles:
            h.remove()
    info = {"bn_layers": len(layers), "loss_start": sum(starts) / len(starts), "loss_end": sum(ends) / len(ends),
            "steps": steps_done, "seconds": time.perf_counter() - t0, "config": cfg.to_dict(), "source": "ZeroQ, Cai et al. CVPR 2020, eq. (4)"}
    return torch.cat(out), info
