"""Choose a model's threshold on real images at a target FPR (and optionally its temperature), and write the new
operating point into an artifact without touching its weights (`fakelite threshold`, `train/quantize --target-fpr`).

The maths lives in fakelite.eval.calibration; this module scores folders with the evaluation path
(`predict_logits`: the model's scoring policy, bad files skipped and counted) and rewrites headers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save as st_save
from torch import nn

from fakelite.artifact import META_KEY, ArtifactError, header_hash, load, read
from fakelite.data.dataset import ImageDataset
from fakelite.data.folders import labelled_images, list_images
from fakelite.utils.files import atomic_write_bytes
from fakelite.utils.progress import progress_bar

from .calibration import DEFAULT_TARGET_FPR, binary_nll, fit_temperature, threshold_at_fpr
from .evaluate import predict_logits


def real_items(d: str | os.PathLike) -> list[tuple[Path, int]]:
    """Real images of `d`: those under its `0_real` folders when it has any (1_fake is ignored), else every image
    below `d`. FileNotFoundError when there is none."""
    d = Path(d)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such folder of real images")
    items = [(p, 0) for p, y in labelled_images(d) if y == 0]
    if not items:
        items = [(p, 0) for p in list_images(d)]
    if not items:
        raise FileNotFoundError(f"{d}: no images (give a folder of real images, or one with 0_real/)")
    return items


def folder_logits(model: nn.Module, items: list[tuple[Path, int]], batch_size: int = 64,
                  quiet: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Aggregated logits (model's scoring policy), labels and skipped files {path: reason} of `items`."""
    ds = ImageDataset(items, model.preprocess, train=False, cache=False)
    with progress_bar("score", len(items), quiet=quiet) as advance:
        z, y, _ = predict_logits(model, ds, batch_size, progress=advance)
    return z.astype(np.float64), y, dict(ds.skipped)


def calibrate(model: nn.Module, real: str | os.PathLike, target_fpr: float = DEFAULT_TARGET_FPR,
              temperature_data: str | os.PathLike | None = None, batch_size: int = 64,
              quiet: bool = True) -> dict[str, Any]:
    """Set `model.temperature` (when `temperature_data`, a folder with 0_real and 1_fake, is given: T minimising NLL,
    `fit_temperature`), then `model.threshold` and `model.threshold_source` from the real images of `real` so that
    at most `target_fpr` of them score ≥ threshold. Returns the threshold_source dict:
    {"method": "target_fpr", "target_fpr", "data", "n_real", "policy", "aggregate", "fpr", "skipped"
    [, "temperature": {"value", "data", "n", "nll_before", "nll_after"}]}.
    Raises FileNotFoundError (no images) or ValueError (nothing decodable, one class for temperature)."""
    src: dict[str, Any] = {}
    if temperature_data is not None:
        items = labelled_images(Path(temperature_data))
        if not items:
            raise FileNotFoundError(f"{temperature_data}: no 0_real/1_fake images for temperature scaling")
        z, y, _ = folder_logits(model, items, batch_size, quiet)
        t = fit_temperature(z, y)
        src["temperature"] = {"value": t, "data": str(temperature_data), "n": int(len(z)),
                              "nll_before": binary_nll(z, y, 1.0), "nll_after": binary_nll(z, y, t)}
        model.temperature = t
    z, _, skipped = folder_logits(model, real_items(real), batch_size, quiet)
    if not len(z):
        raise ValueError(f"{real}: no decodable real image ({len(skipped)} skipped)")
    t_ = float(getattr(model, "temperature", 1.0) or 1.0)
    scores = 1.0 / (1.0 + np.exp(-z / t_))
    thr, fpr = threshold_at_fpr(scores, target_fpr)
    pre = model.preprocess
    source = {"method": "target_fpr", "target_fpr": float(target_fpr), "data": str(real), "n_real": int(len(z)),
              "policy": pre.policy, "aggregate": pre.aggregate, "fpr": fpr, "skipped": len(skipped), **src}
    model.threshold = thr
    model.threshold_source = source
    return source


def rewrite_header(src: str | os.PathLike, out: str | os.PathLike, updates: dict[str, Any]) -> Path:
    """Copy the .fakelite `src` to `out` with top-level header keys replaced by `updates` (header hash renewed).
    The tensors are written back byte for byte (same content hash). ArtifactError for an unusable `src`."""
    header, tensors = read(src)
    header = {**header, **json.loads(json.dumps(updates))}
    header.pop("header_hash", None)
    header["header_hash"] = header_hash(header)
    atomic_write_bytes(Path(out), st_save(tensors, metadata={META_KEY: json.dumps(header)}))
    return Path(out)


def recalibrate_artifact(model_path: str | os.PathLike, real: str | os.PathLike, out: str | os.PathLike,
                         target_fpr: float = DEFAULT_TARGET_FPR, temperature_data: str | os.PathLike | None = None,
                         policy: str | None = None, aggregate: str | None = None, topk: int | None = None,
                         max_tiles: int | None = None, batch_size: int = 64, quiet: bool = True) -> dict[str, Any]:
    """`fakelite threshold`: load `model_path`, optionally change its scoring policy, calibrate (see `calibrate`)
    and write `out` with the same tensors and the new threshold, threshold_source, temperature and preprocess.
    Returns {"threshold", "threshold_source", "temperature", "out"}."""
    p = Path(model_path)
    if p.suffix.lower() != ".fakelite":
        raise ArtifactError(f"{p}: `fakelite threshold` rewrites .fakelite files (re-export .onnx/.tflite after)")
    model = load(p)
    model.preprocess = model.preprocess.with_scoring(policy, aggregate, topk, max_tiles)
    source = calibrate(model, real, target_fpr, temperature_data, batch_size, quiet)
    rewrite_header(p, out, {"threshold": float(model.threshold), "threshold_source": source,
                            "temperature": float(model.temperature), "preprocess": model.preprocess.to_dict()})
    return {"threshold": float(model.threshold), "threshold_source": source,
            "temperature": float(model.temperature), "out": str(out)}
