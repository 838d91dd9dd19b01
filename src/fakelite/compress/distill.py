"""Knowledge distillation of a student detector from a teacher: the losses, the feature capture and the projection.
The training run (on top of `fakelite.train.loop.fit`) is `fakelite.pipelines.distill`.

Logit distillation: loss = (1 − λ)·BCE(student, y) + λ·T²·KL(p_teacher,T ‖ p_student,T), with p·,T the softened
two-class distribution [1 − σ(z/T), σ(z/T)] (`fakelite.train.loop.kd_loss`). Feature distillation adds
w·MSE(P(f_student), f_teacher), where f are the pooled features (the input of the final logit layer, i.e.
`forward_features`) and P is a learned linear projection student_dim → teacher_dim. P is trained with the
student but is not part of it, so the saved student artifact is an ordinary model.

The student may be a registry name (fresh model) or a .fakelite file — a pruned, sparse or quantized student
keeps its structure (a quantized student is then trained by QAT, with quantizer parameters at lr/10).
Teacher and student read the same input tensor: their normalisation must agree (NPR is a layer inside each
model, so an NPR teacher can teach an RGB student).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fakelite.train.loop import kd_loss


@dataclass
class DistillConfig:
    """λ (alpha) weighs the KD term against BCE; T the temperature; feature_weight the feature-MSE weight."""

    temperature: float = 4.0
    alpha: float = 0.5
    feature_weight: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def head_layer(model: nn.Module) -> nn.Module:
    """The module whose input is the pooled feature vector (`fc` of ResNets, `classifier` of MobileNetV3)."""
    for attr in ("fc", "classifier"):
        m = getattr(model, attr, None)
        if isinstance(m, nn.Module):
            return m
    raise ValueError(f"{type(model).__name__} has no fc/classifier head to read pooled features from")


def feature_dim(model: nn.Module, size: int = 32) -> int:
    """Width of the pooled features (measured: robust to pruning)."""
    was = model.training
    model.eval()
    with torch.no_grad(), capture_features(model) as feats:
        model(torch.zeros(1, 3, size, size))
    model.train(was)
    return int(feats["x"].shape[1])


@contextmanager
def capture_features(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every forward stores the head's input (pooled features) in the yielded dict under "x"."""
    store: dict[str, torch.Tensor] = {}

    def pre(mod: nn.Module, args: tuple) -> None:
        store["x"] = args[0]

    h = head_layer(model).register_forward_pre_hook(pre)
    try:
        yield store
    finally:
        h.remove()


class FeatureProjection(nn.Module):
    """Linear map from student features to teacher features (equivalent to a 1×1 conv on pooled features)."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.proj = nn.Linear(student_dim, teacher_dim)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.proj(f)


def feature_loss(proj: FeatureProjection, f_student: torch.Tensor, f_teacher: torch.Tensor) -> torch.Tensor:
    """MSE between projected student features and (detached) teacher features."""
    return F.mse_loss(proj(f_student), f_teacher.detach())


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    """(1 − α)·BCE + α·T²·KL — the loss `fit` optimises with `kd_weight=alpha` (exposed for tests and reuse)."""
    bce = F.binary_cross_entropy_with_logits(student_logits.view(-1), labels.float().view(-1))
    return (1 - alpha) * bce + alpha * kd_loss(student_logits, teacher_logits, temperature)


def check_compatible(teacher: nn.Module, student: nn.Module) -> None:
    """Teacher and student must read the same normalised tensor."""
    pt, ps = teacher.preprocess, student.preprocess
    if tuple(pt.mean) != tuple(ps.mean) or tuple(pt.std) != tuple(ps.std) or pt.resize != ps.resize:
        raise ValueError("teacher and student preprocessing differ (mean/std/resize): they must read the same input")
