"""Calibration images when the training set is not at hand (imported checkpoints): a small folder of the user's own
real and fake images, or none at all (ZeroQ synthetic inputs).

    cs = calibration_set("my_images/", fp_model, n=64)     # 0_real/1_fake folders, or just images
    cs = calibration_set("zeroq", fp_model, n=64)           # data-free: `fakelite.quant.zeroq`
    cs.batches  -> [(x (B, 3, S, S), y (B,)), ...]          # what `quant.calibrate` and DeFakeQ consume
    cs.info     -> provenance (source, counts, how labels were obtained)

Labels: images under `0_real`/`1_fake` folders (any depth) keep theirs. A folder without them, and ZeroQ's inputs,
get pseudo-labels from the full-precision model (score ≥ its threshold → fake): DeFakeQ's calibration uses labels
for its BCE and contrastive terms; PTQ ignores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fakelite.data.dataset import calibration_batches_from_items
from fakelite.data.folders import labelled_images, list_images
from fakelite.utils.progress import progress_bar

from .zeroq import ZeroQConfig, distill_inputs

ZEROQ = "zeroq"
UNLABELLED = -1


@dataclass
class CalibrationSet:
    """Calibration batches and where they came from."""

    batches: list[tuple[torch.Tensor, torch.Tensor]]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return sum(len(b[1]) for b in self.batches)


def _logit_threshold(model: nn.Module) -> float:
    t = min(max(float(getattr(model, "threshold", 0.5)), 1e-6), 1 - 1e-6)
    return math.log(t / (1 - t))


def pseudo_label(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Replace labels by the model's decisions (logit ≥ logit(threshold) → 1 = fake)."""
    t = _logit_threshold(model)
    was = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for x, _ in batches:
            out.append((x, (model(x).view(-1) >= t).float()))
    model.train(was)
    return out


def folder_calibration(root: str | Path, model: nn.Module, n: int = 256, batch_size: int = 32, seed: int = 0,
                       size: int | None = None) -> CalibrationSet:
    """Up to `n` images from `root`, transformed as `model.preprocess` says (crop `size` if given).

    `root` may hold 0_real/1_fake folders (flat, per generator, ForenSynths-style: every labelled image below it,
    a balanced draw) or just images (pseudo-labelled by `model`). Raises ValueError naming the folder when it holds
    no usable image.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"--calib-data {root}: no such folder (give a folder of images, or 'zeroq')")
    pre = model.preprocess if size is None else replace(model.preprocess, crop=int(size))
    items = labelled_images(root)
    labelled = bool(items)
    if not labelled:
        items = [(p, UNLABELLED) for p in list_images(root)]
    if not items:
        raise ValueError(f"--calib-data {root}: no images found (expected 0_real/1_fake folders or image files)")
    skipped: dict[str, str] = {}
    batches = calibration_batches_from_items(items, pre, n=n, batch_size=batch_size, seed=seed, skipped=skipped)
    if not batches:
        raise ValueError(f"--calib-data {root}: none of its {len(items)} images could be decoded")
    if not labelled:
        batches = pseudo_label(model, batches)
    ys = torch.cat([b[1] for b in batches])
    info = {"source": "folder", "path": str(root), "images_found": len(items), "images_used": int(ys.numel()),
            "labels": "folders" if labelled else "pseudo (full-precision model's decisions)",
            "real": int((ys == 0).sum()), "fake": int((ys == 1).sum()), "skipped": skipped,
            "size": int(batches[0][0].shape[-1])}
    return CalibrationSet(batches, info)


def zeroq_calibration(model: nn.Module, n: int = 64, batch_size: int = 32, seed: int = 0, size: int | None = None,
                      cfg: ZeroQConfig | None = None, quiet: bool = True) -> CalibrationSet:
    """`n` ZeroQ inputs at the model's crop (or `size`), pseudo-labelled by `model` (see `fakelite.quant.zeroq`)."""
    side = int(size or model.preprocess.crop)
    cfg = replace(cfg or ZeroQConfig(), batch_size=batch_size, seed=seed)
    steps = cfg.steps * math.ceil(n / batch_size)
    with progress_bar("ZeroQ distillation", steps, quiet=quiet) as advance:
        x, zinfo = distill_inputs(model, n, side, cfg, progress=advance)
    batches = pseudo_label(model, [(x[i:i + batch_size], torch.zeros(len(x[i:i + batch_size])))
                                   for i in range(0, len(x), batch_size)])
    ys = torch.cat([b[1] for b in batches])
    info = {"source": ZEROQ, "images_used": int(ys.numel()), "labels": "pseudo (full-precision model's decisions)",
            "real": int((ys == 0).sum()), "fake": int((ys == 1).sum()), "size": side, "zeroq": zinfo}
    return CalibrationSet(batches, info)


def calibration_set(source: str | Path, model: nn.Module, n: int = 256, batch_size: int = 32, seed: int = 0,
                    size: int | None = None, zeroq: ZeroQConfig | None = None, quiet: bool = True) -> CalibrationSet:
    """`source` = "zeroq" (data-free) or a folder; see `folder_calibration` / `zeroq_calibration`."""
    if str(source).lower() == ZEROQ:
        return zeroq_calibration(model, n=n, batch_size=batch_size, seed=seed, size=size, cfg=zeroq, quiet=quiet)
    return folder_calibration(source, model, n=n, batch_size=batch_size, seed=seed, size=size)


def match_threshold(fp: nn.Module, q: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float | None:
    """The decision threshold (a probability) for `q` under which its decisions agree most often with `fp`'s on
    `batches` — no labels needed, so it works for pseudo-labelled and ZeroQ inputs. Candidates are the midpoints
    between consecutive sorted logits of `q` and fp's own threshold, which wins whenever it agrees best (other ties:
    the candidate closest to it). Returns None when fp's
    decisions are all one class (any threshold beyond the extremes would "agree": nothing to match)."""
    tf = _logit_threshold(fp)
    fp.eval()
    q.eval()
    with torch.no_grad():
        a = torch.cat([fp(x).view(-1) for x, _ in batches])
        b = torch.cat([q(x).view(-1) for x, _ in batches])
    target = a >= tf
    if bool(target.all()) or not bool(target.any()):
        return None
    zs = torch.sort(b).values
    cands = torch.cat([torch.tensor([tf]), zs[:1] - 1, (zs[1:] + zs[:-1]) / 2, zs[-1:] + 1])
    agree = ((b[None, :] >= cands[:, None]) == target[None, :]).float().mean(1)
    best = agree.max()
    pick = cands[agree == best]
    t = pick[(pick - tf).abs().argmin()]
    return float(torch.sigmoid(t))


def agreement(fp: nn.Module, q: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    """How close a quantized model stays to its FP model on `batches`: decision agreement at each model's own
    threshold, mean/max |Δlogit|, and (when the labels are real) each model's accuracy on them."""
    tf, tq = _logit_threshold(fp), _logit_threshold(q)
    fp.eval()
    q.eval()
    lf, lq, ys = [], [], []
    with torch.no_grad():
        for x, y in batches:
            lf.append(fp(x).view(-1))
            lq.append(q(x).view(-1))
            ys.append(y.view(-1))
    a, b, y = torch.cat(lf), torch.cat(lq), torch.cat(ys)
    d = (b - a).abs()
    return {"n": int(a.numel()), "decision_agreement": float(((a >= tf) == (b >= tq)).float().mean()),
            "mean_abs_logit_diff": float(d.mean()), "max_abs_logit_diff": float(d.max()),
            "fp_acc": float(((a >= tf).float() == y).float().mean()),
            "quant_acc": float(((b >= tq).float() == y).float().mean())}
