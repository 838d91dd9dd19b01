"""Model registry: every entry carries its preprocessing, so training, evaluation, export and
calibration read it from the model rather than from command-line flags (as timm's pretrained cfg does)."""

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


from .mobilenetv3 import MobileNetV3  # noqa: E402
from .npr_resnet import ResNetDetector  # noqa: E402


def _resnet(block: str, layers: tuple[int, ...], stem: str):
    def build(input: str = "npr") -> nn.Module:
        return ResNetDetector(block=block, layers=layers, input=input, stem=stem)

    return build


NPR_TRAINING = {"lr": 2e-4}  # NPR (Tan et al., CVPR 2024): Adam, lr 2e-4, ×0.9 after epochs 10/20/30/40
# MobileNetV3 from scratch: at 2e-4 a MobileNetV3-Small was still at chance after an epoch (issue 17); docs/compression.md
# trains it at 1e-3, as the mobilenetv3 recipe (fakelite.pipelines.mbv3) does
MBV3_TRAINING = {"lr": 1e-3}

register_model("npr_resnet23", description="NPR detector: ResNet-50 cut after layer2 (QMDD's ResNet-23)",
               training=NPR_TRAINING, input="npr")(
    _resnet("bottleneck", (3, 4), "3x3")
)
register_model("resnet18", training=NPR_TRAINING, description="ResNet-18, one logit", input="npr")(_resnet("basic", (2, 2, 2, 2), "7x7"))
register_model("resnet34", training=NPR_TRAINING, description="ResNet-34, one logit", input="npr")(_resnet("basic", (3, 4, 6, 3), "7x7"))
register_model("resnet50", training=NPR_TRAINING, description="ResNet-50, one logit", input="npr")(_resnet("bottleneck", (3, 4, 6, 3), "7x7"))


def _mbv3(variant: str):
    def build(input: str = "rgb", width_mult: float = 1.0, dropout: float = 0.2) -> nn.Module:
        return MobileNetV3(variant, input=input, width_mult=width_mult, dropout=dropout)

    return build


register_model("mobilenetv3_small", training=MBV3_TRAINING, description="MobileNetV3-Small, one logit", input="rgb")(_mbv3("small"))
register_model("mobilenetv3_large", training=MBV3_TRAINING, description="MobileNetV3-Large, one logit", input="rgb")(_mbv3("large"))
