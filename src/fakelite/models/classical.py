"""Classical detectors (the seed paper's Table III baselines): SVM, decision tree and random forest on handcrafted
features. The study that trains and scores them: fakelite/studies/baselines.py.

Features (one vector per image, computed on the centre crop of at most `crop`×`crop` pixels, even sides):
- NPR residual statistics (the up-sampling trace): NPR = x − x[2⌊i/2⌋, 2⌊j/2⌋] per RGB channel; mean |NPR| at the
  three non-anchor positions of the 2×2 cell (the anchor is 0 by definition), plus variance and excess kurtosis
  of NPR over the non-anchor positions → 3·3 + 3 + 3 = 15 values;
- azimuthally averaged FFT power spectrum of the grey image: `fft_bins` bins of log power over radius 0..√2·N/2
  (spectral peaks of up-samplers live at high radii) → 32 values;
- colour statistics: per-channel mean and std of RGB, mean and std of HSV saturation → 8 values.
Classifiers (scikit-learn): RBF SVM on standardised features (score σ(decision function)), decision tree (depth ≤ 8),
random forest (200 trees).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fakelite.data.io import BadInput, load_rgb
from fakelite.data.transforms import npr_image

FEATURE_GROUPS = {"npr": 15, "fft": 32, "color": 8}


def _center_crop_even(img: np.ndarray, crop: int) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = min(crop, h), min(crop, w)
    ch, cw = ch - ch % 2, cw - cw % 2
    y, x = (h - ch) // 2, (w - cw) // 2
    return img[y : y + ch, x : x + cw]


def npr_features(img: np.ndarray) -> np.ndarray:
    """15 NPR statistics of an even-sized HxWx3 uint8 image (see module docstring)."""
    r = npr_image(img) / 255.0
    feats = []
    for dy, dx in ((0, 1), (1, 0), (1, 1)):
        feats.extend(np.abs(r[dy::2, dx::2]).mean(axis=(0, 1)))
    mask = np.ones(r.shape[:2], dtype=bool)
    mask[::2, ::2] = False
    vals = r[mask]  # (n, 3)
    var = vals.var(axis=0)
    m4 = ((vals - vals.mean(axis=0)) ** 4).mean(axis=0)
    kurt = m4 / np.maximum(var**2, 1e-12) - 3.0
    feats.extend(var)
    feats.extend(np.clip(kurt, -10, 1e3))
    return np.asarray(feats, dtype=np.float64)


def fft_features(img: np.ndarray, bins: int = 32) -> np.ndarray:
    """Azimuthally averaged log power spectrum of the grey image (`bins` radial bins)."""
    g = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    g = g - g.mean()
    p = np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2
    h, w = p.shape
    yy, xx = np.indices(p.shape)
    r = np.hypot((yy - h // 2) / (h / 2), (xx - w // 2) / (w / 2)) / np.sqrt(2)  # 0..1
    idx = np.minimum((r * bins).astype(int), bins - 1)
    sums = np.bincount(idx.ravel(), weights=p.ravel(), minlength=bins)
    counts = np.bincount(idx.ravel(), minlength=bins)
    return np.log1p(sums / np.maximum(counts, 1))


def color_features(img: np.ndarray) -> np.ndarray:
    """Per-channel RGB mean/std and HSV saturation mean/std (8 values, in [0, 1] units)."""
    x = img.astype(np.float64) / 255.0
    mx, mn = x.max(axis=2), x.min(axis=2)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-12), 0.0)
    return np.concatenate([x.mean(axis=(0, 1)), x.std(axis=(0, 1)), [sat.mean(), sat.std()]])


def image_features(img: np.ndarray, crop: int = 256, fft_bins: int = 32) -> np.ndarray:
    """The full feature vector of one HxWx3 uint8 image."""
    img = _center_crop_even(img, crop)
    return np.concatenate([npr_features(img), fft_features(img, fft_bins), color_features(img)])


def feature_names(fft_bins: int = 32) -> list[str]:
    names = [f"npr_abs_{pos}_{c}" for pos in ("01", "10", "11") for c in "rgb"]
    names += [f"npr_var_{c}" for c in "rgb"] + [f"npr_kurt_{c}" for c in "rgb"]
    names += [f"fft_{i}" for i in range(fft_bins)]
    names += [f"mean_{c}" for c in "rgb"] + [f"std_{c}" for c in "rgb"] + ["sat_mean", "sat_std"]
    return names


def extract(items: list[tuple[Path, int]], crop: int = 256) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Features and labels of labelled image files; unreadable files are skipped and returned with the reason."""
    xs, ys, skipped = [], [], {}
    for p, y in items:
        try:
            img = load_rgb(p)
        except BadInput as e:
            skipped[str(p)] = e.reason
            continue
        if min(img.shape[:2]) < 4:
            skipped[str(p)] = "image smaller than 4×4"
            continue
        xs.append(image_features(img, crop))
        ys.append(y)
    if not xs:
        return np.zeros((0, sum(FEATURE_GROUPS.values()))), np.zeros(0), skipped
    return np.stack(xs), np.asarray(ys, dtype=np.int64), skipped


def make_classifiers(seed: int = 0) -> dict[str, Any]:
    """The three classical baselines (scikit-learn estimators)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    return {
        "SVM (RBF)": make_pipeline(StandardScaler(), SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)),
        "Decision tree": DecisionTreeClassifier(max_depth=8, random_state=seed),
        "Random forest": RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1),
    }


def classifier_scores(clf: Any, X: np.ndarray) -> np.ndarray:
    """Fake-probability-like scores in [0, 1]: predict_proba where the model has it, else σ(decision_function)
    (for the SVM: ≥ 0.5 exactly where it predicts fake; Platt scaling via probability=True is deprecated)."""
    if hasattr(clf, "predict_proba") and not hasattr(clf, "decision_function"):
        return clf.predict_proba(X)[:, 1]
    return 1.0 / (1.0 + np.exp(-clf.decision_function(X)))
