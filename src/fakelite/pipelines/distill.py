"""The distillation run: train a student detector from a teacher with logit (and optionally feature) distillation
(losses: fakelite.compress.distill) on top of `fakelite.train.loop.fit`, and write the student's run folder.

`run_distill` is `fakelite distill`: the student may be a registry name (fresh model) or a .fakelite file — a
pruned, sparse or quantized student keeps its structure (a quantized student is then trained by QAT, with quantizer
parameters at lr/10).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fakelite import artifact
from fakelite.compress.distill import (
    DistillConfig,
    FeatureProjection,
    capture_features,
    check_compatible,
    feature_dim,
    feature_loss,
)
from fakelite.data.folders import labelled_images, split_dir
from fakelite.data.io import BadInput, load_rgb
from fakelite.models import create_model
from fakelite.quant import quant_param_groups
from fakelite.train.loop import TrainConfig, fit


def data_crop(data: Path, default: int = 224) -> int:
    """The models' crop capped by the training images' size (no resizing: NPR reads pixel-level traces)."""
    for p, _ in labelled_images(split_dir(data, "train"))[:8]:
        try:
            h, w = load_rgb(p).shape[:2]
        except BadInput:
            continue
        return min(default, h - h % 2, w - w % 2)
    raise FileNotFoundError(f"{data}/train: no readable images")


def load_student(student: str | Path, **model_kwargs: Any) -> nn.Module:
    """A registry name → a fresh model (with `model_kwargs`); a .fakelite path → that model, ready to train."""
    p = Path(str(student))
    if p.suffix == ".fakelite" or p.is_file():
        model = artifact.load(p)
        model.train()
        for prm in model.parameters():
            prm.requires_grad_(True)
        return model
    return create_model(str(student), **model_kwargs)


def distill(teacher: nn.Module, student: nn.Module, data: str | Path, out: str | Path, train_cfg,
            dcfg: DistillConfig | None = None, *, provenance: dict | None = None,
            projection: FeatureProjection | None = None) -> dict:
    """Train `student` with logit (and optionally feature) distillation from `teacher`; writes OUT/model.fakelite.

    `train_cfg` is a `fakelite.train.loop.TrainConfig` (its kd_weight/kd_temperature are set from `dcfg`).
    Returns fit's metrics, plus "distill" (the config) and, with feature distillation, "feature_proj_loss"
    (mean feature loss of the last epoch).
    """
    dcfg = dcfg or DistillConfig()
    if not 0 <= dcfg.alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], not {dcfg.alpha}")
    if dcfg.temperature <= 0:
        raise ValueError(f"temperature must be > 0, not {dcfg.temperature}")
    check_compatible(teacher, student)
    train_cfg.kd_weight = dcfg.alpha
    train_cfg.kd_temperature = dcfg.temperature
    teacher.eval()
    quantized = getattr(student, "fakelite_quant", None) is not None
    feat_losses: list[float] = []

    def groups(model: nn.Module) -> list[dict]:
        if quantized:
            g = quant_param_groups(model, 0.1, train_cfg.lr)
        else:
            g = [{"params": [p for p in model.parameters() if p.requires_grad]}]
        if projection is not None:
            g.append({"params": list(projection.parameters()), "weight_decay": 0.0})
        return g

    extra = None
    if dcfg.feature_weight > 0:
        if projection is None:
            projection = FeatureProjection(feature_dim(student), feature_dim(teacher))
        proj = projection

        def extra(model, x, y, logits, teacher_logits):  # noqa: ANN001 - fit's callback signature
            loss = feature_loss(proj, s_feats["x"], t_feats["x"])
            feat_losses.append(float(loss.detach()))
            return dcfg.feature_weight * loss

    prov = {"distill": {**dcfg.to_dict(), "teacher": getattr(teacher, "arch_name", None),
                        "teacher_provenance_data": (getattr(teacher, "provenance", {}) or {}).get("data")},
            **(provenance or {})}
    with capture_features(student) as s_feats, capture_features(teacher) as t_feats:
        metrics = fit(student, data, out, train_cfg, teacher=teacher, param_groups=groups, extra_loss=extra,
                      provenance=prov)
    metrics["distill"] = dcfg.to_dict()
    if feat_losses:
        n = max(1, len(feat_losses) // max(1, train_cfg.epochs))
        metrics["feature_proj_loss"] = sum(feat_losses[-n:]) / n
        metrics["feature_proj_loss_first"] = sum(feat_losses[:n]) / n
    return metrics


def run_distill(teacher: nn.Module, student: str | Path, data: str | Path, out: str | Path,
                dcfg: DistillConfig | None = None, *, input: str | None = None, epochs: int = 10, lr: float = 1e-3,
                weight_decay: float = 0.0, batch_size: int = 32, seed: int = 0, max_steps: int | None = None,
                threads: int | None = None, quiet: bool = False, provenance: dict | None = None) -> dict:
    """`fakelite distill`: seed, load or build the student (`load_student`; `input` for new students only), crop at
    the student's crop capped by the training images' size (`data_crop`), train it by `distill` with Adam and a
    cosine schedule; writes OUT/model.fakelite and OUT/metrics.json and returns fit's metrics.

    Raises KeyError (unknown architecture), ValueError (bad settings, incompatible teacher/student) and
    FileNotFoundError (no readable training images).
    """
    torch.manual_seed(seed)  # --seed fixes a fresh student's initial weights too
    s = load_student(student, **({"input": input} if input else {}))
    crop = min(s.preprocess.crop, data_crop(Path(data)))
    cfg = TrainConfig(epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size, seed=seed,
                      lr_schedule="cosine", crop=crop, max_steps_per_epoch=max_steps, threads=threads, quiet=quiet)
    return distill(teacher, s, data, out, cfg, dcfg, provenance=provenance)
