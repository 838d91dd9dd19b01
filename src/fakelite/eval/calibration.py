"""A threshold with a meaning, and calibrated scores (label 1 = fake; scores are P(fake) in [0, 1]).

- `threshold_at_fpr`: the decision threshold that flags at most a fraction F of held-out *real* images
  (Neyman–Pearson style operating point; the field reports TPR at a fixed FPR, e.g. TPR@5 %FPR).
- `tpr_at_fpr`: TPR at FPR ≤ F read off scikit-learn's ROC curve (the best ROC point within the budget).
- `rates_at_threshold`: FPR and TPR of the rule "fake when score ≥ threshold".
- `fit_temperature`: temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017, §4.2):
  one scalar T > 0 minimising the binary NLL of sigmoid(logit / T); ranking (AUC, AP) is unchanged.
- `expected_calibration_error`: ECE with 15 equal-width bins of P(fake) (Naeini et al., AAAI 2015; Guo et al. Eq. 3
  with the reliability of the positive-class probability, as sklearn.calibration.calibration_curve bins it).
All functions return None where the quantity is undefined (no real image, one class only...).
"""

from __future__ import annotations

import math

import numpy as np

ECE_BINS = 15
DEFAULT_TARGET_FPR = 0.05
# the threshold sits this far above the highest unflagged real score when no higher real score exists
THRESHOLD_MARGIN = 1e-6


def threshold_at_fpr(real_scores, target_fpr: float = DEFAULT_TARGET_FPR) -> tuple[float, float]:
    """(threshold, achieved FPR) so that at most ⌊F·n⌋ of the n real scores are ≥ threshold.

    With the real scores sorted from high to low, s₍₀₎ ≥ s₍₁₎ ≥ …, and k = ⌊F·n⌋, the k-th (0-based) score v = s₍ₖ₎
    must stay unflagged: the threshold is the midpoint between v and the next higher distinct real score (stable
    under the ~1e-6 differences between backends), or v + 1e-6 (capped at 1) when no real score is higher. Ties
    at v all stay unflagged, so the achieved FPR can be below F. k ≥ n (F = 1) gives threshold 0 (all flagged).
    The achieved FPR exceeds F only when v = 1.0 (saturated scores; nothing can separate them).

    Raises ValueError for F outside [0, 1] or no finite score.
    """
    if not 0.0 <= float(target_fpr) <= 1.0:
        raise ValueError(f"target FPR must be in [0, 1], not {target_fpr}")
    s = np.asarray(real_scores, dtype=np.float64).reshape(-1)
    s = s[np.isfinite(s)]
    n = s.size
    if n == 0:
        raise ValueError("no real-image scores to choose a threshold from")
    k = int(math.floor(float(target_fpr) * n + 1e-9))
    if k >= n:
        return 0.0, 1.0
    desc = np.sort(s)[::-1]
    v = float(desc[k])
    above = desc[desc > v]
    t = float((v + above.min()) / 2) if above.size else min(1.0, v + THRESHOLD_MARGIN)
    return t, float((s >= t).mean())


def tpr_at_fpr(y_true, scores, target_fpr: float = DEFAULT_TARGET_FPR) -> float | None:
    """Largest TPR among the ROC points (sklearn `roc_curve`) with FPR ≤ target (None without both classes)."""
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(np.unique(y)) < 2:
        return None
    from sklearn.metrics import roc_curve  # heavy optional module: not loaded by `import fakelite`

    fpr, tpr, _ = roc_curve(y, s)
    ok = fpr <= float(target_fpr) + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def rates_at_threshold(y_true, scores, threshold: float) -> tuple[float | None, float | None]:
    """(FPR, TPR) of "fake when score ≥ threshold"; each None when its class is absent."""
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    flag = np.asarray(scores, dtype=np.float64).reshape(-1) >= float(threshold)
    fpr = float(flag[y == 0].mean()) if (y == 0).any() else None
    tpr = float(flag[y == 1].mean()) if (y == 1).any() else None
    return fpr, tpr


def expected_calibration_error(y_true, probs, n_bins: int = ECE_BINS) -> float | None:
    """ECE = Σ_b (n_b / N) · |mean(y in b) − mean(p in b)| over `n_bins` equal-width bins of p = P(fake).

    Bin b holds b/n_bins ≤ p < (b+1)/n_bins (the last bin also holds p = 1). Empty bins contribute nothing.
    None for no scores."""
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return None
    b = np.clip(np.floor(p * n_bins).astype(np.int64), 0, n_bins - 1)
    ece = 0.0
    for i in range(n_bins):
        m = b == i
        if m.any():
            ece += m.sum() / p.size * abs(y[m].mean() - p[m].mean())
    return float(ece)


def binary_nll(logits, y_true, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of sigmoid(logit / T) against the labels (nats), computed stably."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1) / float(temperature)
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits, y_true, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """T > 0 minimising `binary_nll(logits, y, T)` (Guo et al. 2017), searched on log T within `bounds` with
    scipy's bounded Brent method. Raises ValueError without both classes (T is then not identifiable)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    keep = np.isfinite(z)
    z, y = z[keep], y[keep]
    if len(np.unique(y)) < 2:
        raise ValueError("temperature scaling needs real and fake images (0_real and 1_fake)")
    res = minimize_scalar(lambda lt: binary_nll(z, y, math.exp(lt)), bounds=tuple(map(math.log, bounds)),
                          method="bounded", options={"xatol": 1e-6})
    return float(math.exp(res.x))
