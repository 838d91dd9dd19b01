"""NPR representation and the ResNet-50-derived detectors (NPR-ResNet-23 and full ResNets).

NPR (Tan et al., CVPR 2024) = x − up2_nearest(down½_nearest(x)): the residual of each pixel against
the top-left pixel of its 2×2 cell. Up-sampling layers of generators leave periodic traces there.
The stem receives NPR × 2/3, as in the authors' code (leaving the factor out is a known reproduction bug).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

NPR_SCALE = 2.0 / 3.0


def trim_even(x: torch.Tensor) -> torch.Tensor:
    """Drop the last row/column of odd-sized inputs (odd sizes crash the original NPR code)."""
    h, w = x.shape[-2:]
    return x[..., : h - h % 2, : w - w % 2]


def npr_even(x: torch.Tensor) -> torch.Tensor:
    """Neighbouring-pixel residual of an (N, C, H, W) tensor whose H and W are already even (unscaled)."""
    return x - F.interpolate(x[..., ::2, ::2], scale_factor=2.0, mode="nearest")


def npr(x: torch.Tensor) -> torch.Tensor:
    """Neighbouring-pixel residual of an (N, C, H, W) tensor, H and W trimmed to even (unscaled)."""
    return npr_even(trim_even(x))


class NPR(nn.Module):
    """NPR as a layer, so exported graphs carry it (input: normalised image; output: NPR × 2/3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return npr(x) * NPR_SCALE


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck (expansion 4, stride on the 3×3 conv, bias-free convs)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        width = planes
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class BasicBlock(nn.Module):
    """ResNet-18/34 basic block (two 3×3 convs)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + identity)


class ResNetDetector(nn.Module):
    """A ResNet with one logit, on NPR (default) or RGB input.

    `stages` sets the depth: NPR-ResNet-23 is ResNet-50 cut after layer2, i.e. `block="bottleneck",
    layers=(3, 4)` with the NPR paper's 3×3/2 stem. Full ResNets use the standard 7×7/2 stem.
    """

    def __init__(
        self,
        block: str = "bottleneck",
        layers: tuple[int, ...] = (3, 4),
        input: str = "npr",
        stem: str = "3x3",
    ):
        super().__init__()
        if input not in ("npr", "rgb"):
            raise ValueError(f"input must be 'npr' or 'rgb', not {input!r}")
        block_cls = {"bottleneck": Bottleneck, "basic": BasicBlock}[block]
        self.input = input
        self.npr = NPR() if input == "npr" else nn.Identity()
        if stem == "3x3":
            self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        elif stem == "7x7":
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        else:
            raise ValueError(f"stem must be '3x3' or '7x7', not {stem!r}")
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, n_blocks in enumerate(layers):
            planes = 64 * 2**i
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n_blocks):
                blocks.append(block_cls(inplanes, planes, stride if j == 0 else 1))
                inplanes = planes * block_cls.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, 1)
        self.feature_dim = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stages(self) -> list[nn.Module]:
        """The residual stages, shallow to deep (used by distillation and calibration)."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.npr(x)))))
        for stage in self.stages():
            x = stage(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def _resnet(block: str, layers: tuple[int, ...], stem: str):
    def build(input: str = "npr") -> nn.Module:
        return ResNetDetector(block=block, layers=layers, input=input, stem=stem)

    return build


NPR_TRAINING = {"lr": 2e-4}  # NPR (Tan et al., CVPR 2024): Adam, lr 2e-4, ×0.9 after epochs 10/20/30/40

register_model("npr_resnet23", description="NPR detector: ResNet-50 cut after layer2 (QMDD's ResNet-23)",
               training=NPR_TRAINING, input="npr")(
    _resnet("bottleneck", (3, 4), "3x3")
)
register_model("resnet18", training=NPR_TRAINING, description="ResNet-18, one logit", input="npr")(_resnet("basic", (2, 2, 2, 2), "7x7"))
register_model("resnet34", training=NPR_TRAINING, description="ResNet-34, one logit", input="npr")(_resnet("basic", (3, 4, 6, 3), "7x7"))
register_model("resnet50", training=NPR_TRAINING, description="ResNet-50, one logit", input="npr")(_resnet("bottleneck", (3, 4, 6, 3), "7x7"))
