"""The MobileNetV3 pipeline (`fakelite recipe mobilenetv3`), end to end (the seed paper's pipeline, measured
honestly).

teacher npr_resnet23 (trained here unless given)
  → MobileNetV3-Small students distilled from it, one per input representation (NPR and RGB); the one with the
    better validation score (AUC + AP + Acc, the training loop's selection key) goes on
  → structured channel pruning (30 % by default, L1, dependency-aware: residuals, depthwise, SE)
  → fine-tuning with distillation
  → int8 PTQ (MinMax W8A8, calibrated on 256 training images) — the export-ready artifact (`RUN/model.fakelite`),
    because int8 is what runs faster on CPUs (RESEARCH.md §4)
  → optionally W4A4 LSQ QAT with distillation (smallest file; no CPU kernel runs 4-bit faster than int8).

Every step is one row of a table: train Acc (eval transform, ≤ 2000 training images), test Acc/AP/AUC (mean over
the test sets), params, MACs, packed .fakelite size, CPU latency (torch eager, batch 1, median) and wall time.
The seed paper reports train 97 % / test 75 % / AUC 0.52 — overfitting; the recipe regularises with dropout,
weight decay and the CNNDetection augmentations (flip, blur, JPEG) and reports train beside test.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from fakelite import artifact
from fakelite.compress.distill import DistillConfig
from fakelite.compress.measure import summarize
from fakelite.compress.prune import prune_structured
from fakelite.data.dataset import ImageDataset, calibration_batches, split_items
from fakelite.data.transforms import AugmentConfig
from fakelite.eval.evaluate import predict_dataset
from fakelite.eval.metrics import best_threshold
from fakelite.models import create_model
from fakelite.pipelines.distill import data_crop, distill
from fakelite.quant import QuantConfig, calibrate, quantize
from fakelite.train.loop import TrainConfig, fit

RECIPE_AUGMENT = AugmentConfig(hflip=0.5, blur_prob=0.1, blur_sigma=(0.0, 1.5), jpeg_prob=0.1, jpeg_quality=(60, 100))


@dataclass
class RecipeConfig:
    """Knobs of the recipe. Epoch counts default from `epochs` (student distillation)."""

    epochs: int = 10
    teacher_epochs: int | None = None  # default: epochs
    finetune_epochs: int | None = None  # default: max(1, epochs // 2)
    qat_epochs: int | None = None  # default: max(1, epochs // 2); 0 skips W4A4
    inputs: tuple[str, ...] = ("npr", "rgb")
    prune_ratio: float = 0.3
    temperature: float = 4.0
    alpha: float = 0.5
    feature_weight: float = 0.0
    lr: float = 1e-3
    teacher_lr: float = 2e-4
    weight_decay: float = 1e-4
    dropout: float = 0.3
    batch_size: int = 32
    crop: int | None = None
    seed: int = 0
    threads: int | None = 2
    max_steps_per_epoch: int | None = None
    calib_images: int = 256
    latency_runs: int = 30
    augment: AugmentConfig = field(default_factory=lambda: RECIPE_AUGMENT)
    quiet: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    def resolved(self) -> RecipeConfig:
        half = max(1, self.epochs // 2)
        return RecipeConfig(**{**asdict(self), "augment": self.augment,
                               "teacher_epochs": self.teacher_epochs if self.teacher_epochs is not None else self.epochs,
                               "finetune_epochs": self.finetune_epochs if self.finetune_epochs is not None else half,
                               "qat_epochs": self.qat_epochs if self.qat_epochs is not None else half})


def _train_cfg(rc: RecipeConfig, epochs: int, lr: float | None = None, crop: int | None = None):
    return TrainConfig(epochs=epochs, batch_size=rc.batch_size, lr=lr or rc.lr, weight_decay=rc.weight_decay,
                       lr_schedule="cosine", seed=rc.seed, crop=crop, augment=rc.augment, threads=rc.threads,
                       max_steps_per_epoch=rc.max_steps_per_epoch, quiet=rc.quiet)


def _val_key(metrics: dict) -> float:
    v = metrics.get("val", {})
    return sum(x for x in (v.get("auc"), v.get("ap"), v.get("acc")) if x is not None)


def _row(step: str, model: nn.Module, data: Path, rc: RecipeConfig, wall: float, path: Path | None,
         note: str = "") -> dict[str, Any]:
    s = summarize(model, data=data, latency_runs=rc.latency_runs, threads=1, with_train_acc=True)
    if path is not None and path.exists():
        s["packed_bytes"] = path.stat().st_size
    s.update(step=step, wall_seconds=wall, artifact=str(path) if path else None, note=note,
             threshold=float(getattr(model, "threshold", 0.5)))
    return s


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _acc_t(t: dict) -> float | None:
    return t.get("acc_at_threshold", t.get("acc"))


TABLE_COLUMNS = ["step", "train Acc@t", "test Acc@0.5", "test Acc@t", "test AP", "test AUC", "params", "MACs (M)",
                 "packed kB", "CPU ms", "wall s"]


def _cells(r: dict) -> list[str]:
    t = r.get("test", {})
    return [r["step"], _pct(r.get("train_acc_at_threshold", r.get("train_acc"))), _pct(t.get("acc")), _pct(_acc_t(t)),
            _pct(t.get("ap")), _pct(t.get("auc")), f"{r['params']:,}", f"{r['macs'] / 1e6:.1f}",
            f"{r['packed_bytes'] / 1e3:.0f}", f"{r['latency_ms']:.2f}", f"{r['wall_seconds']:.0f}"]


def table_markdown(rows: list[dict]) -> str:
    """The recipe table (Markdown). `@t`: at the threshold stored with the model (chosen on validation)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def print_table(rows: list[dict], title: str = "") -> None:
    t = Table(title=title or None)
    for c in TABLE_COLUMNS:
        t.add_column(c, justify="left" if c == "step" else "right")
    for r in rows:
        t.add_row(*_cells(r))
    Console(width=max(150, Console().width)).print(t)


def _log(rc: RecipeConfig, msg: str) -> None:
    if not rc.quiet:
        print(f"[recipe] {msg}", flush=True)


def _calibrate_and_threshold(model: nn.Module, data: Path, rc: RecipeConfig) -> float:
    calibrate(model, calibration_batches(data, model.preprocess, n=rc.calib_images, batch_size=32, seed=rc.seed))
    vs = ImageDataset(split_items(data, "val"), model.preprocess, train=False)
    scores, labels, _ = predict_dataset(model, vs)
    return best_threshold(labels, scores)


def run_recipe(data: str | Path, out: str | Path, rc: RecipeConfig | None = None,
               teacher: str | Path | None = None) -> dict[str, Any]:
    """Run the whole recipe; writes OUT/{teacher,student_<input>,pruned,int8,w4a4}/, OUT/model.fakelite (int8),
    OUT/mobilenetv3.json and OUT/mobilenetv3.md. Returns the JSON dict."""
    t_all = time.time()
    rc = (rc or RecipeConfig()).resolved()
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if rc.threads:
        torch.set_num_threads(rc.threads)
    crop = rc.crop or data_crop(data)
    dcfg = DistillConfig(rc.temperature, rc.alpha, rc.feature_weight)
    rows: list[dict] = []
    extra: dict[str, Any] = {}

    # 1. teacher
    t0 = time.time()
    if teacher is not None:
        _log(rc, f"teacher: {teacher}")
        t_model = artifact.load(teacher)
        t_path = Path(teacher)
        note = "given"
    else:
        _log(rc, f"teacher: training npr_resnet23 for {rc.teacher_epochs} epochs")
        torch.manual_seed(rc.seed)
        t_model = create_model("npr_resnet23")
        fit(t_model, data, out / "teacher", _train_cfg(rc, rc.teacher_epochs, rc.teacher_lr, crop),
            provenance={"recipe": "mobilenetv3", "role": "teacher"})
        t_path = out / "teacher" / "model.fakelite"
        t_model = artifact.load(t_path)
        note = f"trained {rc.teacher_epochs} ep"
    rows.append(_row("teacher npr_resnet23", t_model, data, rc, time.time() - t0, t_path, note))

    # 2. students, one per input representation; keep the better on validation
    best: tuple[float, str, Path] | None = None
    for inp in rc.inputs:
        t0 = time.time()
        _log(rc, f"student mobilenetv3_small ({inp} input): distilling for {rc.epochs} epochs")
        torch.manual_seed(rc.seed)  # same init whatever ran before (DataLoaders draw from the global RNG)
        s = create_model("mobilenetv3_small", input=inp, dropout=rc.dropout)
        m = distill(t_model, s, data, out / f"student_{inp}", _train_cfg(rc, rc.epochs, crop=crop), dcfg,
                    provenance={"recipe": "mobilenetv3", "role": f"student_{inp}"})
        path = out / f"student_{inp}" / "model.fakelite"
        key = _val_key(m)
        extra[f"student_{inp}_val"] = m["val"]
        rows.append(_row(f"distilled MobileNetV3-S ({inp})", artifact.load(path), data, rc, time.time() - t0, path,
                         f"val AUC {m['val'].get('auc') or 0:.3f}"))
        if best is None or key > best[0]:
            best = (key, inp, path)
    assert best is not None
    chosen = best[1]
    extra["chosen_input"] = chosen
    _log(rc, f"chosen input: {chosen} (higher validation AUC+AP+Acc)")

    # 3. structured pruning, then fine-tuning with distillation
    t0 = time.time()
    student = artifact.load(best[2])
    prune_structured(student, rc.prune_ratio, size=min(crop, 64))
    (out / "pruned_noft").mkdir(parents=True, exist_ok=True)
    artifact.save(student, out / "pruned_noft" / "model.fakelite")
    rows.append(_row(f"pruned {int(rc.prune_ratio * 100)} % (no FT)", student, data, rc, time.time() - t0,
                     out / "pruned_noft" / "model.fakelite"))
    t0 = time.time()
    _log(rc, f"fine-tuning the pruned student for {rc.finetune_epochs} epochs")
    student.train()
    distill(t_model, student, data, out / "pruned", _train_cfg(rc, rc.finetune_epochs, rc.lr / 2, crop), dcfg,
            provenance={"recipe": "mobilenetv3", "role": "pruned", "prune_ratio": rc.prune_ratio})
    pruned_path = out / "pruned" / "model.fakelite"
    rows.append(_row("pruned + fine-tuned", artifact.load(pruned_path), data, rc, time.time() - t0, pruned_path))

    # 4. int8 PTQ (the export-ready artifact)
    t0 = time.time()
    _log(rc, "int8 PTQ (MinMax W8A8)")
    q8 = artifact.load(pruned_path)
    quantize(q8, QuantConfig(w_bits=8, a_bits=8, quantizer="minmax", first_last="target"))
    thr = _calibrate_and_threshold(q8, data, rc)
    q8_path = artifact.save(q8, out / "int8" / "model.fakelite", threshold=thr,
                            provenance={"recipe": "mobilenetv3", "role": "int8", "from": str(pruned_path)})
    q8.threshold = thr
    rows.append(_row("int8 PTQ (W8A8 MinMax)", artifact.load(q8_path), data, rc, time.time() - t0, q8_path))
    shutil.copyfile(q8_path, out / "model.fakelite")

    # 5. W4A4 LSQ QAT with distillation (optional)
    if rc.qat_epochs:
        t0 = time.time()
        _log(rc, f"W4A4 LSQ QAT for {rc.qat_epochs} epochs")
        q4 = artifact.load(pruned_path)
        quantize(q4, QuantConfig(w_bits=4, a_bits=4, quantizer="lsq"))
        calibrate(q4, calibration_batches(data, q4.preprocess, n=rc.calib_images, batch_size=32, seed=rc.seed))
        q4.train()
        distill(t_model, q4, data, out / "w4a4", _train_cfg(rc, rc.qat_epochs, rc.lr / 4, crop), dcfg,
                provenance={"recipe": "mobilenetv3", "role": "w4a4"})
        q4_path = out / "w4a4" / "model.fakelite"
        rows.append(_row("W4A4 LSQ QAT", artifact.load(q4_path), data, rc, time.time() - t0, q4_path))

    result = {"recipe": "mobilenetv3", "data": str(data), "crop": crop, "config": rc.to_dict(),
              "chosen_input": chosen, "rows": rows, "wall_seconds": time.time() - t_all,
              "final_artifact": str(out / "model.fakelite"), **extra}
    (out / "mobilenetv3.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "mobilenetv3.md").write_text(table_markdown(rows) + "\n")
    return result
