"""The QAT / PTQ pipeline: a trained full-precision detector → a quantized one in a run folder (the engine behind
`fakelite quantize` and the QMDD ablation study).

    student, metrics = run_quantization(fp, "DATA", "runs/w2a2", QuantConfig(w_bits=2, a_bits=2,
                                        quantizer="slr-n2uq", cqb=True), epochs=3)

Steps: copy the FP model → `quantize` (the per-layer plan of the config) → `calibrate` on `calib` training images
(MinMax/percentile ranges, LSQ/N2UQ data-driven init) → the shared training loop (`fit`: Adam, validation every
epoch, best checkpoint, threshold on DATA/val), quantizer parameters at lr × `quant_lr_scale` (N2UQ recipe: 0.1),
optional logit KD from the FP teacher → OUT/model.fakelite and OUT/metrics.json with a `cost` entry
(`fakelite.quant.cost.model_cost` at the training size). PTQ (`ptq=True`) is the same with zero epochs: calibrate,
validate, choose the threshold, save.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fakelite import artifact
from fakelite.data.dataset import calibration_batches
from fakelite.data.transforms import AugmentConfig
from fakelite.quant.calib_data import agreement, match_threshold
from fakelite.quant.convert import QuantConfig, calibrate, quant_param_groups, quantize
from fakelite.quant.cost import model_cost
from fakelite.train.loop import TrainConfig, fit
from fakelite.utils.distributed import rank_world


def is_n2uq_like(qcfg: QuantConfig) -> bool:
    """N2UQ and SLR-on-N2UQ get the N2UQ recipe's lr/10 for quantizer parameters by default."""
    return qcfg.quantizer.removeprefix("slr-") == "n2uq"


class _GradGuard:
    """Per-tensor gradient-norm cap via parameter hooks (the shared training loop has no clipping step)."""

    def __init__(self, model: nn.Module, max_norm: float):
        self.max_norm = float(max_norm)
        self.clipped = self.nonfinite = self.seen = 0
        self.handles = [p.register_hook(self._hook) for p in model.parameters() if p.requires_grad]

    def _hook(self, g: torch.Tensor) -> torch.Tensor:
        self.seen += 1
        if not torch.isfinite(g).all():
            self.nonfinite += 1
            g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        n = float(g.norm())
        if n > self.max_norm:
            self.clipped += 1
            g = g * (self.max_norm / n)
        return g

    def close(self) -> dict:
        for h in self.handles:
            h.remove()
        return {"max_norm": self.max_norm, "clipped": self.clipped, "nonfinite": self.nonfinite,
                "grads_seen": self.seen}


def run_quantization(
    fp_model: nn.Module,
    data: str | Path,
    out: str | Path,
    qcfg: QuantConfig,
    *,
    epochs: int,
    ptq: bool = False,
    calib: int = 256,
    batch_size: int = 32,
    lr: float = 2e-4,
    seed: int = 0,
    teacher_kd: bool = False,
    kd_weight: float = 0.5,
    size: int | None = None,
    lr_schedule: str = "step",
    max_steps: int | None = None,
    threads: int | None = None,
    quiet: bool = False,
    provenance: dict | None = None,
    quant_lr_scale: float | None = None,
    freeze_cqb_alpha: bool = False,
    resume: bool = False,
    grad_clip: float | None = None,
    device: str = "cpu",
    keep_checkpoint: bool | None = None,
    calib_batches: list | None = None,
    calib_info: dict | None = None,
    augment: AugmentConfig | None = None,
) -> tuple[nn.Module, dict]:
    """Quantize a copy of `fp_model` with `qcfg`, calibrate it, train it `epochs` epochs (none with `ptq`), and
    write OUT/model.fakelite + OUT/metrics.json (with `cost`). Returns (student, metrics).

    `fp_model` is left untouched (it is the KD teacher with `teacher_kd`). `size`: training/eval crop (default
    the model's). `quant_lr_scale`: lr factor of quantizer parameters (None = 0.1 for N2UQ kinds, 1 otherwise).
    `freeze_cqb_alpha`: keep every CQB α at its initial value (for the α ablation). `resume`: continue from
    OUT/checkpoint.safetensors (an interrupted QAT with the same settings) instead of epoch 0. `grad_clip`: cap
    every parameter's gradient at this L2 norm (per tensor) and zero non-finite ones — low-bit nets (W1A1 above
    all: a binarised layer whose outputs are constant over the batch gives BN a zero variance) can blow gradients up
    to inf, which poisons Adam's moments; metrics["grad_guard"] counts how often it acted. `device`: "cuda" runs
    the QAT steps on a GPU (calibration and the saved model stay on the CPU).
    `keep_checkpoint`: keep OUT/checkpoint.safetensors after the run (see `fakelite.train.loop.fit`).
    `augment`: training augmentation of the QAT steps (None: TrainConfig's default, none; pass the FP model's
    recipe, e.g. blur/JPEG/rescale, to keep the robustness it was trained for).
    `calib_batches`: (x, y) batches to calibrate on instead of `calib` images of DATA/train (e.g. a user's folder or
    ZeroQ inputs from `quant.calib_data.calibration_set`; `calib_info` describes them for the provenance). With
    them, `data` may be None for PTQ: the model keeps the FP model's threshold and metrics["calib_agreement"] says
    how close it stays to the FP model on the calibration images (no validation set to measure on).
    Raises ValueError (an already-quantized model, no usable calibration images, QAT without data) and
    FileNotFoundError (no DATA/train).
    """
    data, out = (Path(data) if data is not None else None), Path(out)
    if data is None and not (ptq and calib_batches):
        raise ValueError("QAT needs --data (a dataset with train/); without one use --ptq with --calib-data")
    if getattr(fp_model, "fakelite_quant", None):
        raise ValueError("model is already quantized; start from a full-precision model")
    if threads:
        torch.set_num_threads(threads)
    crop = int(size or fp_model.preprocess.crop)
    student = copy.deepcopy(fp_model)
    student.preprocess = replace(fp_model.preprocess, crop=crop)
    for p in student.parameters():  # a model used as a KD teacher before has requires_grad off
        p.requires_grad_(True)
    torch.manual_seed(seed)
    quantize(student, qcfg)
    if freeze_cqb_alpha:
        for m in student.modules():
            if getattr(m, "cqb", None) is not None:
                m.cqb.theta.requires_grad_(False)
    if calib_batches is not None:
        batches = list(calib_batches)
    else:
        batches = calibration_batches(data, student.preprocess, n=calib, batch_size=batch_size, seed=seed)
    if not batches:
        raise ValueError(f"{data}: no usable training images for calibration")
    calibrate(student, batches, quiet=quiet)
    if data is None:
        return _ptq_without_data(fp_model, student, batches, out, qcfg, calib_info, provenance)

    guard = _GradGuard(student, grad_clip) if grad_clip else None
    scale = (0.1 if is_n2uq_like(qcfg) else 1.0) if quant_lr_scale is None else float(quant_lr_scale)
    cfg = TrainConfig(epochs=0 if ptq else int(epochs), batch_size=batch_size, lr=lr, seed=seed, crop=crop,
                      lr_schedule=lr_schedule, kd_weight=kd_weight if teacher_kd else 0.0,
                      max_steps_per_epoch=max_steps, threads=threads, quiet=quiet, device=device,
                      **({"augment": augment} if augment is not None else {}))
    prov: dict[str, Any] = {"mode": "ptq" if ptq else "qat", "quant": qcfg.to_dict(),
                            "calib_images": sum(len(b[1]) for b in batches), "quant_lr_scale": scale,
                            "teacher_kd": bool(teacher_kd and not ptq), "freeze_cqb_alpha": freeze_cqb_alpha,
                            "source_provenance": getattr(fp_model, "provenance", {}), **(provenance or {})}
    if calib_info is not None:
        prov["calibration"] = calib_info
    metrics = fit(student, data, out, cfg, teacher=fp_model if (teacher_kd and not ptq) else None,
                  param_groups=lambda m: quant_param_groups(m, scale, lr), provenance=prov, resume=resume,
                  keep_checkpoint=keep_checkpoint)
    if guard is not None:
        metrics["grad_guard"] = guard.close()
    student.eval()
    metrics["cost"] = model_cost(student, crop)
    metrics["quant"] = qcfg.to_dict()
    metrics["mode"] = prov["mode"]
    if rank_world()[0] == 0:  # under torchrun only rank 0 writes
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return student, metrics


def _ptq_without_data(fp_model: nn.Module, student: nn.Module, batches: list, out: Path, qcfg: QuantConfig,
                      calib_info: dict | None, provenance: dict | None) -> tuple[nn.Module, dict]:
    """Save a PTQ model calibrated on user-supplied batches when there is no dataset to validate on."""
    student.eval()
    matched = match_threshold(fp_model, student, batches)
    student.threshold = float(getattr(fp_model, "threshold", 0.5)) if matched is None else matched
    source = ("the full-precision model's (no validation data; its decisions on the calibration images are all one "
              "class)" if matched is None else "matched to the full-precision model's decisions on the calibration "
              "images (no validation data)")
    agree = agreement(fp_model, student, batches)
    crop = int(student.preprocess.crop)
    metrics: dict[str, Any] = {"mode": "ptq", "quant": qcfg.to_dict(), "threshold": student.threshold,
                               "threshold_source": source,
                               "calib_images": sum(len(b[1]) for b in batches), "calibration": calib_info or {},
                               "calib_agreement": agree, "val": None, "cost": model_cost(student, crop)}
    prov: dict[str, Any] = {"mode": "ptq", "quant": qcfg.to_dict(), "calib_images": metrics["calib_images"],
                            "calibration": calib_info or {}, "threshold_source": metrics["threshold_source"],
                            "source_provenance": getattr(fp_model, "provenance", {}), **(provenance or {})}
    out.mkdir(parents=True, exist_ok=True)
    artifact.save(student, out / "model.fakelite", threshold=student.threshold, provenance=prov,
                  metrics={"calib_agreement": agree})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return student, metrics
