"""Model registry: every entry carries its preprocessing, so training, evaluation, export and
calibration read it from the model rather than from command-line flags (as timm's pretrained cfg does).

Model files register their architectures themselves (`register_model` at the end of npr_resnet.py and
mobilenetv3.py); fakelite/models/__init__.py imports them all, so the registry is full once `fakelite.models`
is imported (as timm's models/__init__.py does)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from fakelite.data.preprocess import Preprocess


@dataclass
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    preprocess: Preprocess = field(default_factory=Preprocess)
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)  # default TrainConfig fields (e.g. lr) of this architecture


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, preprocess: Preprocess | None = None, description: str = "",
                   training: dict[str, Any] | None = None, **defaults: Any):
    """Decorator: register a builder under `name` with default constructor arguments.

    `training`: the architecture's default training recipe, as `fakelite.train.loop.TrainConfig` fields
    (e.g. {"lr": 1e-3}); `fakelite train` uses them for every field the user does not set (flags and a
    --recipe file win)."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelEntry(name, fn, defaults, preprocess or Preprocess(), description,
                                     dict(training or {}))
        return fn

    return wrap


def list_models() -> list[str]:
    """Names accepted by `create_model`."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model. Overrides go to the constructor (e.g. `input="rgb"`).

    The returned module carries `arch_name`, `arch_kwargs` (to rebuild it exactly) and `preprocess`.

    >>> m = create_model("npr_resnet23")
    >>> sum(p.numel() for p in m.parameters())
    1437761
    """
    entry = get_entry(name)
    kwargs = {**entry.defaults, **overrides}
    model = entry.builder(**kwargs)
    model.arch_name = name
    model.arch_kwargs = kwargs
    model.preprocess = replace(entry.preprocess, npr=kwargs.get("input", "npr") == "npr")
    return model
