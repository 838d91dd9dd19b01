"""The DeFakeQ pipeline: HAQ mixed-precision allocation → quantize → VEFT channels → PTQ init → progressive
contrastive calibration → packed .fakelite in a run folder. See docs/defakeq.md.

API: `run_defakeq(fp, data, out, budget_mb=..., budget_bops=...)` (also `fakelite quantize --recipe defakeq`);
the building blocks (`haq_scores`, `build_student`, `choose_veft_channels`) live in `fakelite.quant.defakeq` and
are reused by the comparison study (`fakelite.studies.defakeq_compare`, `fakelite compare`).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fakelite import artifact
from fakelite.data.dataset import calibration_batches
from fakelite.data.folders import ImageSet, labelled_images
from fakelite.eval.evaluate import evaluate_sets
from fakelite.quant.calib_data import agreement, match_threshold
from fakelite.quant.cost import model_cost
from fakelite.quant.defakeq import (
    DEFAULT_BITS,
    DEFAULT_VEFT_RATIO,
    MB,
    CalibConfig,
    TeacherCache,
    allocate,
    build_student,
    calibrate_defakeq,
    choose_veft_channels,
    haq_record,
    haq_scores,
    plot_allocation,
)
from fakelite.quant.veft import veft_summary


def _val_metrics(model: nn.Module, data: Path, batch_size: int = 64) -> dict | None:
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
    at the model's input size. At least one is required. Raises quant.defakeq.InfeasibleBudget (a ValueError naming the
    minimum feasible budget) when nothing fits. max_calib_seconds caps the calibration wall time (the steps
    done are recorded in metrics["calibration"]). `calib_batches` ((x, y) batches, e.g. from
    `quant.calib_data.calibration_set`: a user's folder or ZeroQ inputs) replace the `calib` images of DATA/train
    for every step (HAQ scores, VEFT choice, PTQ init, contrastive calibration); `data` may then be None (no
    validation: metrics["calib_agreement"] compares the student with the FP model on the calibration images).
    """
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
