"""Pruning: structured channel pruning that physically shrinks the network, and unstructured magnitude pruning.

Structured (`prune_structured`): torch-pruning's dependency graph couples every channel that must go together —
the residual additions of ResNets and inverted residuals, depthwise convolutions (groups = channels), the
squeeze-and-excitation gates of MobileNetV3 (fc2's output multiplies the depthwise output) — and L1-magnitude
importance decides which channels go. The NPR layer has no parameters and the stem's 3 input channels are never
touched; the final 1-logit layer keeps its single output (its *inputs* shrink with the features before it).
The result is an ordinary, smaller dense network: it runs faster with the stock kernels.

Because a pruned network no longer matches `create_model(name)`, the artifact records the shapes of every
Conv2d/BatchNorm2d/Linear in `header["arch"]["pruned"]` (see `fakelite.models.shapes.module_spec`), and
`fakelite.artifact.build` calls `reshape_to_spec` before loading the weights. `reshape_to_state` does the same
from a plain state dict.

Unstructured (`prune_unstructured`): zero the smallest-|w| weights of every Conv2d/Linear (except the logit
layer), per layer or with one global threshold on layer-normalised magnitudes (|w| / RMS of its layer). The
zeros are kept through fine-tuning by `keep_masks`, and the artifact stores such tensors as bit mask + non-zero values (fakelite.compress.sparse). Dense kernels do not run
faster on zeros: unstructured pruning buys storage, structured pruning buys speed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from fakelite.models.shapes import sync_feature_dim


@dataclass
class PruneConfig:
    """What `fakelite prune` does. `ratio` is the fraction of channels (structured) or weights (unstructured) removed."""

    ratio: float = 0.3
    structured: bool = True
    global_pruning: bool = False
    max_layer_ratio: float = 0.9  # never remove more than this fraction of one layer
    round_to: int | None = None  # keep channel counts multiples of this (e.g. 8 for SIMD-friendly widths)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def logit_layers(model: nn.Module) -> list[nn.Module]:
    """The final 1-logit layer(s): never pruned (their inputs shrink with the features before them)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 1]


def prune_structured(model: nn.Module, ratio: float, *, global_pruning: bool = False, size: int = 64,
                     max_layer_ratio: float = 0.9, round_to: int | None = None) -> nn.Module:
    """Remove `ratio` of the channels of every prunable group (L1 magnitude), in place; returns the model.

    `size` is the side of the example input used to trace the dependency graph (any even size works).
    """
    import torch_pruning as tp

    if not 0 < ratio < 1:
        raise ValueError(f"pruning ratio must be in (0, 1), not {ratio}")
    was_training = model.training
    model.eval()
    example = torch.zeros(1, 3, size, size)
    pruner = tp.pruner.MagnitudePruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        global_pruning=global_pruning,
        max_pruning_ratio=max_layer_ratio,
        ignored_layers=logit_layers(model),
        round_to=round_to,
    )
    pruner.step()
    model.train(was_training)
    sync_feature_dim(model)
    model.fakelite_pruned = True
    return model


# ---------------------------------------------------------------- unstructured


def prunable_weights(model: nn.Module) -> dict[str, nn.Module]:
    """Conv2d/Linear modules whose weights unstructured pruning may zero (all but the logit layer)."""
    skip = {id(m) for m in logit_layers(model)}
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear) and id(m) not in skip}


@torch.no_grad()
def prune_unstructured(model: nn.Module, ratio: float, *, global_pruning: bool = True) -> dict[str, torch.Tensor]:
    """Zero the `ratio` smallest-magnitude weights (per layer, or under one global threshold), in place.

    Returns the keep-masks {module name: bool tensor}; marks the model for sparse packing in the artifact.
    """
    if not 0 < ratio < 1:
        raise ValueError(f"pruning ratio must be in (0, 1), not {ratio}")
    layers = prunable_weights(model)
    masks: dict[str, torch.Tensor] = {}
    if global_pruning:
        # one ranking over all layers of |w| / RMS(layer): raw magnitudes are not comparable across layers (a
        # Linear initialised at std 0.01 would be wiped out whole, leaving a constant detector)
        normed = {n: m.weight.detach().abs() / m.weight.detach().pow(2).mean().sqrt().clamp_min(1e-12)
                  for n, m in layers.items()}
        allw = torch.cat([v.reshape(-1) for v in normed.values()])
        k = int(round(ratio * allw.numel()))
        thr = torch.kthvalue(allw, k).values if k > 0 else torch.tensor(-1.0)
        for n in layers:
            masks[n] = normed[n] > thr
    else:
        for n, m in layers.items():
            w = m.weight.detach().abs().reshape(-1)
            k = int(round(ratio * w.numel()))
            if k == 0:
                masks[n] = torch.ones_like(m.weight, dtype=torch.bool)
                continue
            # exact count even with ties: keep the (numel − k) largest
            keep = torch.zeros(w.numel(), dtype=torch.bool)
            keep[torch.topk(w, w.numel() - k, largest=True).indices] = True
            masks[n] = keep.view_as(m.weight)
    for n, m in layers.items():
        m.weight.masked_fill_(~masks[n], 0.0)  # +0.0, never -0.0
    model.fakelite_sparse = {"ratio": ratio, "global": global_pruning}
    return masks


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over the prunable Conv2d/Linear weights."""
    layers = prunable_weights(model)
    tot = sum(m.weight.numel() for m in layers.values())
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    return zeros / max(1, tot)


def masks_from_zeros(model: nn.Module) -> dict[str, torch.Tensor]:
    """Keep-masks read back from a sparse model's zeros (e.g. after loading a sparse artifact)."""
    return {n: m.weight.detach() != 0 for n, m in prunable_weights(model).items()}


@contextmanager
def keep_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> Iterator[None]:
    """During fine-tuning, keep pruned weights at zero: gradients of pruned weights are masked (so Adam's moments
    stay 0) and each forward re-zeros them (so weight decay cannot revive them)."""
    handles = []
    layers = prunable_weights(model)
    for n, mask in masks.items():
        m = layers[n]
        keep = mask.to(m.weight.device)
        handles.append(m.weight.register_hook(lambda g, keep=keep: g * keep))

        def pre(mod: nn.Module, args: tuple, keep: torch.Tensor = keep) -> None:
            with torch.no_grad():
                mod.weight.masked_fill_(~keep, 0.0)

        handles.append(m.register_forward_pre_hook(pre))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for n, mask in masks.items():
                layers[n].weight.masked_fill_(~mask, 0.0)
