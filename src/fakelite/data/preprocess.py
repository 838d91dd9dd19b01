"""How an image becomes a model's input: crop size, resize, normalisation, NPR on/off and the scoring policy
(centre crop, resize-then-crop, tiles) of an evaluation image. Carried by every model entry and artifact."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

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
        """A copy with the given scoring fields replaced (None keeps the stored one); ValueError on a bad name, and
        when `aggregate`, `topk` or `max_tiles` is given together with an explicit policy other than "tiles" (they
        would be ignored: a single-crop policy has nothing to aggregate)."""
        if policy is not None and policy not in POLICIES:
            raise ValueError(f"unknown scoring policy {policy!r}; choose one of {', '.join(POLICIES)}")
        tile_opts = [n for n, v in (("aggregate", aggregate), ("topk", topk), ("max_tiles", max_tiles)) if v is not None]
        if policy is not None and policy != "tiles" and tile_opts:
            raise ValueError(f"{', '.join(tile_opts)} applies to the tiles policy only, not to {policy!r} (one crop)")
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
