"""QMDD's study on one benchmark in one run: the component ablation (Fig. 9), the quantizer comparison of
Table 2's lower half, the efficiency of Table 4, the post-activation histograms of Fig. 7, and (optionally)
CQB's α initialisation.

Every row is an `npr_resnet23` (QMDD's ResNet-23): two full-precision models (RGB and NPR input) trained here
(or given), and QAT rows that start from the FP model with the same input, all with the same epochs, seed, lr,
schedule and calibration. A row's outputs are cached under WORK/<row>/ (model.fakelite, metrics.json,
row.json); a re-run with the same settings reuses finished rows and resumes an interrupted training from its last
finished epoch. Results: OUT/qmdd-ablation.{md,json} and PNG charts.

    from fakelite.eval.ablation import StudyConfig, run_study
    result = run_study(StudyConfig(data="runs/facesynth64", work="runs/ablation", out="docs/results"))
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

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
# post-ReLU inputs of these convs are histogrammed (Fig. 7)
HIST_LAYERS = ["layer1.0.conv2", "layer1.2.conv3", "layer2.0.conv2", "layer2.3.conv3"]


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


def _data_crop(data: Path, size: int) -> int:
    """The requested size, capped by the training images' side (NPR never up-samples), even."""
    from fakelite.data.folders import labelled_images, split_dir
    from fakelite.data.io import BadInput, load_rgb

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


def _slr_offsets(model: nn.Module) -> dict[str, float]:
    out = {}
    for name, m in model.named_modules():
        iq = getattr(m, "input_quantizer", None)
        if iq is not None and hasattr(iq, "offset") and callable(iq.offset) and hasattr(iq, "tau"):
            out[name] = float(iq.offset().detach())
    return out


# ----------------------------------------------------------------------------- stages


def _train_fp(row: Row, cfg: StudyConfig, crop: int, run_dir: Path, resume: bool) -> None:
    from fakelite.models import create_model
    from fakelite.train.loop import TrainConfig, fit

    torch.manual_seed(cfg.seed)
    model = create_model(ARCH, input=row.input)
    tcfg = TrainConfig(epochs=cfg.fp_epochs, batch_size=cfg.batch_size, lr=cfg.fp_lr, seed=cfg.seed, crop=crop,
                       max_steps_per_epoch=cfg.fp_max_steps, threads=cfg.threads, quiet=cfg.quiet)
    fit(model, cfg.data, run_dir, tcfg, resume=resume, provenance={"study": "qmdd-ablation", "row": row.key})


def _train_quant(row: Row, cfg: StudyConfig, crop: int, run_dir: Path, fp_path: Path, resume: bool) -> None:
    from fakelite import artifact
    from fakelite.pipelines.qat import run_quantization
    from fakelite.quant import QuantConfig

    fp = artifact.load(fp_path)
    run_quantization(fp, cfg.data, run_dir, QuantConfig(**row.quant), epochs=cfg.epochs, calib=cfg.calib,
                     batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, teacher_kd=cfg.teacher_kd,
                     kd_weight=cfg.kd_weight, size=crop, lr_schedule=cfg.lr_schedule, max_steps=cfg.max_steps,
                     threads=cfg.threads, quiet=cfg.quiet, quant_lr_scale=cfg.quant_lr_scale,
                     freeze_cqb_alpha=row.freeze_alpha, resume=resume, grad_clip=cfg.grad_clip,
                     provenance={"study": "qmdd-ablation", "row": row.key, "source_model": str(fp_path)})


def _evaluate_row(model: nn.Module, sets: list, crop: int, cfg: StudyConfig) -> dict:
    from fakelite.eval.evaluate import evaluate_sets
    from fakelite.quant.cost import model_cost

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
    from fakelite import artifact

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


# ----------------------------------------------------------------------------- activations (Fig. 7)


def _code_shares(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    codes = np.searchsorted(edges, v, side="right")
    return np.bincount(codes, minlength=len(edges) + 1) / max(1, len(v))


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def activation_study(fp_model: nn.Module, ours: nn.Module | None, images: torch.Tensor, a_bits: int = 2,
                     layers: list[str] | None = None) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """Post-ReLU inputs of a few convs of the FP NPR model, raw and as ln(x + off) (off: the trained SLR offset of
    that layer in `ours`, else 1 = ε at τ = 0). For each, the share of values per code of a `a_bits` grid with
    equal intervals over [min, P99.9] (N2UQ's data-driven init) and its entropy (max = a_bits): how many of the
    codes the activations really use — QMDD's argument for SLR."""
    layers = layers or HIST_LAYERS
    offs = _slr_offsets(ours) if ours is not None else {}
    mods = dict(fp_model.named_modules())
    grabbed: dict[str, torch.Tensor] = {}
    hooks = []
    for n in layers:
        if n in mods:
            hooks.append(mods[n].register_forward_pre_hook(
                lambda _m, inp, n=n: grabbed.__setitem__(n, inp[0].detach().clone())))
    fp_model.eval()
    try:
        with torch.no_grad():
            fp_model(images)
    finally:
        for h in hooks:
            h.remove()
    n_levels = 2 ** a_bits
    summary: dict[str, Any] = {}
    samples: dict[str, dict[str, np.ndarray]] = {}
    for n in layers:
        if n not in grabbed:
            continue
        x = grabbed[n].flatten().numpy().astype(np.float64)
        off = float(offs.get(n, min(float(np.abs(x).max()), 1.0)))  # eq. 10 with ε = 1, τ = 0
        lx = np.log(np.maximum(x + off, 1e-6))
        row: dict[str, Any] = {"offset": off, "offset_from": "trained SLR" if n in offs else "ε = 1, τ = 0",
                               "frac_zero": float(np.mean(x <= 0)), "max": float(x.max()),
                               "frac_below_0.1max": float(np.mean(x < 0.1 * x.max())) if x.max() > 0 else 1.0}
        for kind, v in (("raw", x), ("log", lx)):
            lo, hi = float(v.min()), float(np.percentile(v, 99.9))
            edges = lo + (hi - lo) * (np.arange(1, n_levels) / (n_levels - 1) - 0.5 / (n_levels - 1))
            shares = _code_shares(v, edges)
            row[kind] = {"edges": edges.tolist(), "code_shares": shares.tolist(), "entropy_bits": _entropy_bits(shares),
                         "range": [lo, hi]}
        summary[n] = row
        rng = np.random.default_rng(0)
        pick = rng.permutation(len(x))[:200_000]
        samples[n] = {"raw": x[pick], "log": lx[pick]}
    return summary, samples


def plot_activations(summary: dict, samples: dict, out_png: Path, a_bits: int = 2) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(samples)
    fig, axes = plt.subplots(2, max(1, len(names)), figsize=(3.6 * max(1, len(names)), 5.6), squeeze=False)
    for j, n in enumerate(names):
        for i, kind in enumerate(("raw", "log")):
            ax = axes[i][j]
            v = samples[n][kind]
            ax.hist(v, bins=80, color="#4477aa" if kind == "raw" else "#aa3377", alpha=0.85)
            ax.set_yscale("log")
            for e in summary[n][kind]["edges"]:
                ax.axvline(e, color="k", lw=0.8, ls="--")
            shares = summary[n][kind]["code_shares"]
            h = summary[n][kind]["entropy_bits"]
            xlabel = "activation x" if kind == "raw" else f"ln(x + {summary[n]['offset']:.2f})"
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_title(f"{n}\n{a_bits}-bit codes " + "/".join(f"{100 * s:.0f}" for s in shares)
                         + f" %  H={h:.2f} b", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("count (raw, log scale)", fontsize=8)
    axes[1][0].set_ylabel("count (ln(x+off), log scale)", fontsize=8)
    fig.suptitle("Post-ReLU activations of FP NPR-ResNet-23 (Fig. 7): raw vs shifted log; dashed = "
                 f"{a_bits}-bit thresholds with equal intervals over [min, P99.9]", fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


# ----------------------------------------------------------------------------- charts


def _bar_groups(ax, labels: list[str], series: dict[str, list[float]], ylabel: str, colors: list[str]) -> None:
    n = len(series)
    width = 0.8 / max(1, n)
    x = np.arange(len(labels))
    for i, (name, vals) in enumerate(series.items()):
        bars = ax.bar(x + (i - (n - 1) / 2) * width, [100 * v for v in vals], width, label=name,
                      color=colors[i % len(colors)])
        for b, v in zip(bars, vals, strict=False):
            ax.text(b.get_x() + b.get_width() / 2, 100 * v + 0.5, f"{100 * v:.0f}", ha="center", va="bottom",
                    fontsize=6)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel(ylabel)
    lo = min([100 * v for vals in series.values() for v in vals] + [50])
    ax.set_ylim(max(0, math.floor(lo / 10) * 10 - 5), 105)
    ax.grid(axis="y", alpha=0.3)


FIG9_COLORS = ["#4c72b0", "#dd8899", "#8c564b", "#7b3fa0"]
T2_COLORS = ["#999999", "#555555", "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#cc79a7", "#7b3fa0", "#d55e00"]


def plot_fig9(result: dict, out_png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, sets = result["rows"], result["sets"]
    labels = [s + (" (seen)" if s == result.get("seen") else "") for s in sets] + ["mean"]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(labels) + 2), 7.5))
    for ax, metric, name in ((axes[0], "acc", "Acc (%)"), (axes[1], "ap", "AP (%)")):
        series = {rows[k]["label"]: [rows[k]["test"][s][metric] or 0 for s in sets] + [rows[k]["mean"][metric] or 0]
                  for k in FIG9 if k in rows}
        _bar_groups(ax, labels, series, name, FIG9_COLORS)
    axes[0].legend(fontsize=8, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(f"QMDD Fig. 9 ablation, W2A2 npr_resnet23 on {result['data_name']} ({result['size']}²)", y=0.995)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_table2(result: dict, out_png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    keys = [k for k in TABLE2 if k in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(keys))
    acc = [100 * (rows[k]["mean"]["acc"] or 0) for k in keys]
    ap = [100 * (rows[k]["mean"]["ap"] or 0) for k in keys]
    ax.bar(x - 0.2, acc, 0.4, label="mean Acc", color="#4c72b0")
    ax.bar(x + 0.2, ap, 0.4, label="mean AP", color="#dd8452")
    for i in range(len(keys)):
        ax.text(x[i] - 0.2, acc[i] + 0.5, f"{acc[i]:.0f}", ha="center", fontsize=7)
        ax.text(x[i] + 0.2, ap[i] + 0.5, f"{ap[i]:.0f}", ha="center", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels([rows[k]["label"].replace(" (", "\n(") for k in keys], fontsize=7, rotation=20, ha="right")
    ax.set_ylim(max(0, min(acc + ap + [50]) - 10), 105)
    ax.set_ylabel("% (mean over test sets)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Table 2 (lower half): mean Acc / AP", fontsize=10)
    for i, k in enumerate(keys):
        c = rows[k]["cost"]["224"]
        ax2.scatter(c["storage_bytes"] / 1e6, 100 * (rows[k]["mean"]["acc"] or 0), color=T2_COLORS[i % len(T2_COLORS)],
                    s=45, zorder=3, marker="os^Dv<>p*"[i % 9], label=rows[k]["label"].split(" (")[0])
    ax2.legend(fontsize=7, loc="best")
    ax2.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    mbs = [rows[k]["cost"]["224"]["storage_bytes"] / 1e6 for k in keys]
    ax2.set_xlim(min(mbs) / 1.4, max(mbs) * 1.4)
    ax2.set_xticks([t for t in (0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5, 10, 20, 50, 100)
                    if min(mbs) / 1.4 <= t <= max(mbs) * 1.4])
    ax2.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax2.xaxis.set_minor_formatter(NullFormatter())
    ax2.set_xlabel("storage (MB, packed, log scale)")
    ax2.set_ylabel("mean Acc (%)")
    ax2.grid(alpha=0.3)
    ax2.set_title("Accuracy vs storage (Table 4)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


# ----------------------------------------------------------------------------- report


def _p(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _table(rows: dict, keys: list[str], sets: list[str], seen: str | None) -> str:
    head = "| Row | " + " | ".join(f"{s}{' (seen)' if s == seen else ''} Acc | AP" for s in sets) + " | mean Acc | AP |"
    sep = "|---|" + "---:|---:|" * (len(sets) + 1)
    lines = [head, sep]
    for k in keys:
        if k not in rows:
            continue
        r = rows[k]
        cells = [f"{_p(r['test'][s]['acc'])} | {_p(r['test'][s]['ap'])}" for s in sets]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | **{_p(r['mean']['acc'])}** | **{_p(r['mean']['ap'])}** |")
    return "\n".join(lines)


def _cost_table(rows: dict, keys: list[str], size: int) -> str:
    s = str(size)
    lines = [f"| Row | bits | OPs @224² (M) | OPs ratio | OPs @{size}² (M) | storage (kB, packed) | storage ratio | "
             "QMDD-formula storage (kB) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for k in keys:
        if k not in rows:
            continue
        c, ct = rows[k]["cost"]["224"], rows[k]["cost"][s]
        lines.append(f"| {rows[k]['label']} | {', '.join(c['bits'])} | {c['ops'] / 1e6:.1f} | {c['ops_ratio']:.2f}× | "
                     f"{ct['ops'] / 1e6:.2f} | {c['storage_bytes'] / 1e3:.1f} | {c['storage_ratio']:.2f}× | "
                     f"{c['paper_storage_bytes'] / 1e3:.1f} |")
    return "\n".join(lines)


def targets(result: dict) -> dict[str, Any]:
    """The brief's targets, checked on the measured numbers (reported, never asserted)."""
    rows, seen = result["rows"], result.get("seen")
    out: dict[str, Any] = {}
    ours, fpn = rows.get("ours_w2a2"), rows.get("fp_npr")
    if ours and fpn and seen:
        d = ours["test"][seen]["ap"] - fpn["test"][seen]["ap"]
        out["seen_ap_within_1pt_of_fp_npr"] = {"ours": ours["test"][seen]["ap"], "fp_npr": fpn["test"][seen]["ap"],
                                               "delta_pts": 100 * d, "met": bool(d >= -0.01)}
    for other in ("n2uq_w2a2_rgb", "lsq_w4a4"):
        if ours and other in rows:
            out[f"mean_acc_ge_{other}"] = {"ours": ours["mean"]["acc"], other: rows[other]["mean"]["acc"],
                                           "met": bool(ours["mean"]["acc"] >= rows[other]["mean"]["acc"])}
    if ours:
        r = ours["cost"]["224"]["storage_ratio"]
        out["storage_12x_below_fp32"] = {"ratio": r, "met": bool(r >= 12.0)}
        out["qat_minutes_le_20"] = {"minutes": ours["train_wall_seconds"] / 60,
                                    "met": bool(ours["train_wall_seconds"] <= 20 * 60)}
    return out


def _why_notes(result: dict) -> list[str]:
    """One line per Fig. 9 step: its gain, and where to look when it does not help."""
    rows = result["rows"]
    notes = []
    names = {"n2uq_w2a2_npr": "NPR", "n2uq_w2a2_npr_cqb": "CQB", "ours_w2a2": "SLR"}
    for prev, cur in zip(FIG9, FIG9[1:], strict=False):
        if prev not in rows or cur not in rows:
            continue
        da = 100 * (rows[cur]["mean"]["acc"] - rows[prev]["mean"]["acc"])
        dp = 100 * ((rows[cur]["mean"]["ap"] or 0) - (rows[prev]["mean"]["ap"] or 0))
        line = f"- **+{names[cur]}**: mean Acc {da:+.1f} pts, mean AP {dp:+.1f} pts"
        if 0 < da and 0 < dp:
            pass
        elif da > 0 or dp > 0:
            line += " — mixed (one metric up, one down)."
        else:
            if cur == "ours_w2a2":
                act = result.get("activations", {})
                hs = [(n, v["raw"]["entropy_bits"], v["log"]["entropy_bits"]) for n, v in act.items()]
                if hs:
                    z = np.mean([v["frac_zero"] for v in act.values()])
                    gain = float(np.mean([b - a for _, a, b in hs]))
                    mx = float(np.mean([v["max"] for v in act.values()]))
                    off = float(np.mean([v["offset"] for v in act.values()]))
                    line += (" — did not help here. Code use of a 2-bit grid (entropy, max 2 b) raw → log: "
                             + ", ".join(f"{n} {a:.2f}→{b:.2f}" for n, a, b in hs)
                             + f" (mean gain {gain:+.2f} b; qmdd-activations.png). {100 * z:.0f} % of these "
                             "activations are exact zeros (ReLU), which no monotone map can spread"
                             + (f"; with max|X| ≈ {mx:.2f} and off ≈ {off:.2f} the slope of ln(x + off) changes "
                                f"only {(mx + off) / off:.1f}× over the range, so the log redistributes little"
                                if (mx + off) / off < 3 else "")
                             + ".")
            elif cur == "n2uq_w2a2_npr_cqb":
                a = rows[cur].get("cqb_alpha")
                if a:
                    line += (f" — did not help here. Learned α: mean {a['mean']:.3f} (min {a['min']:.3f}, max "
                             f"{a['max']:.3f}); α near its init means the FP shortcut's share barely moved in "
                             f"{result['config']['epochs']} QAT epochs.")
            else:
                line += " — did not help here."
        notes.append(line)
    return notes


def to_markdown(result: dict) -> str:
    rows, sets, seen, c = result["rows"], result["sets"], result.get("seen"), result["config"]
    size = result["size"]
    lines = [
        "# QMDD study on " + result["data_name"],
        "",
        f"Reproduces QMDD (IJCAI 2025) §4.6 Fig. 9, Table 2 (lower half), Table 4 and Fig. 7 with `{ARCH}` on "
        f"{result['data_name']} at {size}×{size}. Generated by:",
        "",
        "```bash",
        result["command"],
        "```",
        "",
        f"- Data: `{c['data']}` — train {result['n_train']} / val {result['n_val']} images; test sets: "
        + ", ".join(f"{s} ({result['n_test'][s]})" for s in sets) + (f"; seen generator: **{seen}**." if seen else "."),
        f"- FP models: {ARCH} with RGB / NPR input, {c['fp_epochs']} epochs, Adam lr {c['fp_lr']}, batch "
        f"{c['batch_size']}, seed {c['seed']}" + (" (given: " + ", ".join(
            f"{k}={v}" for k, v in (("--fp-npr", c.get("fp_npr")), ("--fp-rgb", c.get("fp_rgb"))) if v) + ")"
            if c.get("fp_npr") or c.get("fp_rgb") else "") + ".",
        f"- QAT (every row the same): from the FP model with the same input; {c['epochs']} epochs, Adam lr {c['lr']} "
        f"with {c['lr_schedule']} decay, quantizer parameters at lr × {c['quant_lr_scale']} (N2UQ recipe), "
        f"calibration/init on {c['calib']} training images, "
        + (f"logit KD from the FP teacher (weight {c['kd_weight']})" if c["teacher_kd"] else "no KD (BCE only)")
        + f", seed {c['seed']}; stem conv and classifier at 8 bits, BN in FP; every parameter's gradient capped at "
        f"L2 norm {c['grad_clip']} per tensor, non-finite gradients zeroed (W1A1 needs it to stay finite; how often "
        "it acted per row: 'guard' in the wall-time table). Best epoch on val.",
        "- Acc at threshold 0.5 (the field's convention), AP threshold-free; both in %. Mean = over the test sets.",
        f"- Total wall time: **{result['wall_seconds'] / 60:.1f} min** on {result['machine']}"
        f" (torch threads: {result['threads']}); rows reused from the cache: {result['cached_rows'] or 'none'}.",
    ]
    if c.get("quick"):
        lines += ["", "> **--quick smoke run**: a few steps on a few images — the numbers mean nothing."]
    lines += ["", "## Fig. 9 — component ablation (W2A2)", "",
              "![Fig. 9](qmdd-ablation-fig9.png)", "", _table(rows, FIG9, sets, seen), ""]
    lines += _why_notes(result)
    lines += ["", "## Table 2 (lower half) — quantizers", "", "![Table 2](qmdd-ablation-table2.png)", "",
              _table(rows, TABLE2, sets, seen), "",
              "MinMax/LSQ/N2UQ/binary quantize the NPR detector (NPR input), as \"ours\" does. Binary = W1A1 with "
              "ReActNet's RSign (learnable per-channel thresholds) and sign(W)·mean|W| weights (no RPReLU).", ""]
    lines += ["## Table 4 — efficiency", "", _cost_table(rows, TABLE2 + [k for k in FIG9 if k not in TABLE2], size), "",
              "OPs = FLOPs of FP layers + BOPs/64 (QMDD); ratio = FP MACs / OPs. Storage = the packed tensors the "
              ".fakelite stores (codes, scales, BN statistics); ratio vs the FP32 state dict.", ""]
    tg = result.get("targets", {})
    if tg:
        lines += ["## Targets (measured, not asserted)", ""]
        for k, v in tg.items():
            detail = ", ".join(f"{a}={b:.4g}" if isinstance(b, float) else f"{a}={b}" for a, b in v.items() if a != "met")
            lines.append(f"- {'✔' if v['met'] else '✘'} {k}: {detail}")
        lines.append("")
    act = result.get("activations")
    if act:
        lines += ["## Fig. 7 — post-ReLU activations, raw vs ln(x + off)", "", "![Fig. 7](qmdd-activations.png)", "",
                  "Inputs of a few convs of the FP NPR model on validation images. Code shares: fraction of values "
                  "falling in each code of a 2-bit grid with equal intervals over [min, P99.9] (N2UQ's init); H = "
                  "entropy of that code distribution in bits (2 = every code equally used).", "",
                  "| layer | max | share = 0 | share < 0.1·max | off | raw code shares (%) | H raw | log code shares (%) "
                  "| H log |",
                  "|---|---:|---:|---:|---:|---|---:|---|---:|"]
        for n, v in act.items():
            lines.append(f"| {n} | {v['max']:.2f} | {100 * v['frac_zero']:.1f} % | {100 * v['frac_below_0.1max']:.1f} % | "
                         f"{v['offset']:.3f} ({v['offset_from']}) | "
                         + "/".join(f"{100 * s:.0f}" for s in v["raw"]["code_shares"]) + f" | {v['raw']['entropy_bits']:.2f} | "
                         + "/".join(f"{100 * s:.0f}" for s in v["log"]["code_shares"]) + f" | {v['log']['entropy_bits']:.2f} |")
        lines.append("")
    if result.get("cqb_study"):
        lines += ["## CQB α initialisation (W2A2, NPR + CQB + SLR)", "", _table(rows, CQB_STUDY, sets, seen), "",
                  "| Row | learned α mean (min–max) |", "|---|---|"]
        for k in CQB_STUDY:
            if k in rows and rows[k].get("cqb_alpha"):
                a = rows[k]["cqb_alpha"]
                lines.append(f"| {rows[k]['label']} | {a['mean']:.3f} ({a['min']:.3f}–{a['max']:.3f}) |")
        lines.append("")
    if result.get("deployable_w2a2"):
        lines += ["## Deployable W2A2 vs QMDD W2A2 (accuracy; speed in docs/results/speed.md)", "",
                  _table(rows, DEPLOYABLE, sets, seen), "",
                  "The deployable row is uniform LSQ on the NPR input with no CQB: its integer graph is the W4A4 graph's "
                  "(a QLinearConv chain, no float work beside the convs), QMDD's keeps a float shortcut and SLR "
                  "threshold comparisons beside every conv — see docs/deploy.md, \"Speed\".", ""]
    lines += ["## Per-row wall time", "",
              "| Row | train (s) | s/epoch | eval (s) | best epoch | guard: clipped / non-finite grads | cached |",
              "|---|---:|---:|---:|---:|---|---|"]
    for k in result["row_order"]:
        r = rows[k]
        eps = r.get("epoch_seconds") or []
        g = r.get("grad_guard")
        guard = f"{g['clipped']} / {g['nonfinite']} of {g['grads_seen']}" if g else "–"
        lines.append(f"| {r['label']} | {r['train_wall_seconds']:.0f} | {np.mean(eps) if eps else 0:.0f} | "
                     f"{r['eval_seconds']:.0f} | {r.get('best_epoch') or '–'} | {guard} | "
                     f"{'yes' if r.get('cached') else 'no'} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- driver


def _resolve_fp(cfg: StudyConfig, key: str, given: str | Path | None) -> tuple[Path, str] | None:
    """A given FP model (--fp-npr/--fp-rgb): validated; returns (path, signature)."""
    if given is None:
        return None
    from fakelite import artifact

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
    from fakelite import artifact
    from fakelite.data.dataset import split_items
    from fakelite.data.folders import discover_sets
    from fakelite.eval.robustness import subsample

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
    crop = _data_crop(data, cfg.size)
    keys = row_keys(cfg)
    cfg.rows = keys
    given = {k: _resolve_fp(cfg, k, g) for k, g in (("fp_npr", cfg.fp_npr), ("fp_rgb", cfg.fp_rgb))}
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
                 f"val acc {_p(r['val'].get('acc'))}; test mean acc {_p(r['mean']['acc'])} AP {_p(r['mean']['ap'])}"
                 + (f"; seen AP {_p(r['test'][seen]['ap'])}" if seen else ""))

    # Fig. 7: activations of the FP NPR model on validation images (SLR offsets from ours W2A2)
    activations: dict = {}
    samples: dict = {}
    try:
        from fakelite.data.dataset import calibration_batches

        fpm = artifact.load(fp_paths["fp_npr"])
        from dataclasses import replace as _replace

        fpm.preprocess = _replace(fpm.preprocess, crop=crop)
        ours = artifact.load(work / "ours_w2a2" / "model.fakelite") if (work / "ours_w2a2" / "model.fakelite").exists() else None
        b = calibration_batches(data, fpm.preprocess, n=cfg.hist_images, batch_size=cfg.hist_images, seed=cfg.seed,
                                split="val")
        if b:
            activations, samples = activation_study(fpm, ours, torch.cat([x for x, _ in b]))
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
    (out / "qmdd-ablation.md").write_text(to_markdown(result))
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
    from dataclasses import replace

    from fakelite import artifact

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
