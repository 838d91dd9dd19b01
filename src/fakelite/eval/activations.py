"""Post-ReLU activation statistics (QMDD Fig. 7): how many codes of a low-bit grid the activations of a model
really use, raw and after the shifted log ln(x + off) of SLR, and the histogram chart. Used by the QMDD study
(fakelite/studies/qmdd_ablation.py); works on any model with the named layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# post-ReLU inputs of these convs of npr_resnet23 are histogrammed (Fig. 7)
HIST_LAYERS = ["layer1.0.conv2", "layer1.2.conv3", "layer2.0.conv2", "layer2.3.conv3"]


def slr_offsets(model: nn.Module) -> dict[str, float]:
    """The trained SLR offset of every layer whose input quantizer has one (name → offset)."""
    out = {}
    for name, m in model.named_modules():
        iq = getattr(m, "input_quantizer", None)
        if iq is not None and hasattr(iq, "offset") and callable(iq.offset) and hasattr(iq, "tau"):
            out[name] = float(iq.offset().detach())
    return out


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
    offs = slr_offsets(ours) if ours is not None else {}
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
