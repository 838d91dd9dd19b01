"""Before/after numbers for compression reports: parameters, MACs, packed size, CPU latency, accuracy.

MACs are counted with fakelite.quant.cost's forward hooks on Conv2d/Linear (multiply-accumulates of one image at `size`×`size`),
so they follow the *physical* shapes of a pruned network. Zeros left by unstructured pruning are counted
too (dense kernels run them); `nonzero_macs` discounts them, for reference. fakelite.quant.cost's `model_cost`
dict is added under "cost" (BOPs/OPs/storage of quantized models) when it can be computed.
"""

from __future__ import annotations

import io
import statistics
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fakelite.artifact import to_bytes
from fakelite.data.dataset import ImageDataset, split_items
from fakelite.eval.evaluate import evaluate, predict_dataset
from fakelite.eval.metrics import binary_metrics
from fakelite.quant.cost import layer_macs, model_cost


def count_params(model: nn.Module) -> int:
    """Number of parameters (all tensors registered as parameters)."""
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model: nn.Module, size: int = 224) -> dict[str, int]:
    """{"macs": dense MACs of Conv2d + Linear for one size×size image (fakelite.quant.cost.layer_macs, so
    pruned shapes count as they physically are), "nonzero_macs": each layer's MACs scaled by its weight density}."""
    mods = dict(model.named_modules())
    totals = {"macs": 0, "nonzero_macs": 0}
    for row in layer_macs(model, size):
        w = mods[row["name"]].weight
        density = float((w != 0).sum()) / max(1, w.numel())
        totals["macs"] += row["macs"]
        totals["nonzero_macs"] += int(round(row["macs"] * density))
    return totals


def quant_cost(model: nn.Module, size: int) -> dict | None:
    """fakelite.quant.cost.model_cost(model, size), or None when it cannot be computed for this model."""
    try:
        return dict(model_cost(model, size))
    except Exception:  # noqa: BLE001 - an optional extra column must never fail a report
        return None


@torch.no_grad()
def measure_latency(model: nn.Module, size: int = 224, runs: int = 30, warmup: int = 5, threads: int = 1) -> dict:
    """CPU latency of torch eager inference, batch 1: {"median_ms", "p90_ms", "runs", "threads"}."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    try:
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        torch.set_num_threads(prev)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
            "runs": runs, "threads": threads}


def packed_bytes(model: nn.Module) -> int:
    """Size in bytes of the model's .fakelite serialisation (what `fakelite.save` would write)."""
    return len(to_bytes(model))


def input_size(model: nn.Module, default: int = 224) -> int:
    crop = getattr(getattr(model, "preprocess", None), "crop", None)
    return int(crop or default)


def eval_means(model: nn.Module, test_root: str | Path, batch_size: int = 64, quiet: bool = True) -> dict:
    """Evaluate on every test set under `test_root`; returns the eval JSON (sets + mean)."""
    with redirect_stdout(io.StringIO()):
        res = evaluate(model, test_root, batch_size=batch_size, quiet=quiet)
    for m in res["sets"].values():
        m.pop("skipped_files", None)
    return res


def train_accuracy(model: nn.Module, data: str | Path, max_images: int = 2000, seed: int = 0,
                   threshold: float = 0.5) -> float | None:
    """Accuracy (at `threshold`, eval transform) on up to `max_images` training images (random draw)."""
    try:
        items = split_items(Path(data), "train")
    except FileNotFoundError:
        return None
    if len(items) > max_images:
        idx = np.random.default_rng(seed).choice(len(items), max_images, replace=False)
        items = [items[i] for i in sorted(idx)]
    scores, labels, _ = predict_dataset(model, ImageDataset(items, model.preprocess, train=False, cache=False))
    return binary_metrics(labels, scores, threshold)["acc"] if len(labels) else None


def summarize(model: nn.Module, *, data: str | Path | None = None, size: int | None = None,
              latency_runs: int = 30, threads: int = 1, with_train_acc: bool = False) -> dict[str, Any]:
    """One row of a compression table: params, MACs, packed bytes, latency and (with `data`) test metrics."""
    size = size or input_size(model)
    row: dict[str, Any] = {"params": count_params(model), **count_macs(model, size), "size": size,
                           "packed_bytes": packed_bytes(model),
                           "latency_ms": measure_latency(model, size, runs=latency_runs, threads=threads)["median_ms"]}
    cost = quant_cost(model, size)
    if cost is not None:
        row["cost"] = cost
    if data is not None:
        root = Path(data)
        test_root = root / "test" if (root / "test").is_dir() else root
        res = eval_means(model, test_root)
        row["test"] = res["mean"]
        row["test_sets"] = res["sets"]
        if with_train_acc:
            thr = float(getattr(model, "threshold", 0.5))
            row["train_acc"] = train_accuracy(model, root)
            row["train_acc_at_threshold"] = train_accuracy(model, root, threshold=thr) if thr != 0.5 else row["train_acc"]
    return row
