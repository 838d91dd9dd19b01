"""MobileNetV3-Small/Large (Howard et al., 2019) in plain torch, with one logit.

Depthwise-separable inverted residuals, squeeze-and-excitation and h-swish, following the paper's
tables (the same configuration torchvision uses). Input can be RGB (the MobileNetV3-compression paper)
or NPR (QMDD's representation).
"""

from __future__ import annotations

import torch
from torch import nn

from .npr_resnet import NPR
from .registry import register_model

# (kernel, expanded, out, use_se, activation, stride)
SMALL = [
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
]
LARGE = [
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
]


def make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _act(kind: str) -> nn.Module:
    return nn.Hardswish(inplace=True) if kind == "HS" else nn.ReLU(inplace=True)


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: str | None = "RE"):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(_act(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        squeeze = make_divisible(channels // 4, 8)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(self.relu(self.fc1(self.avgpool(x)))))
        return x * s


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, k: int, expanded: int, cout: int, use_se: bool, act: str, stride: int):
        super().__init__()
        self.stride = stride
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(ConvBNAct(cin, expanded, 1, act=act))
        layers.append(ConvBNAct(expanded, expanded, k, stride, groups=expanded, act=act))
        if use_se:
            layers.append(SqueezeExcite(expanded))
        layers.append(ConvBNAct(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV3(nn.Module):
    """MobileNetV3 with a single-logit head. `variant` is "small" or "large"."""

    def __init__(self, variant: str = "small", input: str = "rgb", width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        if variant not in ("small", "large"):
            raise ValueError(f"variant must be 'small' or 'large', not {variant!r}")
        if input not in ("npr", "rgb"):
            raise ValueError(f"input must be 'npr' or 'rgb', not {input!r}")
        cfg = SMALL if variant == "small" else LARGE
        last_channel = 1024 if variant == "small" else 1280
        self.input = input
        self.npr = NPR() if input == "npr" else nn.Identity()
        stem = make_divisible(16 * width_mult)
        layers: list[nn.Module] = [ConvBNAct(3, stem, 3, 2, act="HS")]
        cin = stem
        for k, exp, out, se, act, s in cfg:
            exp_c, out_c = make_divisible(exp * width_mult), make_divisible(out * width_mult)
            layers.append(InvertedResidual(cin, k, exp_c, out_c, se, act, s))
            cin = out_c
        last_conv = 6 * cin
        layers.append(ConvBNAct(cin, last_conv, 1, act="HS"))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, last_channel), nn.Hardswish(inplace=True), nn.Dropout(dropout), nn.Linear(last_channel, 1)
        )
        self.feature_dim = last_conv
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def stages(self) -> list[nn.Module]:
        """Feature blocks grouped at each stride change, shallow to deep."""
        groups: list[list[nn.Module]] = [[]]
        for i, layer in enumerate(self.features):
            stride = layer.stride if isinstance(layer, InvertedResidual) else 1
            if i > 0 and stride == 2 and groups[-1]:
                groups.append([])
            groups[-1].append(layer)
        return [nn.Sequential(*g) for g in groups]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(self.npr(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


def _mbv3(variant: str):
    def build(input: str = "rgb", width_mult: float = 1.0, dropout: float = 0.2) -> nn.Module:
        return MobileNetV3(variant, input=input, width_mult=width_mult, dropout=dropout)

    return build


# MobileNetV3 from scratch: at 2e-4 a MobileNetV3-Small was still at chance after an epoch (issue 17); docs/compression.md
# trains it at 1e-3, as the mobilenetv3 recipe (fakelite.pipelines.mbv3) does
MBV3_TRAINING = {"lr": 1e-3}

register_model("mobilenetv3_small", training=MBV3_TRAINING, description="MobileNetV3-Small, one logit", input="rgb")(_mbv3("small"))
register_model("mobilenetv3_large", training=MBV3_TRAINING, description="MobileNetV3-Large, one logit", input="rgb")(_mbv3("large"))
