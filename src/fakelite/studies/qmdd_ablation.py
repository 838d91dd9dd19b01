"""QMDD's study on one benchmark in one run: the component ablation (Fig. 9), the quantizer comparison of
Table 2's lower half, the efficiency of Table 4, the post-activation histograms of Fig. 7, and (optionally)
CQB's α initialisation.

Every row is an `npr_resnet23` (QMDD's ResNet-23): two full-precision models (RGB and NPR input) trained here
(or given), and QAT rows that start from the FP model with the same input, all with the same epochs, seed, lr,
schedule and calibration. A row's outputs are cached under WORK/<row>/ (model.fakelite, metrics.json,
row.json); a re-run with the same settings reuses finished rows and resumes an interrupted training from its last
finished epoch. Results: OUT/qmdd-ablation.{md,json} and PNG charts (the report: fakelite/studies/qmdd_ablation_report.py; the
Fig. 7 statistics: fakelite/eval/activations.py).

    from fakelite.studies.qmdd_ablation import StudyConfig, run_study
    result = run_study(StudyConfig(data="runs/facesynth64", work="runs/ablation", out="docs/results"))
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fakelite import artifact
from fakelite.data.dataset import calibration_batches, split_items
from fakelite.data.folders import discover_sets, labelled_images, split_dir
from fakelite.data.io import BadInput, load_rgb
from fakelite.eval.activations import HIST_LAYERS, activation_study, plot_activations
from fakelite.eval.evaluate import evaluate_sets
from fakelite.eval.robustness import subsample
from fakelite.models import create_model
from fakelite.pipelines.qat import run_quantization
from fakelite.quant import QuantConfig
from fakelite.quant.cost import model_cost
from fakelite.studies.qmdd_ablation_report import pct, plot_fig9, plot_table2, targets, to_markdown
from fakelite.train.loop import TrainConfig, fit

ARCH = "npr_resnet23"


@dataclass(frozen=True)
class Row:
    """One model of the study. quant=None: full precision; otherwise QuantConfig keyword arguments."""

    key: str
    label: str
    input: str  # "rgb" | "npr"
    quant: dict[str, Any] | None = None
    freeze_alpha: bool = False

    @property
    def fp_key(self) -> str:
        return f"fp_{self.input}"


ROWS: dict[str, Row] = {r.key: r for r in [
    Row("fp_rgb", "FP RGB", "rgb"),
    Row("fp_npr", "FP NPR", "npr"),
    # Fig. 9: baseline → + NPR → + CQB → + SLR (= ours W2A2)
    Row("n2uq_w2a2_rgb", "N2UQ W2A2 RGB (baseline)", "rgb", {"w_bits": 2, "a_bits": 2, "quantizer": "n2uq"}),
    Row("n2uq_w2a2_npr", "+ NPR", "npr", {"w_bits": 2, "a_bits": 2, "quantizer": "n2uq"}),
    Row("n2uq_w2a2_npr_cqb", "+ NPR + CQB", "npr", {"w_bits": 2, "a_bits": 2, "quantizer": "n2uq", "cqb": True}),
    Row("ours_w2a2", "Ours W2A2 (NPR + CQB + SLR)", "npr",
        {"w_bits": 2, "a_bits": 2, "quantizer": "slr-n2uq", "cqb": True}),
    # Table 2, lower half (on the NPR detector)
    Row("minmax_w4a4", "MinMax W4A4", "npr", {"w_bits": 4, "a_bits": 4, "quantizer": "minmax"}),
    Row("lsq_w4a4", "LSQ W4A4", "npr", {"w_bits": 4, "a_bits": 4, "quantizer": "lsq"}),
    Row("n2uq_w3a3", "N2UQ W3A3", "npr", {"w_bits": 3, "a_bits": 3, "quantizer": "n2uq"}),
    Row("binary_w1a1", "Binary W1A1 (RSign)", "npr", {"w_bits": 1, "a_bits": 1, "quantizer": "binary"}),
    Row("ours_w3a3", "Ours W3A3", "npr", {"w_bits": 3, "a_bits": 3, "quantizer": "slr-n2uq", "cqb": True}),
    # CQB α study (W2A2 ours; α₀ = 0.9 learnable is ours_w2a2 itself)
    Row("cqb_a050", "Ours W2A2, α₀ = 0.5 (learned)", "npr",
        {"w_bits": 2, "a_bits": 2, "quantizer": "slr-n2uq", "cqb": True, "cqb_alpha_init": 0.5}),
    Row("cqb_a090_fixed", "Ours W2A2, α = 0.9 fixed", "npr",
        {"w_bits": 2, "a_bits": 2, "quantizer": "slr-n2uq", "cqb": True}, freeze_alpha=True),
    # the speed/accuracy trade (docs/deploy.md, "Speed"): uniform LSQ on NPR, no float CQB beside the convs, so the
    # integer graph is a plain QLinearConv chain (the W4A4 graph's speed at W2A2's storage)
    Row("lsq_w2a2_deploy", "Deployable W2A2 (LSQ, NPR, no CQB)", "npr", {"w_bits": 2, "a_bits": 2, "quantizer": "lsq"}),
]}
FIG9 = ["n2uq_w2a2_rgb", "n2uq_w2a2_npr", "n2uq_w2a2_npr_cqb", "ours_w2a2"]
TABLE2 = ["fp_rgb", "fp_npr", "minmax_w4a4", "lsq_w4a4", "n2uq_w3a3", "binary_w1a1", "ours_w3a3", "ours_w2a2"]
CQB_STUDY = ["ours_w2a2", "cqb_a050", "cqb_a090_fixed"]
DEPLOYABLE = ["ours_w2a2", "lsq_w2a2_deploy"]


@dataclass
class StudyConfig:
    """Settings shared by every row (QAT: same epochs/seed/lr/schedule/calibration for all)."""

    data: str | Path
    work: str | Path = "runs/ablation"
    out: str | Path = "docs/results"
    size: int = 64
    epochs: int = 3  # QAT epochs
    fp_epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-4  # QAT lr (quantizer parameters: lr × quant_lr_scale)
    fp_lr: float = 2e-4
    quant_lr_scale: float = 0.1  # N2UQ recipe, for every row
    lr_schedule: str = "linear"  # N2UQ's linear decay, for every QAT row
    teacher_kd: bool = False
    kd_weight: float = 0.5
    calib: int = 256
    grad_clip: float | None = 10.0  # per-tensor gradient-norm cap, every QAT row (keeps W1A1 finite)
    seed: int = 0
    threads: int | None = None
    quick: bool = False
    cqb_study: bool = False
    deployable_w2a2: bool = False  # add the "deployable W2A2" row (LSQ, NPR, no CQB) next to ours W2A2
    fp_npr: str | Path | None = None
    fp_rgb: str | Path | None = None
    max_steps: int | None = None  # QAT steps per epoch cap
    fp_max_steps: int | None = None
    eval_per_set: int | None = None  # cap test images per set (balanced)
    hist_images: int = 64
    quiet: bool = True
    rows: list[str] = field(default_factory=list)  # filled by run_study

    def apply_quick(self) -> None:
        """--quick: every row on a few steps and images (a smoke run of the whole pipeline, not a result)."""
        self.epochs, self.fp_epochs = 1, 1
        self.max_steps, self.fp_max_steps = 2, 3
        self.calib, self.batch_size = 8, 8
        self.size = min(self.size, 32)
        self.eval_per_set = min(self.eval_per_set or 16, 16)
        self.hist_images = 8


def row_keys(cfg: StudyConfig) -> list[str]:
    keys = list(dict.fromkeys(["fp_rgb", "fp_npr"] + FIG9 + TABLE2 + (CQB_STUDY if cfg.cqb_study else [])
                              + (DEPLOYABLE if cfg.deployable_w2a2 else [])))
    return keys


# ----------------------------------------------------------------------------- helpers


def _log(msg: str) -> None:
    print(msg, flush=True)


def _file_sig(p: Path) -> dict:
    st = p.stat()
    return {"path": str(p.resolve()), "bytes": st.st_size, "mtime": int(st.st_mtime)}


def _sig_hash(sig: dict) -> str:
    return hashlib.sha256(json.dumps(sig, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_crop(data: Path, size: int) -> int:
    """The requested size, capped by the training images' side (NPR never up-samples), even."""
    for p, _ in labelled_images(split_dir(data, "train"))[:8]:
        try:
            h, w = load_rgb(p).shape[:2]
            return int(min(size, h - h % 2, w - w % 2))
        except BadInput:
            continue
    return int(size - size % 2)


def _seen_family(data: Path, set_names: list[str]) -> str | None:
    """The generator of DATA/train (FaceSynth: summary.json's "seen"), if it is one of the test sets."""
    try:
        seen = json.loads((data / "summary.json").read_text()).get("seen")
    except (OSError, ValueError):
        seen = None
    if seen in set_names:
        return seen
    return None


def _metric_subset(m: dict) -> dict:
    keep = ("acc", "ap", "auc", "eer", "real_acc", "fake_acc", "n", "acc_at_threshold")
    return {k: m[k] for k in keep if k in m}


def _alpha_stats(model: nn.Module) -> dict | None:
    alphas = [float(m.cqb.alpha.detach()) for _, m in model.named_modules() if getattr(m, "cqb", None) is not None]
    if not alphas:
        return None
    return {"n": len(alphas), "mean": float(np.mean(alphas)), "min": float(np.min(alphas)),
            "max": float(np.max(alphas))}


# ----------------------------------------------------------------------------- stages


def _train_fp(row: Row, cfg: StudyConfig, crop: int, run_dir: Path, resume: bool) -> None:
    torch.manual_seed(cfg.seed)
    model = create_model(ARCH, input=row.input)
    tcfg = TrainConfig(epochs=cfg.fp_epochs, batch_size=cfg.batch_size, lr=cfg.fp_lr, seed=cfg.seed, crop=crop,
                       max_steps_per_epoch=cfg.fp_max_steps, threads=cfg.threads, quiet=cfg.quiet)
    fit(model, cfg.data, run_dir, tcfg, resume=resume, provenance={"study": "qmdd-ablation", "row": row.key})


def _train_quant(row: Row, cfg: StudyConfig, crop: int, run_dir: Path, fp_path: Path, resume: bool) -> None:
    fp = artifact.load(fp_path)
    run_quantization(fp, cfg.data, run_dir, QuantConfig(**row.quant), epochs=cfg.epochs, calib=cfg.calib,
                     batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, teacher_kd=cfg.teacher_kd,
                     kd_weight=cfg.kd_weight, size=crop, lr_schedule=cfg.lr_schedule, max_steps=cfg.max_steps,
                     threads=cfg.threads, quiet=cfg.quiet, quant_lr_scale=cfg.quant_lr_scale,
                     freeze_cqb_alpha=row.freeze_alpha, resume=resume, grad_clip=cfg.grad_clip,
                     provenance={"study": "qmdd-ablation", "row": row.key, "source_model": str(fp_path)})


def _evaluate_row(model: nn.Module, sets: list, crop: int, cfg: StudyConfig) -> dict:
    res = evaluate_sets(model, sets, batch_size=64, threshold=float(getattr(model, "threshold", 0.5)),
                        quiet=cfg.quiet)
    return {
        "test": {name: _metric_subset(m) for name, m in res["sets"].items()},
        "mean": _metric_subset(res["mean"]),
        "cost": {"224": model_cost(model, 224), str(crop): model_cost(model, crop)},
        "threshold": float(getattr(model, "threshold", 0.5)),
        "cqb_alpha": _alpha_stats(model),
    }


def run_row(row: Row, cfg: StudyConfig, crop: int, sets: list, fp_paths: dict[str, Path],
            fp_sigs: dict[str, str]) -> dict:
    """Train (or reuse) and evaluate one row; returns its row.json content."""
    run_dir = Path(cfg.work) / row.key
    train_sig = {"row": asdict(row), "crop": crop, "seed": cfg.seed, "batch_size": cfg.batch_size,
                 "data": str(Path(cfg.data).resolve())}
    if row.quant is None:
        train_sig.update(fp_epochs=cfg.fp_epochs, fp_lr=cfg.fp_lr, fp_max_steps=cfg.fp_max_steps)
    else:
        train_sig.update(epochs=cfg.epochs, lr=cfg.lr, quant_lr_scale=cfg.quant_lr_scale,
                         lr_schedule=cfg.lr_schedule, teacher_kd=cfg.teacher_kd,
                         kd_weight=cfg.kd_weight if cfg.teacher_kd else None, calib=cfg.calib,
                         max_steps=cfg.max_steps, grad_clip=cfg.grad_clip, source=fp_sigs[row.fp_key])
    tsig = _sig_hash(train_sig)
    eval_sig = _sig_hash({"train": tsig, "sets": [(s.name, len(s.items)) for s in sets]})
    row_json = run_dir / "row.json"
    if row_json.exists():
        try:
            prev = json.loads(row_json.read_text())
            if prev.get("eval_sig") == eval_sig and (run_dir / "model.fakelite").exists():
                prev["cached"] = True
                return prev
        except ValueError:
            pass
    run_dir.mkdir(parents=True, exist_ok=True)
    sig_file = run_dir / "train_sig.json"
    same_training = sig_file.exists() and json.loads(sig_file.read_text()).get("sig") == tsig
    t0 = time.time()
    trained_now = False
    if not (same_training and (run_dir / "model.fakelite").exists() and (run_dir / "metrics.json").exists()):
        for stale in ("model.fakelite", "metrics.json"):
            (run_dir / stale).unlink(missing_ok=True)
        if not same_training:
            (run_dir / "checkpoint.safetensors").unlink(missing_ok=True)
        sig_file.write_text(json.dumps({"sig": tsig, "settings": train_sig}, indent=2, default=str))
        if row.quant is None:
            _train_fp(row, cfg, crop, run_dir, resume=same_training)
        else:
            _train_quant(row, cfg, crop, run_dir, fp_paths[row.fp_key], resume=same_training)
        trained_now = True
    train_s = time.time() - t0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    model = artifact.load(run_dir / "model.fakelite")
    t1 = time.time()
    ev = _evaluate_row(model, sets, crop, cfg)
    out = {"key": row.key, "label": row.label, "input": row.input, "quant": row.quant,
           "freeze_alpha": row.freeze_alpha, "train_sig": tsig, "eval_sig": eval_sig,
           "val": _metric_subset(metrics.get("val", {})), "best_epoch": metrics.get("best_epoch"),
           "train_wall_seconds": float(metrics.get("wall_seconds", train_s)),
           "epoch_seconds": [float(h["seconds"]) for h in metrics.get("history", [])],
           "grad_guard": metrics.get("grad_guard"), "eval_seconds": time.time() - t1, "trained_now": trained_now,
           **ev}
    row_json.write_text(json.dumps(out, indent=2, default=str))
    out["cached"] = False
    return out


# ----------------------------------------------------------------------------- driver


def resolve_fp(cfg: StudyConfig, key: str, given: str | Path | None) -> tuple[Path, str] | None:
    """A given FP model (--fp-npr/--fp-rgb): validated; returns (path, signature)."""
    if given is None:
        return None
    p = Path(given)
    try:
        m = artifact.load(p)
    except (artifact.ArtifactError, FileNotFoundError, OSError) as e:
        raise ValueError(f"{p}: cannot load ({e})") from e
    if getattr(m, "fakelite_quant", None):
        raise ValueError(f"{p}: already quantized; --{key.replace('_', '-')} needs a full-precision model")
    want_npr = key == "fp_npr"
    if bool(m.preprocess.npr) != want_npr:
        raise ValueError(f"{p}: input is {'npr' if m.preprocess.npr else 'rgb'}, --{key.replace('_', '-')} needs "
                         f"{'npr' if want_npr else 'rgb'}")
    return p, _sig_hash(_file_sig(p))


def run_study(cfg: StudyConfig, command: str = "", progress: Callable[[str], None] = _log) -> dict:
    """Train/evaluate every row (reusing cached ones), write OUT/qmdd-ablation.{md,json} + PNGs; return the JSON."""
    t_start = time.time()
    if cfg.quick:
        cfg.apply_quick()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data, work, out = Path(cfg.data), Path(cfg.work), Path(cfg.out)
    n_train, n_val = len(split_items(data, "train")), len(split_items(data, "val"))
    sets = discover_sets(data / "test")
    if cfg.eval_per_set:
        sets = subsample(sets, cfg.eval_per_set, cfg.seed)
    set_names = [s.name for s in sets]
    seen = _seen_family(data, set_names)
    crop = data_crop(data, cfg.size)
    keys = row_keys(cfg)
    cfg.rows = keys
    given = {k: resolve_fp(cfg, k, g) for k, g in (("fp_npr", cfg.fp_npr), ("fp_rgb", cfg.fp_rgb))}
    work.mkdir(parents=True, exist_ok=True)
    fp_paths: dict[str, Path] = {}
    fp_sigs: dict[str, str] = {}
    rows: dict[str, dict] = {}
    cached: list[str] = []
    progress(f"QMDD study: {len(keys)} rows on {data} at {crop}², QAT {cfg.epochs} epochs, FP {cfg.fp_epochs} epochs; "
             f"work dir {work}")
    for i, key in enumerate(keys, 1):
        row = ROWS[key]
        t0 = time.time()
        if row.quant is None and given.get(key):
            p, sig = given[key]
            fp_paths[key], fp_sigs[key] = p, sig
            progress(f"[{i}/{len(keys)}] {row.label}: using {p}")
            r = _given_fp_row(row, p, sig, sets, crop, cfg)
        else:
            what = "FP training" if row.quant is None else "QAT " + _quant_desc(row)
            progress(f"[{i}/{len(keys)}] {row.label}: {what} ...")
            r = run_row(row, cfg, crop, sets, fp_paths, fp_sigs)
            if row.quant is None:
                fp_paths[key] = work / key / "model.fakelite"
                fp_sigs[key] = r["train_sig"]
        rows[key] = r
        if r.get("cached"):
            cached.append(key)
        progress(f"[{i}/{len(keys)}] {row.label}: {'cached' if r.get('cached') else f'{time.time() - t0:.0f} s'}; "
                 f"val acc {pct(r['val'].get('acc'))}; test mean acc {pct(r['mean']['acc'])} AP {pct(r['mean']['ap'])}"
                 + (f"; seen AP {pct(r['test'][seen]['ap'])}" if seen else ""))

    # Fig. 7: activations of the FP NPR model on validation images (SLR offsets from ours W2A2)
    activations: dict = {}
    samples: dict = {}
    try:
        fpm = artifact.load(fp_paths["fp_npr"])
        fpm.preprocess = replace(fpm.preprocess, crop=crop)
        ours = artifact.load(work / "ours_w2a2" / "model.fakelite") if (work / "ours_w2a2" / "model.fakelite").exists() else None
        b = calibration_batches(data, fpm.preprocess, n=cfg.hist_images, batch_size=cfg.hist_images, seed=cfg.seed,
                                split="val")
        if b:
            activations, samples = activation_study(fpm, ours, torch.cat([x for x, _ in b]), layers=HIST_LAYERS)
    except Exception as e:  # noqa: BLE001 - the histograms are a diagnostic; never lose the study for them
        progress(f"activation histograms skipped: {e}")

    result: dict[str, Any] = {
        "study": "qmdd-ablation", "command": command or "fakelite ablation --data " + str(data),
        "data_name": data.name, "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "size": crop, "sets": set_names, "seen": seen, "n_train": n_train, "n_val": n_val,
        "n_test": {s.name: len(s.items) for s in sets}, "row_order": keys, "rows": rows,
        "fig9": FIG9, "table2": TABLE2, "cqb_study": CQB_STUDY if cfg.cqb_study else None,
        "deployable_w2a2": DEPLOYABLE if cfg.deployable_w2a2 else None,
        "activations": activations, "cached_rows": cached, "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} / {platform.processor() or platform.system()}, "
                   f"{__import__('os').cpu_count()} CPU(s)",
    }
    result["targets"] = targets(result)
    out.mkdir(parents=True, exist_ok=True)
    plot_fig9(result, out / "qmdd-ablation-fig9.png")
    plot_table2(result, out / "qmdd-ablation-table2.png")
    if samples:
        plot_activations(activations, samples, out / "qmdd-activations.png")
    result["wall_seconds"] = time.time() - t_start
    (out / "qmdd-ablation.md").write_text(to_markdown(result, ARCH))
    (out / "qmdd-ablation.json").write_text(json.dumps(result, indent=2, default=str))
    progress(f"wrote {out / 'qmdd-ablation.md'}, {out / 'qmdd-ablation.json'} and PNGs in "
             f"{result['wall_seconds'] / 60:.1f} min")
    return result


def _quant_desc(row: Row) -> str:
    q = row.quant or {}
    return (f"W{q['w_bits']}A{q['a_bits']} {q['quantizer']}{' +CQB' if q.get('cqb') else ''} "
            f"({row.input.upper()})")


def _given_fp_row(row: Row, path: Path, sig: str, sets: list, crop: int, cfg: StudyConfig) -> dict:
    """Evaluate a user-given FP model (cached in WORK/<row>/row.json by the file's signature)."""
    run_dir = Path(cfg.work) / row.key
    eval_sig = _sig_hash({"given": sig, "crop": crop, "sets": [(s.name, len(s.items)) for s in sets]})
    rj = run_dir / "row.json"
    if rj.exists():
        try:
            prev = json.loads(rj.read_text())
            if prev.get("eval_sig") == eval_sig:
                prev["cached"] = True
                return prev
        except ValueError:
            pass
    model = artifact.load(path)
    model.preprocess = replace(model.preprocess, crop=crop)
    t1 = time.time()
    ev = _evaluate_row(model, sets, crop, cfg)
    val = (model.header.get("metrics") or {}).get("val", {}) if hasattr(model, "header") else {}
    r = {"key": row.key, "label": row.label, "input": row.input, "quant": None, "freeze_alpha": False,
         "train_sig": sig, "eval_sig": eval_sig, "given": str(path), "val": _metric_subset(val or {}),
         "best_epoch": None, "train_wall_seconds": 0.0, "epoch_seconds": [], "eval_seconds": time.time() - t1,
         "trained_now": False, **ev}
    run_dir.mkdir(parents=True, exist_ok=True)
    rj.write_text(json.dumps(r, indent=2, default=str))
    r["cached"] = False
    return r
