"""Module surgery shared by quantization, pruning and DeFakeQ."""

from __future__ import annotations

from torch import nn


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path `name` (as in `model.named_modules()`) by `new`, in place.

    Raises AttributeError when a parent on the path does not exist."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
