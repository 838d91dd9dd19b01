"""Pictures people would rather look at than read: training curves, ROC/PR curves, confusion matrices."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve  # noqa: E402


def training_curves(history: list[dict], out_png: Path) -> Path:
    """Loss and accuracy per epoch (train and validation)."""
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(ep, [h["train_loss"] for h in history], "o-", label="train loss")
    a1.set_xlabel("epoch"), a1.set_ylabel("BCE loss"), a1.grid(alpha=0.3), a1.legend()
    a2.plot(ep, [h["train_acc"] for h in history], "o-", label="train acc")
    a2.plot(ep, [h["val"]["acc"] for h in history], "s-", label="val acc")
    a2.plot(ep, [h["val"]["auc"] or np.nan for h in history], "^--", label="val AUC")
    a2.set_xlabel("epoch"), a2.set_ylim(0, 1.02), a2.grid(alpha=0.3), a2.legend(loc="lower right")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "set"


def eval_plots(scores: dict[str, tuple[np.ndarray, np.ndarray]], threshold: float, out_dir: Path) -> list[Path]:
    """ROC + PR curves of every set in one figure each, and a confusion matrix per set at `threshold`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, (y, s) in scores.items():
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        p, r, _ = precision_recall_curve(y, s)
        auc = np.trapezoid(tpr, fpr)
        ax_roc.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
        ax_pr.plot(r, p, label=name)
    ax_roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax_pr.set(xlabel="recall (fake)", ylabel="precision (fake)", title="Precision–recall", ylim=(0, 1.02))
    for a in (ax_roc, ax_pr):
        a.grid(alpha=0.3)
        a.legend(fontsize=7, loc="lower right" if a is ax_roc else "lower left")
    fig.tight_layout()
    fig.savefig(out_dir / "roc_pr.png", dpi=110)
    plt.close(fig)
    written.append(out_dir / "roc_pr.png")
    for name, (y, s) in scores.items():
        cm = confusion_matrix(y.astype(int), (s >= threshold).astype(int), labels=[0, 1])
        fig, ax = plt.subplots(figsize=(3.4, 3.1))
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks([0, 1], ["real", "fake"]), ax.set_yticks([0, 1], ["real", "fake"])
        ax.set(xlabel="predicted", ylabel="true", title=f"{name} @ {threshold:.3f}")
        fig.tight_layout()
        p = out_dir / f"confusion_{_safe(name)}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written
