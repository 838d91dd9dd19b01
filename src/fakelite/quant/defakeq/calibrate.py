"""DeFakeQ progressive contrastive calibration: distil a mixed-precision student from its FP teacher on a small
calibration set (default 256 training images), fine-tuning only a few parameters.

Schedule over the model's `stages()` (shallow → deep), then a global phase:
- phase p = 1..K (`stage_epochs` passes each): loss = Σ_{j≤p} ‖S_j − T_j‖² / ‖T_j‖² (normalised feature MSE
  between student and teacher stage outputs; the student runs on its own quantized features, so errors
  accumulated by shallow stages are corrected before deeper ones are aligned). The forward stops after stage p,
  so shallow phases are cheap, and only parameters up to stage p receive gradients.
- global phase (`final_epochs` passes): all stage alignments + w_con·SupCon + w_bce·BCE(labels) + w_kd·KD, where
  SupCon (Khosla et al. 2020) acts on L2-normalised pooled features (`forward_features`) at temperature τ:
  reals are pulled together, fakes are pulled together and the two classes are pushed apart. With
  `contrast_teacher` the teacher's pooled features of the same images join the batch as extra (detached) views,
  so the student's features are also pulled towards the teacher's class clusters.

Trainable (everything else frozen, weights included): quantizer parameters (LSQ step sizes, N2UQ intervals...),
BatchNorm affine γ/β (running statistics frozen: the model stays in eval mode), CQB α when present, VEFT rows.
The teacher's stage outputs, pooled features and logits are computed once (`TeacherCache`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fakelite.utils.determinism import deterministic_algorithms

from ..quantizers import Quantizer
from ..veft import freeze, start_finetune


def supcon_loss(z: torch.Tensor, y: torch.Tensor, tau: float = 0.1, normalize: bool = True,
                anchors: int | None = None) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out).

    For each anchor i with at least one positive: −1/|P(i)| Σ_{p∈P(i)} log( exp(z_i·z_p/τ) / Σ_{a≠i} exp(z_i·z_a/τ) ),
    averaged over those anchors. `anchors`: only the first `anchors` rows act as anchors (the rest are extra
    views, e.g. detached teacher features), but every row is a candidate positive/negative.
    """
    if normalize:
        z = F.normalize(z, dim=1)
    y = y.reshape(-1)
    n = z.shape[0]
    na = n if anchors is None else int(anchors)
    sim = z[:na] @ z.T / tau  # na × n
    self_mask = torch.zeros(na, n, dtype=torch.bool, device=z.device)
    self_mask[torch.arange(na), torch.arange(na)] = True
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (y[:na, None] == y[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    keep = n_pos > 0
    if not bool(keep.any()):
        return z.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(1)[keep]) / n_pos[keep]
    return per_anchor.mean()


@dataclass
class CalibConfig:
    """Progressive contrastive calibration settings (epochs = passes over the calibration set)."""

    stage_epochs: float = 1.0
    final_epochs: float = 2.0
    lr: float = 1e-3  # quantizer parameters, BN affine, CQB α
    veft_lr: float = 2e-4  # VEFT rows
    tau: float = 0.1
    w_feat: float = 1.0
    w_con: float = 0.1
    w_bce: float = 0.5
    w_kd: float = 1.0
    kd_temperature: float = 1.0
    contrast_teacher: bool = True
    progressive: bool = True  # False: only the global phase (ablation), same total steps
    seed: int = 0
    max_seconds: float | None = None  # stop early when the wall time is spent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Stop(Exception):
    pass


def stage_points(model: nn.Module) -> list[nn.Module]:
    """The module whose output is each stage's output (the stage's last child when it is a Sequential)."""
    pts = []
    for st in model.stages():
        children = list(st.children()) if isinstance(st, nn.Sequential) else []
        pts.append(children[-1] if children else st)
    return pts


def head(model: nn.Module) -> nn.Module:
    """The classifier applied to `forward_features` (fc for ResNets, classifier for MobileNetV3)."""
    for name in ("fc", "classifier", "head"):
        if hasattr(model, name):
            return getattr(model, name)
    raise AttributeError(f"{type(model).__name__} has no fc/classifier head")


def run_stages(model: nn.Module, x: torch.Tensor, upto: int | None = None
               ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """(stage outputs, pooled features, logits). With `upto`=p, stop after stage p (features/logits None)."""
    outs: list[torch.Tensor] = []
    pts = stage_points(model)
    hooks = []
    for i, m in enumerate(pts):
        def hook(_m, _i, o, i=i):
            outs.append(o)
            if upto is not None and i + 1 >= upto:
                raise _Stop
        hooks.append(m.register_forward_hook(hook))
    try:
        feats = model.forward_features(x)
        logits = head(model)(feats).reshape(-1)
    except _Stop:
        feats = logits = None
    finally:
        for h in hooks:
            h.remove()
    return outs, feats, logits


class TeacherCache:
    """Teacher stage outputs, pooled features and logits for each calibration batch (computed once)."""

    def __init__(self, teacher: nn.Module, batches: list):
        teacher.eval()
        self.items = []
        with torch.no_grad():
            for b in batches:
                x = b[0] if isinstance(b, tuple | list) else b
                outs, feats, logits = run_stages(teacher, x)
                self.items.append(([o.detach() for o in outs], feats.detach(), logits.detach()))


def defakeq_trainable(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(small parameters: quantizers, BN affine, CQB α; VEFT rows) — everything else gets requires_grad=False."""
    veft = start_finetune(model)
    small: list[nn.Parameter] = []
    seen = {id(p) for p in veft}
    for m in model.modules():
        if isinstance(m, Quantizer | nn.BatchNorm2d | nn.BatchNorm1d) or type(m).__name__ == "CQBShortcut":
            for p in m.parameters(recurse=isinstance(m, Quantizer) or type(m).__name__ == "CQBShortcut"):
                if id(p) not in seen:
                    small.append(p)
                    seen.add(id(p))
    for p in model.parameters():
        p.requires_grad_(id(p) in seen)
    return small, veft


def _nmse(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return ((s - t) ** 2).mean() / (t**2).mean().clamp_min(1e-8)


def calibrate_defakeq(student: nn.Module, teacher: nn.Module | None, batches: list, cfg: CalibConfig | None = None,
                      cache: TeacherCache | None = None, quiet: bool = True) -> dict[str, Any]:
    """Run the progressive contrastive calibration in place; returns a history/summary dict.

    The student must already be quantized and PTQ-initialised (`quant.calibrate`). Afterwards VEFT rows are
    frozen back into their integer codes and every parameter's requires_grad is restored to True. Runs with
    torch's deterministic algorithms on, as training does (`utils.determinism.deterministic_algorithms`).
    """
    with deterministic_algorithms():
        return _calibrate(student, teacher, batches, cfg, cache, quiet)


def _calibrate(student: nn.Module, teacher: nn.Module | None, batches: list, cfg: CalibConfig | None,
               cache: TeacherCache | None, quiet: bool) -> dict[str, Any]:
    cfg = cfg or CalibConfig()
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    if cache is None:
        if teacher is None:
            raise ValueError("give the FP teacher or a TeacherCache")
        cache = TeacherCache(teacher, batches)
    t_cache = time.perf_counter() - t0
    small, veft = defakeq_trainable(student)
    groups = [{"params": small, "lr": cfg.lr}]
    if veft:
        groups.append({"params": veft, "lr": cfg.veft_lr})
    opt = torch.optim.Adam([g for g in groups if g["params"]])
    k = len(stage_points(student))
    nb = len(batches)
    phases: list[tuple[int | None, int]] = []  # (stage limit or None for global, steps)
    if cfg.progressive:
        phases += [(p, max(1, round(cfg.stage_epochs * nb))) for p in range(1, k + 1)]
        phases.append((None, max(1, round(cfg.final_epochs * nb))))
    else:
        phases.append((None, max(1, round((cfg.stage_epochs * k + cfg.final_epochs) * nb))))
    total = sum(s for _, s in phases)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total)))
    student.eval()
    history: list[dict[str, float]] = []
    step = 0
    stopped_early = False
    order = torch.Generator().manual_seed(cfg.seed)
    try:
        for limit, steps in phases:
            for _ in range(steps):
                if cfg.max_seconds is not None and time.perf_counter() - t0 > cfg.max_seconds:
                    stopped_early = True
                    break
                bi = int(torch.randint(0, nb, (1,), generator=order))
                x, y = batches[bi][0], batches[bi][1].float().reshape(-1)
                t_outs, t_feats, t_logits = cache.items[bi]
                outs, feats, logits = run_stages(student, x, upto=limit)
                n_align = len(outs)
                feat = sum(_nmse(outs[j], t_outs[j]) for j in range(n_align)) / max(1, n_align)
                loss = cfg.w_feat * feat
                rec = {"step": step, "phase": limit or 0, "feat": float(feat.detach())}
                if limit is None:
                    if cfg.w_con:
                        if cfg.contrast_teacher:
                            con = supcon_loss(torch.cat([feats, t_feats]), torch.cat([y, y]), cfg.tau,
                                              anchors=len(y))
                        else:
                            con = supcon_loss(feats, y, cfg.tau)
                        loss = loss + cfg.w_con * con
                        rec["supcon"] = float(con.detach())
                    if cfg.w_bce:
                        bce = F.binary_cross_entropy_with_logits(logits, y)
                        loss = loss + cfg.w_bce * bce
                        rec["bce"] = float(bce.detach())
                    if cfg.w_kd:
                        tt = cfg.kd_temperature
                        pt = torch.sigmoid(t_logits / tt)
                        kd = F.binary_cross_entropy_with_logits(logits / tt, pt) * tt * tt
                        loss = loss + cfg.w_kd * kd
                        rec["kd"] = float(kd.detach())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                rec["loss"] = float(loss.detach())
                history.append(rec)
                step += 1
            if stopped_early:
                break
    finally:
        freeze(student)
        for p in student.parameters():
            p.requires_grad_(True)
        student.eval()
    wall = time.perf_counter() - t0
    return {"steps": step, "planned_steps": total, "stopped_early": stopped_early, "wall_s": wall,
            "teacher_cache_s": t_cache, "trainable_params": int(sum(p.numel() for p in small) +
                                                                sum(p.numel() for p in veft)),
            "veft_params": int(sum(p.numel() for p in veft)), "config": cfg.to_dict(),
            "history": history[-1:] if not history else [history[0], history[-1]],
            "loss_curve": [round(h["loss"], 5) for h in history]}
