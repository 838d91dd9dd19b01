"""Evaluate a detector on every test set under a root (DESIGN.md §3 eval JSON)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fakelite.data.dataset import ImageDataset, collate
from fakelite.data.folders import ImageSet, discover_sets
from fakelite.data.io import reason_category
from fakelite.data.transforms import aggregate_logits
from fakelite.utils import distributed as D
from fakelite.utils.progress import progress_bar

from .calibration import DEFAULT_TARGET_FPR, expected_calibration_error, rates_at_threshold, tpr_at_fpr
from .metrics import binary_metrics, mean_metrics
from .roots import eval_root


@torch.no_grad()
def predict_logits(model: nn.Module, ds: ImageDataset, batch_size: int = 64,
                   progress: Iterable | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw logits (float32, one per image), labels and dataset indices of every decodable item.

    Under the "tiles" policy an item is a (K, 3, H, W) stack of its tiles: their K logits become one with
    `aggregate_logits` (the model's `preprocess.aggregate`)."""
    model.eval()
    pre = getattr(model, "preprocess", None)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    out, labels, index = [], [], []
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate)
    for batch in loader:
        if batch is None:
            continue
        x, y, i = batch
        if isinstance(x, list):  # mixed sizes or tiles: one forward per image
            logits = torch.tensor([aggregate_logits(model(xi.to(device)).float().view(-1).cpu().numpy(), pre)
                                   if xi.dim() == 4 else float(model(xi.unsqueeze(0).to(device)).float().view(-1)[0])
                                   for xi in x], dtype=torch.float32)
        else:
            logits = model(x.to(device)).cpu()
        out.append(logits.float().view(-1))
        labels.append(y)
        index.append(i)
        if progress is not None:
            progress(len(y))
    if not out:
        return np.zeros(0, dtype=np.float32), np.zeros(0), np.zeros(0, dtype=np.int64)
    return torch.cat(out).numpy(), torch.cat(labels).numpy(), torch.cat(index).numpy()


def predict_dataset(model: nn.Module, ds: ImageDataset, batch_size: int = 64,
                    progress: Iterable | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores sigmoid(logit / T) (T = the model's `temperature`, 1 when absent), labels and dataset indices of
    every decodable item (see `predict_logits`)."""
    z, y, i = predict_logits(model, ds, batch_size, progress)
    t = float(getattr(model, "temperature", 1.0) or 1.0)
    return torch.sigmoid(torch.from_numpy(z) / t).numpy(), y, i  # / 1.0 is exact: T = 1 scores as before


def predict_dataset_distributed(model: nn.Module, ds: ImageDataset, batch_size: int = 64,
                                progress: Iterable | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """`predict_dataset` sharded over the ranks of an initialised process group, gathered on every rank.

    Each rank scores items rank, rank+world, ... (each item exactly once); scores/labels/indices are all-gathered and
    put back in dataset order, so every rank returns identical arrays. Also returns the number of skipped files over
    all ranks. Without a process group it is `predict_dataset` (+ the skip count)."""
    rank, world = D.rank_world()
    if world == 1:
        s, y, i = predict_dataset(model, ds, batch_size, progress)
        return s, y, i, len(ds.skipped)
    sub = torch.utils.data.Subset(ds, D.shard(len(ds), rank, world))
    s, y, i = predict_dataset(model, sub, batch_size, progress)  # indices are the dataset's own
    s, y, i = (np.concatenate(D.all_gather_array(a)) for a in (s, y, i.astype(np.float64)))
    order = np.argsort(i, kind="stable")
    n_skipped = int(D.all_reduce_sum([float(len(ds.skipped))])[0])
    return s[order], y[order], i[order].astype(np.int64), n_skipped


def _operating_point_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float, target_fpr: float) -> dict:
    """The keys eval adds for the stored operating point (fakelite.eval.calibration): tpr_at_fpr (on this set's
    own scores), fpr_at_threshold / tpr_at_threshold (at the stored threshold), ece (15 bins)."""
    fpr_t, tpr_t = rates_at_threshold(labels, scores, threshold)
    return {"tpr_at_fpr": tpr_at_fpr(labels, scores, target_fpr), "fpr_at_threshold": fpr_t,
            "tpr_at_threshold": tpr_t, "ece": expected_calibration_error(labels, scores)}


OPERATING_KEYS = ("tpr_at_fpr", "fpr_at_threshold", "tpr_at_threshold", "ece")
def _not_read(s: ImageSet, skipped: dict[str, str]) -> dict[str, int]:
    """{reason: count}: files the folder walk left out (data/walk.py) plus files that failed to decode."""
    out = dict(s.not_read)
    for reason in skipped.values():
        k = reason_category(reason)
        out[k] = out.get(k, 0) + 1
    return out


def evaluate_sets(model: nn.Module, sets: list[ImageSet], batch_size: int = 64, threshold: float = 0.5,
                  quiet: bool = False, keep_scores: bool = False, target_fpr: float | None = None) -> dict:
    """Metrics per set and their mean. With keep_scores, also returns raw scores for plots.

    target_fpr: FPR at which `tpr_at_fpr` is read (default: the model's threshold_source target, else 0.05)."""
    if target_fpr is None:
        target_fpr = float((getattr(model, "threshold_source", None) or {}).get("target_fpr") or DEFAULT_TARGET_FPR)
    pre = getattr(model, "preprocess", None)
    result: dict = {"sets": {}, "threshold": threshold, "target_fpr": target_fpr,
                    "temperature": float(getattr(model, "temperature", 1.0) or 1.0),
                    "policy": pre.policy if pre is not None else None,
                    "aggregate": pre.aggregate if pre is not None else None,
                    "topk": pre.topk if pre is not None else None,
                    "max_tiles": pre.max_tiles if pre is not None else None}
    raw: dict = {}
    total = sum(len(s.items) for s in sets)
    with progress_bar("eval", total, quiet=quiet) as advance:
        for s in sets:
            ds = ImageDataset(s.items, model.preprocess, train=False, cache=False)
            scores, labels, _, n_skipped = predict_dataset_distributed(model, ds, batch_size, progress=advance)
            advance(len(ds.skipped))
            m = binary_metrics(labels, scores, 0.5, skipped=n_skipped)
            if threshold != 0.5:
                m["acc_at_threshold"] = binary_metrics(labels, scores, threshold)["acc"]
            m.update(_operating_point_metrics(labels, scores, threshold, target_fpr))
            m["skipped_files"] = ds.skipped
            m["not_read"] = _not_read(s, ds.skipped)  # every file under the set not scored, by reason
            result["sets"][s.name] = m
            if keep_scores:
                raw[s.name] = (labels, scores)
    result["mean"] = mean_metrics(list(result["sets"].values()))
    total: dict[str, int] = {}
    for m in result["sets"].values():
        for k, v in m["not_read"].items():
            total[k] = total.get(k, 0) + v
    result["mean"]["not_read"] = total
    if threshold != 0.5:
        vals = [m["acc_at_threshold"] for m in result["sets"].values() if m.get("acc_at_threshold") is not None]
        result["mean"]["acc_at_threshold"] = float(np.mean(vals)) if vals else None
    for k in OPERATING_KEYS:
        vals = [m[k] for m in result["sets"].values() if m.get(k) is not None]
        result["mean"][k] = float(np.mean(vals)) if vals else None
    if keep_scores:
        result["_scores"] = raw
    return result


def evaluate(model: nn.Module, root: str | Path, batch_size: int = 64, quiet: bool = False,
             keep_scores: bool = False) -> dict:
    """Evaluate on every set under `root`. Acc is at 0.5 (the field's convention); `acc_at_threshold` uses the
    threshold stored with the model when it differs from 0.5.

    A dataset root holding `train/` is scored on its `test/` only (result["root"] names the folder scored,
    result["note"] says why); without `test/` it raises `fakelite.eval.roots.MixedSplitsError` (a
    FileNotFoundError), so training images never enter a test mean."""
    folder, note = eval_root(root)
    D.init_from_env()  # under torchrun: shard the images over the processes (no-op otherwise)
    sets = discover_sets(folder)
    result = evaluate_sets(model, sets, batch_size, float(getattr(model, "threshold", 0.5)), quiet, keep_scores)
    result["root"] = str(folder)
    if note:
        result["note"] = note
    return result
