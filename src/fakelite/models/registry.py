"""Model registry: every entry carries its preprocessing, so training, evaluation, export and
calibration read it from the model rather than from command-line flags (as timm's pretrained cfg does)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POLICIES = ("center", "resize256", "tiles")
AGGREGATES = ("mean", "max", "topk")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model's input tensor.

    crop: side of the square crop (random for training, centre for evaluation). resize: None keeps the pixels
    as they are (NPR's default: resizing destroys the up-sampling trace); an int resizes the short side first.
    Odd sizes are trimmed to even. mean/std: normalisation applied before the network (and before NPR).
    """

    crop: int = 224
    resize: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    npr: bool = True
    # scoring of an evaluation image (fakelite.data.transforms.eval_crops / aggregate_logits; docs/scoring.md):
    # policy "center" = no resize, one centre crop (NPR's convention and the behaviour of artifacts without these
    # keys); "resize256" = short side to 256 px, then one centre crop (CNNDetection's test policy); "tiles" = up to
    # `max_tiles` crops of `crop` px on an evenly spaced grid over the whole image at native resolution, whose
    # logits are aggregated by `aggregate` ("mean" logit, "max", or "topk" = mean of the `topk` largest).
    policy: str = "center"
    aggregate: str = "mean"
    topk: int = 3
    max_tiles: int = 16

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown scoring policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {self.aggregate!r}; choose one of {', '.join(AGGREGATES)}")
        if int(self.topk) < 1 or int(self.max_tiles) < 1:
            raise ValueError(f"topk and max_tiles must be >= 1 (got {self.topk}, {self.max_tiles})")

    def with_scoring(self, policy: str | None = None, aggregate: str | None = None, topk: int | None = None,
                     max_tiles: int | None = None) -> Preprocess:
        """A copy with the given scoring fields replaced (None keeps the stored one); ValueError on a bad name."""
        changes = {k: v for k, v in dict(policy=policy, aggregate=aggregate, topk=topk, max_tiles=max_tiles).items()
                   if v is not None}
        return replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        d = dict(d)
        for k in ("mean", "std"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


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
# trains it at 1e-3, as the mobilenetv3 recipe (fakelite.compress.recipe) does
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
