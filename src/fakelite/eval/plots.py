"""Pictures people would rather look at than read: training curves, ROC/PR curves, confusion matrices."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_curve,
)


def training_curves(history: list[dict], out_png: Path) -> Path:
    """Loss and accuracy per epoch (train and validation), with the selected (best) epoch marked.

    Train accuracy is the running accuracy over the epoch's augmented batches in train mode; validation metrics
    are computed after the epoch in eval mode (Acc at threshold 0.5, so a shifted calibration shows as a flat
    val Acc while val AUC/AP rise).
    """
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    a1.plot(ep, [h["train_loss"] for h in history], "o-", label="train loss")
    a1.set_xlabel("epoch"), a1.set_ylabel("training loss"), a1.grid(alpha=0.3), a1.legend(loc="upper right")
    if len({h.get("lr") for h in history}) > 1:  # a schedule worth showing
        a1b = a1.twinx()
        a1b.plot(ep, [h.get("lr", np.nan) for h in history], ":", color="grey", lw=1)
        a1b.set_ylabel("learning rate", color="grey"), a1b.tick_params(axis="y", colors="grey", labelsize=7)
        a1b.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    a2.plot(ep, [h["train_acc"] for h in history], "o-", label="train acc (running)")
    a2.plot(ep, [h["val"]["acc"] for h in history], "s-", label="val acc @0.5")
    a2.plot(ep, [h["val"].get("ap") or np.nan for h in history], "d--", label="val AP")
    a2.plot(ep, [h["val"]["auc"] or np.nan for h in history], "^--", label="val AUC")
    keys = [sum(v for v in (h["val"].get("auc"), h["val"].get("ap"), h["val"].get("acc")) if v is not None)
            for h in history]
    if keys:
        best = ep[int(np.argmax(keys))]
        a2.axvline(best, color="k", lw=0.8, ls=":", label=f"kept: epoch {best}")
    a2.set_xlabel("epoch"), a2.set_ylim(0, 1.02), a2.grid(alpha=0.3), a2.legend(loc="lower right", fontsize=7)
    for a in (a1, a2):
        epoch_axis(a, ep)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def epoch_axis(ax, epochs: list[int]) -> None:
    """Whole-epoch ticks: every epoch when there are few (one epoch gets the single tick "1", not 0.96 … 1.04),
    otherwise integer ticks chosen by matplotlib."""
    from matplotlib.ticker import MaxNLocator

    if epochs and len(epochs) <= 12:
        ax.set_xticks(list(epochs))
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "set"


def _confusion_panel(ax, y: np.ndarray, s: np.ndarray, threshold: float, title: str) -> None:
    cm = confusion_matrix(y.astype(int), (s >= threshold).astype(int), labels=[0, 1])
    rows = cm.sum(axis=1, keepdims=True)
    frac = cm / np.maximum(rows, 1)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{v}\n{100 * frac[i, j]:.0f} %", ha="center", va="center",
                color="white" if frac[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks([0, 1], ["real", "fake"]), ax.set_yticks([0, 1], ["real", "fake"])
    acc = np.trace(cm) / max(1, cm.sum())
    ax.set(xlabel="predicted", ylabel="true", title=f"{title}\nthreshold {threshold:.3f}: Acc {100 * acc:.1f} %")
    ax.title.set_fontsize(9)


def eval_plots(scores: dict[str, tuple[np.ndarray, np.ndarray]], threshold: float, out_dir: Path,
               title: str | None = None) -> list[Path]:
    """ROC + PR curves of every set in one figure, and a confusion matrix per set (counts and row percentages).

    `title` (e.g. "model.fakelite (trained on DATA) on DATA/test") heads every figure and is stored as the PNG's
    Title text, so a figure on its own still says which model and which data it shows.

    The eval table reports Acc at 0.5 (the field's convention), so each confusion figure shows 0.5 and, when the
    model carries a different calibrated threshold, that threshold beside it — the two agree with the table's
    `Acc` and `Acc@threshold` columns. PR curves are drawn as steps (as average precision integrates them), with the
    chance level (the share of fakes) dashed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4.2))
    for i, (name, (y, s)) in enumerate(scores.items()):
        if len(np.unique(y)) < 2:
            continue
        color = f"C{i % 10}"
        fpr, tpr, _ = roc_curve(y, s)
        p, r, _ = precision_recall_curve(y, s)
        auc = np.trapezoid(tpr, fpr)
        ap = average_precision_score(y, s)
        ax_roc.plot(fpr, tpr, color=color, label=f"{name} (AUC {auc:.3f})")
        ax_pr.plot(r, p, color=color, drawstyle="steps-post", label=f"{name} (AP {ap:.3f})")
        ax_pr.axhline(float(np.mean(y)), color=color, ls="--", lw=0.7, alpha=0.6)
    ax_roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax_roc.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate (fake caught)",
               title="ROC", xlim=(-0.01, 1.01), ylim=(0, 1.02))
    ax_pr.set(xlabel="recall (fake)", ylabel="precision (fake)", title="Precision–recall (dashed: chance)",
              xlim=(-0.01, 1.01), ylim=(0, 1.02))
    for a in (ax_roc, ax_pr):
        a.grid(alpha=0.3)
        a.legend(fontsize=7, loc="lower right" if a is ax_roc else "lower left")
    meta = {"Title": title} if title else None
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "roc_pr.png", dpi=110, metadata=meta)
    plt.close(fig)
    written.append(out_dir / "roc_pr.png")
    thresholds = [0.5] + ([threshold] if abs(threshold - 0.5) > 1e-9 else [])
    for name, (y, s) in scores.items():
        fig, axes = plt.subplots(1, len(thresholds), figsize=(3.3 * len(thresholds), 3.3), squeeze=False)
        for ax, t in zip(axes[0], thresholds, strict=True):
            _confusion_panel(ax, y, s, t, f"{name}" + (" (model threshold)" if t != 0.5 else " (at 0.5)"))
        if title:
            fig.suptitle(title, fontsize=8)
        fig.tight_layout()
        p = out_dir / f"confusion_{_safe(name)}.png"
        fig.savefig(p, dpi=110, metadata=meta)
        plt.close(fig)
        written.append(p)
    return written
