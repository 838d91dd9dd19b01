"""Shapes of pruned networks: a structurally pruned model is rebuilt from its registry entry plus these shapes
(as timm's `_prune.py` adapts a model to a pruned layout before loading its weights).

`module_spec(model)` records the constructor shapes of every Conv2d/BatchNorm2d/Linear; the artifact stores it
in `header["arch"]["pruned"]` for models marked `fakelite_pruned` (set by `fakelite.compress.prune`), and
`fakelite.artifact.build` calls `reshape_to_spec` on the fresh registry model before the strict state-dict load.
`reshape_to_state` does the same from a plain state dict (its tensor shapes).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fakelite.utils.modules import set_module


def sync_feature_dim(model: nn.Module) -> None:
    """Keep `model.feature_dim` (used by feature distillation) equal to the pooled feature width."""
    if not hasattr(model, "feature_dim"):
        return
    head = getattr(model, "fc", None)
    if head is None and isinstance(getattr(model, "classifier", None), nn.Sequential):
        head = model.classifier[0]
    if isinstance(head, nn.Linear):
        model.feature_dim = head.in_features


def module_spec(model: nn.Module) -> dict[str, dict[str, int]]:
    """Constructor shapes of every Conv2d/BatchNorm2d/Linear (stored in the artifact header of pruned models)."""
    spec: dict[str, dict[str, int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            spec[name] = {"in": m.in_channels, "out": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.BatchNorm2d):
            spec[name] = {"features": m.num_features}
        elif isinstance(m, nn.Linear):
            spec[name] = {"in": m.in_features, "out": m.out_features}
    return spec


def _new_conv(old: nn.Conv2d, cin: int, cout: int, groups: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, old.kernel_size, old.stride, old.padding, old.dilation, groups,
                     bias=old.bias is not None, padding_mode=old.padding_mode)


def reshape_to_spec(model: nn.Module, spec: dict[str, dict[str, int]]) -> nn.Module:
    """Replace Conv2d/BatchNorm2d/Linear modules so their shapes match `spec` (see `module_spec`); in place.

    Raises KeyError/TypeError for a malformed spec and ValueError when a named module cannot take a shape."""
    modules = dict(model.named_modules())
    for name, s in spec.items():
        old = modules.get(name)
        if old is None:  # e.g. a module added later by quantization: the strict state-dict load checks it
            continue
        if isinstance(old, nn.Conv2d):
            if (old.in_channels, old.out_channels, old.groups) != (s["in"], s["out"], s["groups"]):
                set_module(model, name, _new_conv(old, s["in"], s["out"], s["groups"]))
        elif isinstance(old, nn.BatchNorm2d):
            if old.num_features != s["features"]:
                set_module(model, name, nn.BatchNorm2d(s["features"], old.eps, old.momentum, old.affine,
                                                        old.track_running_stats))
        elif isinstance(old, nn.Linear):
            if (old.in_features, old.out_features) != (s["in"], s["out"]):
                set_module(model, name, nn.Linear(s["in"], s["out"], bias=old.bias is not None))
        else:
            raise ValueError(f"module {name!r} is a {type(old).__name__}, cannot take a pruned shape")
    sync_feature_dim(model)
    model.fakelite_pruned = True
    return model


def spec_from_shapes(model: nn.Module, shapes: dict[str, list[int] | tuple[int, ...]]) -> dict[str, dict[str, int]]:
    """Derive `module_spec` of the pruned network from its state-dict tensor shapes."""
    spec: dict[str, dict[str, int]] = {}
    for name, m in model.named_modules():
        w = shapes.get(f"{name}.weight")
        if isinstance(m, nn.Conv2d) and w is not None:
            cout, cin_per_group = int(w[0]), int(w[1])
            if m.groups == 1:
                groups, cin = 1, cin_per_group
            elif m.groups == m.in_channels == m.out_channels:  # depthwise stays depthwise
                groups, cin = cout, cout * cin_per_group
            else:  # grouped conv: keep the number of groups
                groups, cin = m.groups, m.groups * cin_per_group
            spec[name] = {"in": cin, "out": cout, "groups": groups}
        elif isinstance(m, nn.BatchNorm2d):
            rm = shapes.get(f"{name}.running_mean", w)
            if rm is not None:
                spec[name] = {"features": int(rm[0])}
        elif isinstance(m, nn.Linear) and w is not None:
            spec[name] = {"in": int(w[1]), "out": int(w[0])}
    return spec


def reshape_to_state(model: nn.Module, shapes: dict[str, Any]) -> nn.Module:
    """Make `model` fit a (pruned) state dict: `shapes` maps tensor names to shapes (or to tensors)."""
    shapes = {k: (list(v.shape) if isinstance(v, torch.Tensor) else list(v)) for k, v in shapes.items()}
    return reshape_to_spec(model, spec_from_shapes(model, shapes))
