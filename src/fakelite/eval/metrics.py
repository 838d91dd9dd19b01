"""Detection metrics on scores in [0, 1] (label 1 = fake), via scikit-learn.

acc at a threshold (0.5 by default), real_acc / fake_acc (accuracy on each class), AP
(average_precision_score), ROC-AUC and EER. All fractions in [0, 1]; a metric that is undefined for the data
(e.g. AUC with only one class present) is None.
"""

from __future__ import annotations

import math

import numpy as np

METRIC_KEYS = ("acc", "real_acc", "fake_acc", "ap", "auc", "eer", "n", "skipped")


def equal_error_rate(y: np.ndarray, s: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2:
        return None
    from sklearn.metrics import roc_curve  # heavy optional module: not loaded by `import fakelite`

    fpr, tpr, _ = roc_curve(y, s)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    # interpolate between the two neighbouring ROC points for a stable estimate
    if i + 1 < len(fpr):
        d0, d1 = fpr[i] - fnr[i], fpr[i + 1] - fnr[i + 1]
        if d0 != d1 and np.sign(d0) != np.sign(d1):
            t = d0 / (d0 - d1)
            return float(fpr[i] + t * (fpr[i + 1] - fpr[i]))
    return float((fpr[i] + fnr[i]) / 2)


def binary_metrics(y_true, scores, threshold: float = 0.5, skipped: int = 0) -> dict:
    """All eval metrics for one set (see module docstring)."""
    y = np.asarray(y_true, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    n = len(y)
    out: dict = {k: None for k in METRIC_KEYS}
    out["n"], out["skipped"] = int(n), int(skipped)
    if n == 0:
        return out
    pred = (s >= threshold).astype(np.int64)
    out["acc"] = float((pred == y).mean())
    if (y == 0).any():
        out["real_acc"] = float((pred[y == 0] == 0).mean())
    if (y == 1).any():
        out["fake_acc"] = float((pred[y == 1] == 1).mean())
    if len(np.unique(y)) == 2:
        from sklearn.metrics import average_precision_score, roc_auc_score

        out["ap"] = float(average_precision_score(y, s))
        out["auc"] = float(roc_auc_score(y, s))
        out["eer"] = equal_error_rate(y, s)
    return out


def mean_metrics(rows: list[dict]) -> dict:
    """Unweighted mean over sets (as QMDD's Avg. column); n and skipped are summed."""
    out: dict = {}
    for k in METRIC_KEYS:
        if k in ("n", "skipped"):
            out[k] = int(sum(r.get(k) or 0 for r in rows))
            continue
        vals = [r[k] for r in rows if r.get(k) is not None and not math.isnan(r[k])]
        out[k] = float(np.mean(vals)) if vals else None
    return out


def best_threshold(y_true, scores) -> float:
    """Threshold that maximises balanced accuracy (Youden's J) — chosen on validation data, shipped with the model.

    NPR users see high AP but shifted Acc after re-training (a calibration problem): this fixes the cut.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return 0.5
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, s)
    j = tpr - fpr
    i = int(np.argmax(j))
    t = float(thr[i])
    if not np.isfinite(t):
        t = 1.0
    # midpoint to the next-lower score keeps the decision stable under tiny numeric differences
    lower = s[s < t]
    if lower.size:
        t = float((t + lower.max()) / 2)
    return min(max(t, 1e-6), 1 - 1e-6)
