"""Precise BatchNorm statistics (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021).

BN's running mean/var are an exponential average of batch statistics computed under *earlier* weights. In short
runs (few epochs, small data, QAT) the weights move faster than that average follows, so eval-mode outputs drift
away from train-mode ones: scores keep their ranking (high AUC) but shift across 0.5 (Acc at 0.5 collapses to
one class). Recomputing the statistics under the current weights with a plain average over a fixed set of
training images removes the drift. Deterministic: the same images, centre-cropped, in the same order.
"""

from __future__ import annotations

import torch
from torch import nn

from fakelite.data.dataset import ImageDataset, collate


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, ds: ImageDataset, batch_size: int = 32, max_images: int = 512) -> int:
    """Reset every BN layer's running statistics and re-estimate them as a cumulative average over up to
    `max_images` items of `ds` (forward passes in train mode, no gradients). Returns the images used."""
    bns = _bn_layers(model)
    if not bns:
        return 0
    was_training = model.training
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: an exact mean over the batches seen
    # only BN layers in train mode: dropout and quantizers with running buffers (MinMax, SLR) stay untouched
    model.eval()
    for bn in bns:
        bn.train()
    used = 0
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    n = min(len(ds), max_images)
    for start in range(0, n, batch_size):
        batch = collate([ds[i] for i in range(start, min(n, start + batch_size))])
        if batch is None or isinstance(batch[0], list):
            continue
        model(batch[0].to(device))
        used += len(batch[1])
    for bn, m in zip(bns, momenta, strict=True):
        bn.momentum = m
    model.train(was_training)
    return used
