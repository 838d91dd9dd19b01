"""One training loop for full-precision training, QAT and distillation.

BCE-with-logits on one logit (0 = real, 1 = fake); Adam with NPR's schedule by default (lr 2e-4, ×0.9 after
epochs 10/20/30/40); validation every epoch; best (on validation) and last checkpoints; `resume=True` continues
an interrupted run from its last finished epoch and reproduces the uninterrupted run exactly (per-epoch seeds).
The decision threshold saved with the model is chosen on validation data.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fakelite import artifact
from fakelite.data.dataset import ImageDataset, make_loader, split_items
from fakelite.data.transforms import AugmentConfig, single_crop
from fakelite.eval.evaluate import predict_dataset, predict_dataset_distributed
from fakelite.eval.metrics import best_threshold, binary_metrics
from fakelite.eval.plots import training_curves
from fakelite.utils.determinism import deterministic_algorithms
from fakelite.utils.distributed import (
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    env_world_size,
    init_from_env,
)
from fakelite.utils.progress import is_quiet, progress_bar

from .checkpoint import load_checkpoint, save_checkpoint
from .precise_bn import recompute_bn_stats

log = logging.getLogger("fakelite.train")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the artifact's provenance)."""

    epochs: int = 50
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    lr_milestones: tuple[int, ...] = (10, 20, 30, 40)
    lr_gamma: float = 0.9
    lr_schedule: str = "step"  # "step" (NPR) | "linear" (N2UQ: linear decay to 0) | "cosine"
    seed: int = 0
    crop: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    kd_weight: float = 0.0  # λ of logit distillation, used when a teacher is given
    kd_temperature: float = 4.0
    num_workers: int = 0
    threads: int | None = None
    max_steps_per_epoch: int | None = None  # for tests and quick runs
    precise_bn: int = 512  # images used to re-estimate BN statistics before each validation (0: off); see precise_bn.py
    quiet: bool = False
    device: str = "cpu"  # "cuda" trains on a GPU when one is there; the saved model is always on the CPU

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["augment"] = AugmentConfig.from_dict(d.get("augment"))
        for k in ("betas", "lr_milestones"):
            if k in d and d[k] is not None:
                d[k] = tuple(d[k])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class TrainingDiverged(ValueError):
    """The loss or a parameter became NaN/inf; nothing of the diverged run is saved (earlier checkpoints stay)."""


def _nonfinite_params(model: nn.Module, buffers: bool = False) -> list[str]:
    """Names of parameters (and buffers, with `buffers`) holding NaN/inf: one fused norm over all of them, names
    looked up only on failure."""
    items = list(model.named_parameters()) + (list(model.named_buffers()) if buffers else [])
    named = [(n, p) for n, p in items if p.is_floating_point() and p.numel()]
    if not named:
        return []
    norms = torch._foreach_norm([p.detach() for _, p in named])
    if bool(torch.isfinite(torch.stack(norms)).all()):
        return []
    return [n for (n, p) in named if not bool(torch.isfinite(p.detach()).all())]


def _diverged(where: str, what: str) -> TrainingDiverged:
    return TrainingDiverged(f"training diverged at {where}: {what}; no model or checkpoint was written for it "
                            "(try --grad-clip 10 or a lower --lr)")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(p_teacher,T ‖ p_student,T) over the two-class distributions [1−σ(z/T), σ(z/T)] (mean over batch)."""
    t = temperature
    zs = student_logits.view(-1) / t
    zt = teacher_logits.view(-1) / t
    log_ps = torch.stack([F.logsigmoid(-zs), F.logsigmoid(zs)], 1)
    log_pt = torch.stack([F.logsigmoid(-zt), F.logsigmoid(zt)], 1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(1).mean()
    return (t * t) * kl


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    if cfg.lr_schedule == "linear":
        return max(0.0, 1.0 - epoch / max(1, cfg.epochs))
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / max(1, cfg.epochs)))
    return cfg.lr_gamma ** sum(1 for m in cfg.lr_milestones if epoch >= m)


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def validate(model: nn.Module, ds: ImageDataset, batch_size: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics on `ds`. Under torchrun, rank 0's BN statistics are broadcast first and the images are sharded
    over the ranks and gathered, so every rank computes identical metrics (and picks the same best epoch)."""
    if _dist()[1] == 1:
        scores, labels, _ = predict_dataset(model, ds, batch_size)
        return binary_metrics(labels, scores, 0.5, skipped=len(ds.skipped)), labels, scores
    broadcast_buffers(model)
    scores, labels, _, n_skipped = predict_dataset_distributed(model, ds, batch_size)
    return binary_metrics(labels, scores, 0.5, skipped=n_skipped), labels, scores


def _selection_key(m: dict) -> float:
    return sum(v for v in (m.get("auc"), m.get("ap"), m.get("acc")) if v is not None)


def fit(
    model: nn.Module,
    data: str | Path,
    out: str | Path,
    cfg: TrainConfig,
    *,
    teacher: nn.Module | None = None,
    param_groups: Callable[[nn.Module], list[dict]] | None = None,
    extra_loss: Callable[..., torch.Tensor] | None = None,
    provenance: dict | None = None,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    keep_checkpoint: bool | None = None,
) -> dict:
    """Train `model` on DATA/train, validate on DATA/val, write OUT/model.fakelite and OUT/metrics.json.

    extra_loss(model=..., x=..., y=..., logits=..., teacher_logits=...) adds a term (feature distillation, ...).
    `resume`: continue from OUT/checkpoint.safetensors when it exists (epoch 0 otherwise; the `train` command
    refuses --resume without a checkpoint). OUT/checkpoint.safetensors (written after every epoch, so that a killed
    run can resume) is deleted once the run has finished and saved its model, unless `keep_checkpoint` (None: the
    environment variable FAKELITE_KEEP_CHECKPOINT=1 keeps it). Returns the metrics dict also written to
    metrics.json. Runs with torch's deterministic algorithms on. Raises TrainingDiverged (a ValueError) when the
    loss or a parameter becomes NaN/inf, before anything of that epoch is saved.
    """
    if keep_checkpoint is None:
        keep_checkpoint = os.environ.get("FAKELITE_KEEP_CHECKPOINT", "0") == "1"
    with deterministic_algorithms():
        return _fit(model, data, out, cfg, teacher=teacher, param_groups=param_groups, extra_loss=extra_loss,
                    provenance=provenance, resume=resume, on_epoch_end=on_epoch_end,
                    keep_checkpoint=keep_checkpoint)


def _fit(
    model: nn.Module,
    data: str | Path,
    out: str | Path,
    cfg: TrainConfig,
    *,
    teacher: nn.Module | None,
    param_groups: Callable[[nn.Module], list[dict]] | None,
    extra_loss: Callable[..., torch.Tensor] | None,
    provenance: dict | None,
    resume: bool,
    on_epoch_end: Callable[[int, dict], None] | None,
    keep_checkpoint: bool,
) -> dict:
    t_start = time.time()
    data, out = Path(data), Path(out)
    if env_world_size() > 1:
        init_from_env()  # launched by torchrun: join the process group (gloo; the loop runs on CPU)
    rank, world = _dist()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.crop:
        model.preprocess = replace(model.preprocess, crop=int(cfg.crop))
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {cfg.device!r}: no CUDA GPU is available here; use --device cpu")
    model.to(device)
    train_items = split_items(data, "train")
    try:
        val_items = split_items(data, "val")
    except FileNotFoundError:
        g = np.random.default_rng(cfg.seed)
        perm = g.permutation(len(train_items))
        n_val = max(1, len(train_items) // 10)
        val_items = [train_items[i] for i in perm[:n_val]]
        train_items = [train_items[i] for i in perm[n_val:]]
        log.warning("%s has no val/ split: holding out %d training images for validation", data, n_val)
    train_ds = ImageDataset(train_items, model.preprocess, train=True, augment=cfg.augment, seed=cfg.seed)
    val_ds = ImageDataset(val_items, model.preprocess, train=False)
    bn_order = np.random.default_rng(cfg.seed).permutation(len(train_items))[: cfg.precise_bn]
    bn_ds = ImageDataset([train_items[i] for i in bn_order], single_crop(model.preprocess), train=False)
    loader = make_loader(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed, num_workers=cfg.num_workers,
                         rank=rank, world=world)

    net = model
    if world > 1:
        # BN statistics stay per rank (PyTorch's SyncBatchNorm is CUDA-only; this loop runs on CPU); DDP broadcasts
        # rank 0's buffers before each forward and validate() broadcasts them again: see docs/scale.md
        net = nn.parallel.DistributedDataParallel(model)
    groups = param_groups(model) if param_groups else [{"params": [p for p in model.parameters() if p.requires_grad]}]
    for g in groups:
        g.setdefault("lr", cfg.lr)
        g["base_lr"] = g["lr"]
    opt = torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if teacher is not None:
        teacher.to(device)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.safetensors"
    history: list[dict] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_key, best_epoch, start_epoch = -1.0, -1, 0
    if resume and ckpt_path.exists():
        try:
            best_state, info = load_checkpoint(ckpt_path, model, opt)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint gets the same one-line message
            why = (str(e).splitlines() or [type(e).__name__])[0][:160]
            raise ValueError(f"{ckpt_path}: cannot resume from this checkpoint ({why}); delete it to start over, "
                             "or use another --out") from None
        history, best_key, best_epoch = info["history"], info["best_key"], info["best_epoch"]
        start_epoch = info["epoch"] + 1
        if rank == 0 and not is_quiet(cfg.quiet):
            print(f"resuming {out} from epoch {start_epoch} (world size now {world}, was {info.get('world', 1)})")

    quiet = cfg.quiet or rank != 0
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.time()
        factor = lr_factor(cfg, epoch)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        train_ds.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        net.train()
        n_steps = len(loader) if cfg.max_steps_per_epoch is None else min(len(loader), cfg.max_steps_per_epoch)
        tot_loss, tot_correct, tot_n = 0.0, 0, 0
        with progress_bar(f"epoch {epoch + 1}/{cfg.epochs}", n_steps, quiet=quiet) as advance:
            for step, batch in enumerate(loader):
                if step >= n_steps:
                    break
                if batch is None:
                    if world > 1:  # every rank must join the gradient all-reduce: contribute a zero gradient
                        c = model.preprocess.crop
                        zero = net(torch.zeros(1, 3, c, c, device=device)).sum() * 0.0
                        opt.zero_grad(set_to_none=True)
                        zero.backward()
                        opt.step()
                    advance()
                    continue
                x, y, _ = batch
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = net(x).view(-1)
                loss = F.binary_cross_entropy_with_logits(logits, y)
                t_logits = None
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(x).view(-1)
                    if cfg.kd_weight > 0:
                        loss = (1 - cfg.kd_weight) * loss + cfg.kd_weight * kd_loss(logits, t_logits, cfg.kd_temperature)
                if extra_loss is not None:
                    loss = loss + extra_loss(model=model, x=x, y=y, logits=logits, teacher_logits=t_logits)
                where = f"epoch {epoch + 1} step {step + 1}"
                if not bool(torch.isfinite(loss.detach())):
                    raise _diverged(where, f"the loss is {float(loss.detach())}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bad = _nonfinite_params(model)
                if bad:
                    raise _diverged(where, f"{len(bad)} parameter tensors became NaN/inf after the update "
                                           f"(first: {bad[0]})")
                tot_loss += float(loss.detach()) * len(y)
                tot_correct += int(((logits.detach() > 0).float() == y).sum())
                tot_n += len(y)
                advance(1, loss=tot_loss / max(1, tot_n), acc=tot_correct / max(1, tot_n))
        if world > 1:  # epoch loss/acc over all ranks, so every rank logs the same row
            tot_loss, tot_correct, tot_n = all_reduce_sum([tot_loss, float(tot_correct), float(tot_n)])
        if cfg.precise_bn:
            recompute_bn_stats(model, bn_ds, max(32, cfg.batch_size), cfg.precise_bn)
        val_m, _, _ = validate(model, val_ds, max(64, cfg.batch_size))
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": tot_loss / max(1, tot_n),
               "train_acc": tot_correct / max(1, tot_n), "val": {k: val_m[k] for k in ("acc", "ap", "auc", "eer")},
               "seconds": time.time() - t_epoch}
        history.append(row)
        key = _selection_key(val_m)
        if key > best_key:
            best_key, best_epoch = key, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if rank == 0:
            if not is_quiet(quiet):
                print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f} train acc {row['train_acc']:.3f} | "
                      f"val acc {val_m['acc']:.3f} ap {val_m['ap'] or 0:.3f} auc {val_m['auc'] or 0:.3f}")
            save_checkpoint(ckpt_path, model, opt, best_state,
                            {"epoch": epoch, "history": history, "best_key": best_key, "best_epoch": best_epoch,
                             "world": world, "config": cfg.to_dict()})
        if on_epoch_end:
            on_epoch_end(epoch, row)

    if best_state is not None:
        model.load_state_dict(best_state)
    bad = _nonfinite_params(model, buffers=True)
    if bad:  # e.g. PTQ/zero-epoch runs, or a model handed in already broken
        raise TrainingDiverged(f"refusing to save a model with NaN/inf in {len(bad)} tensors "
                               f"(first: {bad[0]})")
    val_m, vy, vs = validate(model, val_ds, max(64, cfg.batch_size))
    threshold = best_threshold(vy, vs)
    val_at_t = binary_metrics(vy, vs, threshold)
    wall = time.time() - t_start
    prev_wall = sum(h["seconds"] for h in history[: start_epoch]) if start_epoch else 0.0
    metrics = {
        "best_epoch": best_epoch,
        "threshold": threshold,
        "val": val_m,
        "val_at_threshold": val_at_t,
        "history": history,
        "wall_seconds": wall + prev_wall,
        "train_images": len(train_items),
        "val_images": len(val_items),
        "skipped": {"train": train_ds.skipped, "val": val_ds.skipped},
        "config": cfg.to_dict(),
    }
    prov = {"data": str(data), "epochs": cfg.epochs, "seed": cfg.seed, "config": cfg.to_dict(),
            "best_epoch": best_epoch, "wall_seconds": metrics["wall_seconds"], **(provenance or {})}
    model.to("cpu")
    if rank == 0:
        artifact.save(model, out / "model.fakelite", threshold=threshold, provenance=prov,
                      metrics={"val": val_m, "val_at_threshold": val_at_t})
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        try:
            training_curves(history, out / "curves.png")
        except Exception as e:  # noqa: BLE001 - a plot must never fail a finished run
            log.warning("could not draw training curves: %s", e)
    if world > 1:
        barrier()  # no rank returns before rank 0 has written the artifact
    model.threshold = threshold
    if not keep_checkpoint and rank == 0 and ckpt_path.exists():  # the run is complete: nothing left to resume
        ckpt_path.unlink()
    return metrics
