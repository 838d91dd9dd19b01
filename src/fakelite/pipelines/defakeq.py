"""DeFakeQ pipeline: HAQ mixed-precision allocation → quantize → VEFT channels → PTQ init → progressive
contrastive calibration → packed .fakelite. See docs/defakeq.md.

API: `run_defakeq(fp, data, out, budget_mb=..., budget_bops=...)` (also `fakelite quantize --recipe defakeq`);
the building blocks (`haq_scores`, `build_student`, `choose_veft_channels`) are reused by `fakelite compare`.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .calibrate_defakeq import CalibConfig, TeacherCache, calibrate_defakeq
from .convert import QuantConfig, calibrate
from .mixed import (
    DEFAULT_BITS,
    MB,
    HAQScores,
    _concat,
    _local_qlayer,
    allocate,
    build_quantized,
    capture_layers,
    haq_record,
    measure_haq,
    mixed_config,
    plot_allocation,
)
from .veft import channel_gains, select_channels, veft_summary

DEFAULT_VEFT_RATIO = 0.02


def base_config(quantizer: str = "lsq", first_last: str = "8bit") -> QuantConfig:
    """The config HAQ starts from: every layer at 4 bits (overridden per layer), first/last layers at 8 bits."""
    return QuantConfig(w_bits=4, a_bits=4, quantizer=quantizer, first_last=first_last)


def haq_scores(fp: nn.Module, batches: list, quantizer: str = "lsq", bits: tuple[int, ...] = DEFAULT_BITS,
               veft_ratio: float = DEFAULT_VEFT_RATIO, sensitivity: str = "taylor", cka_weight: float = 1.0,
               size: int | None = None) -> HAQScores:
    return measure_haq(fp, batches, base_config(quantizer), bits=bits, sensitivity=sensitivity,
                       cka_weight=cka_weight, veft_ratio=veft_ratio, size=size)


def choose_veft_channels(fp: nn.Module, alloc: dict[str, int], counts: dict[str, int], batches: list,
                         quantizer: str = "lsq", samples: int = 64, bits: int = 8) -> dict[str, list[int]]:
    """Per layer, the `counts[layer]` output channels whose high-precision copy most reduces the first-order
    logit error at the allocated width (veft.channel_gains) on `samples` calibration images."""
    names = [n for n in alloc if counts.get(n, 0) > 0]
    if not names:
        return {}
    model = copy.deepcopy(fp).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    x, _ = _concat(batches, samples)
    xs, ys, gs, _ = capture_layers(model, names, x)
    mods = dict(model.named_modules())
    out = {}
    for n in names:
        q = _local_qlayer(mods[n], alloc[n], quantizer, xs[n])
        out[n] = select_channels(channel_gains(mods[n], q, xs[n], ys[n], gs[n], bits), counts[n])
    return out


def build_student(fp: nn.Module, alloc: dict[str, int], batches: list, quantizer: str = "lsq",
                  veft_channels: dict[str, list[int]] | None = None, first_last: str = "8bit") -> nn.Module:
    """Quantized copy of `fp` with the allocation (and VEFT channels), PTQ-initialised on `batches`."""
    cfg = mixed_config(base_config(quantizer, first_last), alloc)
    m = build_quantized(fp, cfg, veft_channels)
    calibrate(m, batches)
    m.eval()
    return m


def uniform_alloc(scores: HAQScores, bits: int) -> dict[str, int]:
    return dict.fromkeys(scores.layers, int(bits))


def _val_metrics(model: nn.Module, data: Path, batch_size: int = 64) -> dict | None:
    from fakelite.data.folders import ImageSet, labelled_images
    from fakelite.eval.evaluate import evaluate_sets

    val = Path(data) / "val"
    if not val.is_dir():
        return None
    items = labelled_images(val)
    if not items:
        return None
    return evaluate_sets(model, [ImageSet("val", items)], batch_size, quiet=True)["sets"]["val"]


def run_defakeq(fp_model_path: str | Path | nn.Module, data: str | Path, out: str | Path,
                budget_mb: float | None = None, budget_bops: float | None = None, calib: int = 256,
                bits: tuple[int, ...] = DEFAULT_BITS, veft_ratio: float = DEFAULT_VEFT_RATIO,
                stage_epochs: float = 1.0, final_epochs: float = 2.0, seed: int = 0, quantizer: str = "lsq",
                sensitivity: str = "taylor", cka_weight: float = 1.0, size: int | None = None,
                batch_size: int = 32, calibrate_student: bool = True, max_calib_seconds: float | None = 290.0,
                quiet: bool = True, calib_batches: list | None = None,
                calib_info: dict | None = None) -> dict[str, Any]:
    """The whole DeFakeQ pipeline; writes out/model.fakelite, out/metrics.json, out/haq.json,
    out/haq_allocation.png and returns the metrics dict.

    budget_mb: packed storage in decimal MB (as `fakelite cost` counts it, header excluded); budget_bops: BOPs
    at the model's input size. At least one is required. Raises mixed.InfeasibleBudget (a ValueError naming the
    minimum feasible budget) when nothing fits. max_calib_seconds caps the calibration wall time (the steps
    done are recorded in metrics["calibration"]). `calib_batches` ((x, y) batches, e.g. from
    `quant.calib_data.calibration_set`: a user's folder or ZeroQ inputs) replace the `calib` images of DATA/train
    for every step (HAQ scores, VEFT choice, PTQ init, contrastive calibration); `data` may then be None (no
    validation: metrics["calib_agreement"] compares the student with the FP model on the calibration images).
    """
    from fakelite import artifact
    from fakelite.data.dataset import calibration_batches

    from .cost import model_cost

    if budget_mb is None and budget_bops is None:
        raise ValueError("DeFakeQ needs --budget-mb or --budget-bops")
    t_start = time.perf_counter()
    calib_source = calib_info  # (the name calib_info is reused below for the calibration's own summary)
    fp = artifact.load(fp_model_path) if not isinstance(fp_model_path, nn.Module) else fp_model_path
    if getattr(fp, "fakelite_quant", None):
        raise ValueError("start DeFakeQ from a full-precision model (this one is already quantized)")
    fp.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    pre = fp.preprocess if size is None else replace(fp.preprocess, crop=int(size))
    if calib_batches is not None:
        batches = list(calib_batches)
    elif data is None:
        raise ValueError("DeFakeQ needs --data (with train/) or --calib-data")
    else:
        batches = calibration_batches(data, pre, n=calib, batch_size=batch_size, seed=seed)
    if not batches:
        raise ValueError(f"{data}: no usable training images for calibration")
    size = int(batches[0][0].shape[-1])
    t0 = time.perf_counter()
    scores = haq_scores(fp, batches, quantizer, tuple(bits), veft_ratio, sensitivity, cka_weight, size)
    budget_bytes = None if budget_mb is None else int(budget_mb * MB)
    alloc = allocate(scores, budget_bytes, budget_bops)
    t_haq = time.perf_counter() - t0
    t0 = time.perf_counter()
    veft = choose_veft_channels(fp, alloc, scores.veft_channels, batches, quantizer) if veft_ratio > 0 else {}
    student = build_student(fp, alloc, batches, quantizer, veft)
    t_ptq = time.perf_counter() - t0
    calib_info: dict[str, Any] = {}
    if calibrate_student:
        cfg = CalibConfig(stage_epochs=stage_epochs, final_epochs=final_epochs, seed=seed,
                          max_seconds=max_calib_seconds)
        calib_info = calibrate_defakeq(student, None, batches, cfg, cache=TeacherCache(fp, batches), quiet=quiet)
    student.preprocess = pre
    record = haq_record(scores, alloc, budget_bytes, budget_bops)
    student.fakelite_quant["haq"] = record
    cost = model_cost(student, size)
    if budget_bytes is not None and cost["storage_bytes"] > budget_bytes:  # cannot happen: allocation is exact
        raise RuntimeError(f"storage {cost['storage_bytes']} exceeds the budget {budget_bytes}")
    vs = veft_summary(student)
    metrics: dict[str, Any] = {
        "recipe": "defakeq", "budget_mb": budget_mb, "budget_bytes": budget_bytes, "budget_bops": budget_bops,
        "allocation": alloc, "bits_histogram": {str(b): sum(1 for v in alloc.values() if v == b) for b in bits},
        "cost": cost, "bops_with_veft": record["predicted_bops"],
        "veft": {"ratio": veft_ratio, "channels": vs["channels"], "storage_overhead_bytes": vs["storage_overhead_bytes"]},
        "calibration": {k: v for k, v in calib_info.items() if k != "loss_curve"},
        "timing_s": {"haq": t_haq, "veft_select_and_ptq_init": t_ptq, "calibration": calib_info.get("wall_s", 0.0),
                     "total": time.perf_counter() - t_start},
        "calib_images": sum(len(b[1]) for b in batches), "threads": torch.get_num_threads(),
    }
    val = _val_metrics(student, Path(data)) if data is not None else None
    if val is not None:
        metrics["val"] = {k: val.get(k) for k in ("auc", "ap", "acc", "n")}
    if calib_batches is not None:
        from .calib_data import agreement, match_threshold

        matched = match_threshold(fp, student, batches) if data is None else None
        student.threshold = float(getattr(fp, "threshold", 0.5)) if matched is None else matched
        metrics["threshold"] = student.threshold
        metrics["threshold_source"] = "full-precision model" if matched is None else "matched to FP decisions on the calibration images"
        metrics["calib_agreement"] = agreement(fp, student, batches)
        metrics["calibration_source"] = calib_source or {}
    provenance = {"mode": "defakeq", "source_provenance": getattr(fp, "provenance", {}),
                  "calib_images": metrics["calib_images"], "seed": seed,
                  **({"calibration": calib_source} if calib_source is not None else {})}
    artifact.save(student, out / "model.fakelite", threshold=float(getattr(student, "threshold", None)
                                                                     or getattr(fp, "threshold", 0.5)),
                  provenance=provenance, metrics={"val": metrics.get("val"), "cost": cost})
    (out / "haq.json").write_text(json.dumps(record, indent=2))
    plot_allocation(scores, alloc, out / "haq_allocation.png",
                    title=f"DeFakeQ HAQ: {cost['storage_bytes'] / 1e3:.1f} kB packed, "
                          f"{cost['bops'] / 1e9:.2f} GBOPs at {size}²")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return metrics


def _recipe(fp: nn.Module, data: Path, out: Path, options: dict[str, Any]) -> dict[str, Any]:
    """`fakelite quantize --recipe defakeq` entry (options from the quantize command); errors exit in one line."""
    from fakelite.commands.common import fail

    if options.get("budget_mb") is None and options.get("budget_bops") is None:
        fail("--recipe defakeq needs --budget-mb or --budget-bops")
    try:
        return run_defakeq(fp, data, out, budget_mb=options.get("budget_mb"), budget_bops=options.get("budget_bops"),
                           calib=int(options.get("calib", 256)), seed=int(options.get("seed", 0)),
                           size=options.get("size"), batch_size=int(options.get("batch_size", 32)),
                           quiet=bool(options.get("quiet", True)), calib_batches=options.get("calib_batches"),
                           calib_info=options.get("calib_info"))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))


try:  # register with `fakelite quantize --recipe defakeq`
    from fakelite.commands.quant import register_recipe

    register_recipe("defakeq", _recipe)
except ImportError:  # pragma: no cover - CLI layer not available
    pass
